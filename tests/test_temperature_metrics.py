"""Temperature schedules, set_temperature, accuracy, IES and RCS."""
import math

import pytest
import torch

from fmd.metrics import (accuracy, inverse_efficiency_score, rate_correct_score, speed_accuracy,
                         topk_correct)
from fmd.models import resnet18
from fmd.conv import ODConv2d, default_schedules
from fmd.temperature import (TEMPERATURE_CLOCKS, Constant, LinearAnneal, StepDecay, apply_schedules,
                             set_temperature)


def test_linear_anneal_30_to_1_over_10_epochs_per_iteration():
    s = LinearAnneal(30, 1, 10)
    assert s(0) == 30 and s(10) == 1 and s(25) == 1
    assert s(5) == pytest.approx(15.5)
    assert s(0.1) == pytest.approx(30 - 2.9 * 0.1)


def test_step_decay_reaches_one_exactly():
    s = StepDecay(34, 3)
    assert [s(e) for e in (0, 0.99, 1, 2, 10, 11, 50)] == [34, 34, 31, 28, 4, 1, 1]
    with pytest.raises(ValueError, match="≡ 1"):
        StepDecay(30, 3)


def test_constant_and_invalid_temperatures():
    assert Constant(34)(99) == 34
    with pytest.raises(ValueError, match="positive"):
        Constant(0)
    with pytest.raises(ValueError, match="epochs must be positive"):
        LinearAnneal(30, 1, 0)


def test_presets_differ_only_in_the_kernel_temperature():
    official = default_schedules("fmdconv", preset="official")
    paper = default_schedules("fmdconv", preset="paper")
    assert official["kernel"](50) == 34 and paper["kernel"](50) == 1
    assert official["gate"](5) == paper["gate"](5) == pytest.approx(15.5)
    assert default_schedules("static") == {} and default_schedules("condconv") == {}
    short = default_schedules("fmdconv", preset="paper", anneal_epochs=1)
    assert short["gate"](1.0) == 1  # the clock runs 10x faster: 34 → 1 takes 11 steps of 0.1 epoch
    assert short["kernel"](1.0) == 4 and short["kernel"](1.1) == 1
    with pytest.raises(ValueError, match="unknown conv"):
        default_schedules("deform")
    with pytest.raises(ValueError, match="kernel_temperature must be ≡ 1 \\(mod 3\\), got 30"):
        default_schedules("fmdconv", preset="paper", kernel_temperature=30)


def test_set_temperature_reaches_the_right_attentions():
    model = resnet18(conv="fmdconv", width=4, stem="cifar")
    n = set_temperature(model, kernel=5.0)
    assert n == 16  # one kernel softmax in each of the 16 block convolutions
    values = apply_schedules(model, default_schedules("fmdconv"), epoch=5)
    assert values == {"kernel": 34.0, "gate": pytest.approx(15.5)}
    conv = model.layer1[0].conv1
    assert conv.kernel_attention.head.temperature.item() == 34.0
    assert conv.input_head.temperature.item() == pytest.approx(15.5)
    odconv = resnet18(conv="odconv", width=4, stem="cifar")
    assert set_temperature(odconv, 2.0) == 16 * 4  # input, output, spatial and kernel heads
    with pytest.raises(ValueError, match="roles must be among"):
        apply_schedules(model, {"spatial": Constant(1)}, 0)


def test_topk_accuracy():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    targets = torch.tensor([1, 2, 0])
    assert accuracy(logits, targets, (1, 2)) == pytest.approx((100 / 3, 200 / 3))
    top1, = topk_correct(logits, targets, (1,))
    assert top1.tolist() == [True, False, False]


def test_ies_and_rcs_classic_definitions():
    correct = [True, True, False, True]
    costs = [2.0, 4.0, 10.0, 3.0]
    assert inverse_efficiency_score(correct, costs) == pytest.approx(3.0 / 0.75)
    assert rate_correct_score(correct, costs) == pytest.approx(3 / 19)
    # With one fixed cost per image the two scores are reciprocal.
    assert inverse_efficiency_score(correct, 2.0) * rate_correct_score(correct, 2.0) == pytest.approx(1)
    assert speed_accuracy(80.0, 2.0) == {"ies": pytest.approx(2.5), "rcs": pytest.approx(0.4)}
    assert math.isinf(inverse_efficiency_score([False, False], 1.0))


def test_bad_metric_input_is_named():
    with pytest.raises(ValueError, match="one per image"):
        inverse_efficiency_score([True, False], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="non-negative"):
        rate_correct_score([True], [-1.0])
    with pytest.raises(ValueError, match="top1_percent"):
        speed_accuracy(120, 1.0)


def official_get_temperature(iteration, epoch, iter_per_epoch, temp_epoch=10, temp_init=30.0):
    """``get_temperature`` of OSVAI/ODConv utils/misc.py (copied by tianyu00824/FMDConv), verbatim."""
    total_temp_iter = iter_per_epoch * temp_epoch
    current_iter = iteration + epoch * iter_per_epoch
    return 1.0 + max(0, (temp_init - 1.0) * ((total_temp_iter - current_iter) / total_temp_iter))


@pytest.mark.parametrize("clock", TEMPERATURE_CLOCKS)
def test_each_step_anneals_as_the_official_training_loop_or_one_iteration_behind(clock):
    """Under the "official" clock step i sees what the official main.py sets before it,
    get_temperature(i + 1) (and 1 after temp_epoch); under "fmd", as the records trained before the
    clock existed, get_temperature(i): one iteration behind (README, "Differences from the official
    code")."""
    from fmd.data import BatchLoader, make_synthetic
    from fmd.train import train_epoch

    train_set, _ = make_synthetic(32, 8, channels=3, size=8)
    loader = BatchLoader(train_set, 8, shuffle=True, drop_last=True)
    model = torch.nn.Sequential(ODConv2d(3, 8, 3, 1, 1), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    seen = []
    head = model[0].kernel_head
    head.register_forward_pre_hook(lambda m, _: seen.append(m.temperature.item()))
    for epoch in range(3):
        train_epoch(model, loader, optimizer, scheduler, default_schedules("odconv", anneal_epochs=2),
                    epoch, temperature_clock=clock)
    iters = len(loader)
    ours = [official_get_temperature(i, e, iters, 2) for e in range(3) for i in range(iters)]
    theirs = [official_get_temperature(i + 1, e, iters, 2) if e < 2 else 1.0
              for e in range(3) for i in range(iters)]
    assert theirs[0] == pytest.approx(30 - 29 / (2 * iters))
    if clock == "official":
        assert seen == pytest.approx(theirs, rel=1e-6)
    else:
        assert seen == pytest.approx(ours, rel=1e-6) and seen[0] == 30.0
        assert seen[1:] == pytest.approx(theirs[:-1], rel=1e-6)  # one iteration behind, throughout
