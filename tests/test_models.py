"""Backbones: exact parameter counts, MACs by two counters, batch-1 training, bad names."""
import pytest
import torch

from fmd.complexity import count_macs, count_params, dynamic_layer_macs, flop_counter_macs
from fmd.conv import DynamicConv2dBase
from fmd.models import resnet18, resnet34, resnet50


def millions(model):
    return round(count_params(model) / 1e6, 2)


def test_resnet18_parameter_counts_match_the_published_ones():
    assert millions(resnet18()) == 11.69
    assert millions(resnet18(conv="odconv", kernel_num=1)) == 11.94
    assert millions(resnet18(conv="odconv", kernel_num=4)) == 44.90
    assert millions(resnet18(conv="fmdconv", kernel_num=4, preset="official")) == 45.20


def test_resnet_initialisation_official_by_default_torch_on_request():
    torch.manual_seed(0)
    model = resnet18(conv="fmdconv", width=32, num_classes=10)
    stem = model.stem[0].weight  # kaiming-normal on fan-out (32·7·7), as the official ResNets
    assert stem.std().item() == pytest.approx((2 / (32 * 49)) ** 0.5, rel=0.1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in bns)  # no zero-init γ
    # Official: classifier N(0, 0.01) with zero bias; each FMDConv kernel kaiming-normal on fan-out,
    # zero biases, the kernel branch's FCs kaiming-normal on fan-out with zero bias.
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert model.fc.bias.abs().max() == 0
    layer = model.layer4[0].conv2  # 256 → 256, 3×3
    for k in range(layer.kernel_num):
        assert layer.weight[k].std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.05)
    assert layer.bias.abs().max() == 0
    head = layer.kernel_attention.head.fc  # hidden → K
    assert head.weight.std().item() == pytest.approx((2 / layer.kernel_num) ** 0.5, rel=0.3)
    assert head.bias.abs().max() == 0
    dyconv = resnet18(conv="dyconv", width=32).layer4[0].conv2  # kaiming-uniform, a = 0, fan-in
    assert dyconv.weight[0].abs().max() <= (6 / (256 * 9)) ** 0.5
    assert dyconv.weight[0].std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.05)
    # torch: the classifier and every kernel as nn.Linear's and nn.Conv2d's own (U(±1/√fan_in)).
    plain = resnet18(conv="fmdconv", width=32, num_classes=10, init="torch")
    bound = 256 ** -0.5
    assert plain.fc.weight.abs().max() <= bound
    assert plain.fc.weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.15)
    assert plain.layer4[0].conv2.bias.abs().max() > 0
    with pytest.raises(ValueError, match="init must be one of"):
        resnet18(init="xavier")


def test_resnet50_odconv_parameter_counts_match_the_odconv_readme():
    assert millions(resnet50()) == 25.56
    assert millions(resnet50(conv="odconv", kernel_num=1)) == 28.64
    assert millions(resnet50(conv="odconv")) == 90.67


def test_static_resnet18_macs_at_224_by_both_counters():
    model = resnet18()
    assert count_macs(model) == flop_counter_macs(model)
    assert round(count_macs(model) / 1e9, 3) == 1.814


@pytest.mark.parametrize("conv", ["condconv", "dyconv", "odconv", "fmdconv"])
@pytest.mark.parametrize("stem", ["cifar", "imagenet", "small"])
def test_dynamic_macs_agree_with_torch_flop_counter(conv, stem):
    model = resnet18(conv=conv, stem=stem, width=8, num_classes=10)
    size = (1, 3, 64, 64) if stem == "imagenet" else (1, 3, 32, 32)
    ours = count_macs(model, size)
    assert ours == flop_counter_macs(model, size)
    assert ours > count_macs(resnet18(stem=stem, width=8, num_classes=10), size)


def test_dynamic_layer_macs_formula():
    model = resnet18(conv="fmdconv", stem="cifar", width=8, num_classes=10)
    layer = model.layer2[0].conv1  # 8 → 16 channels, stride 2, 32×32 → 16×16
    parts = dynamic_layer_macs(layer, (1, 8, 32, 32), (1, 16, 16, 16))
    assert parts["conv"] == 16 * 8 * 9 * 16 * 16
    assert parts["aggregation"] == 4 * 16 * 8 * 9 + 4 * 16
    trunk = 8 * 16 + 16 * 8 + 16 * 16  # fc, input head, output head (width max(8/16, 16) = 16)
    kernel_branch = 8 * 3 + 3 * 4  # int(8 * 0.25) + 1 = 3 hidden units, 4 kernels
    assert parts["attention"] == trunk + kernel_branch


@pytest.mark.parametrize("conv", ["static", "condconv", "dyconv", "odconv", "fmdconv"])
def test_every_backbone_trains_at_batch_size_one_with_channels_last(conv):
    model = resnet18(conv=conv, stem="cifar", width=4, num_classes=3).train()
    x = torch.randn(1, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


def test_only_block_convolutions_are_dynamic():
    model = resnet34(conv="dyconv", width=8)
    dynamic = [m for m in model.modules() if isinstance(m, DynamicConv2dBase)]
    assert len(dynamic) == 2 * (3 + 4 + 6 + 3)
    assert isinstance(model.stem[0], torch.nn.Conv2d)
    assert isinstance(model.layer2[0].downsample[0], torch.nn.Conv2d)
    bottleneck = resnet50(conv="fmdconv", width=8)
    assert sum(isinstance(m, DynamicConv2dBase) for m in bottleneck.modules()) == 3 * 16


def test_grey_input_and_width_and_classes():
    model = resnet18(conv="fmdconv", stem="cifar", width=8, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_bad_backbone_arguments_are_named():
    with pytest.raises(ValueError, match="unknown conv 'cond'"):
        resnet18(conv="cond")
    with pytest.raises(ValueError, match="depth must be one of"):
        from fmd.models import ResNet
        ResNet(depth=20)
    with pytest.raises(ValueError, match="stem must be one of"):
        resnet18(stem="tiny")
    with pytest.raises(ValueError, match="width must be a positive integer"):
        resnet18(width=0)
    with pytest.raises(ValueError, match=r"input_size must be \(1, C, H, W\)"):
        count_macs(resnet18(width=4), (2, 3, 32, 32))


def test_interleaved_times_rounds_rotation_and_threads_restored():
    from fmd.timing import interleaved_times

    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    before = torch.get_num_threads()
    times = interleaved_times(fns, rounds=3, repeats=2, warmup=1, threads=1, rotate=True)
    assert torch.get_num_threads() == before
    assert {n: [len(r) for r in t.rounds] for n, t in times.items()} == {n: [2, 2, 2] for n in "abc"}
    assert "".join(calls) == "abc" + "aabbcc" + "bbccaa" + "ccaabb"  # warm-up, then rotated rounds
    assert all(len(t.medians) == 3 and 0 <= t.low <= t.median <= t.high for t in times.values())
    with pytest.raises(ValueError, match="rounds >= 1"):
        interleaved_times(fns, rounds=0)


def test_torch_threads_sets_the_count_and_restores_it_after_an_error():
    from fmd.timing import torch_threads

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with pytest.raises(RuntimeError, match="inside"):
        with torch_threads(other) as inside:
            assert inside == torch.get_num_threads() == other
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(None) as inside:  # None leaves the count as it is
        assert inside == before


def test_round_times_report_the_median_of_round_medians_and_their_range():
    from fmd.timing import timed_rounds

    runs = {"a": iter([[1.0, 9.0, 2.0], [4.0, 5.0, 6.0], [0.5, 0.5, 8.0]]), "b": iter([[3.0]] * 3)}
    times = timed_rounds({n: (lambda count, n=n: next(runs[n])) for n in runs}, rounds=3, repeats=3)
    assert times["a"].medians == [2.0, 5.0, 0.5]
    assert (times["a"].median, times["a"].low, times["a"].high) == (2.0, 0.5, 5.0)
    assert len(times["a"].times) == 9 and times["b"].median == 3.0


def test_the_small_stem_halves_the_map_without_a_max_pool():
    # 3×3/2 and no max-pool: a 32×32 input reaches the first stage at 16×16 (ImageNet's: 8×8).
    features = {}
    for stem in ("small", "imagenet", "cifar"):
        model = resnet18(stem=stem, width=8, num_classes=10)
        model.layer1.register_forward_hook(lambda m, i, o, stem=stem: features.update({stem: o.shape}))
        model(torch.randn(2, 3, 32, 32))
    assert {k: v[-1] for k, v in features.items()} == {"small": 16, "imagenet": 8, "cifar": 32}
    with pytest.raises(ValueError, match="stem must be one of"):
        resnet18(stem="tiny")


def test_the_official_initialisation_reads_each_convs_kernel_draw_from_its_spec(monkeypatch):
    import dataclasses

    from fmd import conv

    monkeypatch.setitem(conv.CONVS, "odconv", dataclasses.replace(conv.CONVS["odconv"],
                                                                  kernel_init=torch.nn.init.ones_))
    model = resnet18(conv="odconv", width=4, num_classes=10)
    kernels = [m.weight for m in model.modules() if isinstance(m, DynamicConv2dBase)]
    assert kernels and all(bool((w == 1).all()) for w in kernels)
    assert conv.CONVS["condconv"].kernel_options(8) == {"num_experts": 8}
    assert conv.CONVS["static"].kernel_options(4) == {}
