"""Mixed precision and memory format: every engine strategy under autocast, the training options
--amp/--channels-last/--compile, and their place in the run record and key."""
import json
import math

import pytest
import torch

from fmd import conv as C
from fmd.engine import applicable_strategies
from fmd.models import ResNet
from fmd.precision import to_channels_last
from fmd.train import make_config, train

DYNAMIC = ("condconv", "dyconv", "odconv", "fmdconv")


def relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _strategy_cases():
    cases = []
    for conv in DYNAMIC:
        layer = C.make_conv(conv, 16, 16, 3, 1, 1)
        for strategy in applicable_strategies(layer.attend(torch.zeros(2, 16, 8, 8)), layer.geometry):
            cases.append(pytest.param(conv, strategy, id=f"{conv}-{strategy}"))
            if strategy == "grouped":  # also with the per-sample kernels rebuilt in backward
                cases.append(pytest.param(conv, "grouped-rebuilt", id=f"{conv}-grouped-rebuilt"))
    return cases


@pytest.mark.parametrize("conv,strategy", _strategy_cases())
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_every_strategy_runs_under_autocast_close_to_fp32(conv, strategy, amp, monkeypatch):
    if strategy == "grouped-rebuilt":
        monkeypatch.setattr("fmd.engine.RECOMPUTE_MIN_KERNEL_BYTES", 0)
    rebuilt, strategy = strategy == "grouped-rebuilt", strategy.replace("-rebuilt", "")
    torch.manual_seed(0)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    layer = C.make_conv(conv, 16, 16, 3, 1, 1).train()
    layer.strategy = strategy
    x = torch.randn(4, 16, 8, 8)
    # The rounding of the static convolution under the same autocast is the yardstick.
    static = torch.nn.Conv2d(16, 16, 3, 1, 1)
    with torch.no_grad():
        expected = static(x)
        with torch.autocast("cpu", dtype=dtype):
            yardstick = relative_error(static(x), expected)
    xr = x.clone().requires_grad_()
    reference = layer(xr)
    # A sum, not a mean: fp16 gradients of a mean this small would be subnormal (unscaled).
    reference.square().sum().backward()
    xa = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        out = layer(xa)
    # The autograd Functions of the engine's own compute in the bank's dtype under autocast
    # (fmd.engine._in_bank_dtype: autocast does not reach their out= products and explicit backward
    # calls): sample_im2col's, and grouped's only above RECOMPUTE_MIN_KERNEL_BYTES, far above this
    # layer's kernels; the others compute in autocast's.
    in_bank_dtype = strategy == "sample_im2col" or rebuilt
    assert out.dtype == (torch.float32 if in_bank_dtype else dtype) and layer.last_strategy == strategy
    out.float().square().sum().backward()
    # Within a few times the static convolution's own rounding (bf16 keeps 8 bits, fp16 11).
    assert relative_error(out, reference) < 4 * yardstick + 1e-4, yardstick
    assert relative_error(xa.grad, xr.grad) < 8 * yardstick + 1e-4, yardstick


@pytest.mark.parametrize("conv,strategy", _strategy_cases())
def test_backward_inside_the_autocast_region_matches_backward_after_it(conv, strategy, monkeypatch):
    # tune times each strategy's backward inside the network's autocast forward: the hand-written
    # backward passes once met bf16 mixes there ("expected scalar type Float but found BFloat16").
    if strategy == "grouped-rebuilt":
        monkeypatch.setattr("fmd.engine.RECOMPUTE_MIN_KERNEL_BYTES", 0)
    torch.manual_seed(0)
    layer = C.make_conv(conv, 16, 16, 3, 1, 1).train()
    layer.strategy = strategy.replace("-rebuilt", "")
    x = torch.randn(4, 16, 8, 8)
    grads = []
    for inside in (False, True):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = layer(xi).float().square().sum()
            if inside:
                loss.backward()
        if not inside:
            loss.backward()
        grads.append(xi.grad)
    assert relative_error(grads[1], grads[0]) < 1e-2


def test_tune_under_bf16_autocast_trains_a_step():
    from fmd.models import ResNet

    torch.manual_seed(0)
    model = ResNet(18, "fmdconv", 10, "small", 16, in_channels=1, strategy="tune")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 1, 32, 32)),
                                                 torch.arange(8))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.layer4.parameters()
                                        if p.requires_grad)


def test_bf16_training_on_the_cpu_records_its_options_in_record_and_key(tmp_path):
    base = make_config("smoke", epochs=2, train_subset=256, test_subset=64)
    config = make_config("smoke", epochs=2, train_subset=256, test_subset=64, amp="bf16",
                         channels_last=True)
    record = train(config, tmp_path, progress=False, verbose=False)
    losses = [h["train_loss"] for h in record["history"]]
    assert losses[-1] < losses[0] and all(map(lambda v: v == v, losses))
    assert record["precision"] == {"amp": "bf16", "channels_last": True, "compile": False}
    assert record["config"]["amp"] == "bf16" and record["distributed"]["world_size"] == 1
    # Options away from their defaults are in the key; at their defaults they are not.
    assert config.key() != base.key()
    assert "amp" not in base.identity() and config.identity()["amp"] == "bf16"
    assert make_config("smoke", amp="none").key() == make_config("smoke").key()


def test_fp16_training_uses_a_grad_scaler_that_the_checkpoint_keeps(tmp_path):
    config = make_config("smoke", epochs=2, train_subset=128, test_subset=32, amp="fp16")
    assert train(config, tmp_path, progress=False, verbose=False, stop_after=1) is None
    from fmd.train import checkpoint_path
    state = torch.load(checkpoint_path(config, tmp_path), weights_only=True)
    assert state["scaler"]["scale"] > 0
    record = train(config, tmp_path, progress=False, verbose=False, resume=True)
    assert record["sessions"] == 2 and record["final"]["train_loss"] == record["final"]["train_loss"]


def test_compiled_training_matches_eager_training(tmp_path):
    options = dict(epochs=1, train_subset=64, test_subset=32, width=4)
    eager = train(make_config("smoke", **options), tmp_path, progress=False, verbose=False)
    compiled = train(make_config("smoke", compile=True, **options), tmp_path, progress=False,
                     verbose=False)
    assert compiled["precision"]["compile"] and compiled["key"] != eager["key"]
    assert compiled["final"]["train_loss"] == pytest.approx(eager["final"]["train_loss"], rel=1e-3)
    assert compiled["final"]["test_top1"] == pytest.approx(eager["final"]["test_top1"], abs=4)
    json.dumps(compiled)


def test_a_dynamic_network_trains_in_channels_last(tmp_path):
    # model.to(memory_format=channels_last) refuses the 5-D kernel banks: a dynamic run with
    # --channels-last crashed before its first step.
    config = make_config("smoke", conv="fmdconv", epochs=1, train_subset=64, test_subset=32,
                         channels_last=True)
    record = train(config, tmp_path, progress=False, verbose=False)
    assert record["precision"]["channels_last"] and math.isfinite(record["final"]["train_loss"])
    model = to_channels_last(ResNet(18, "fmdconv", 10, "small", 8, 1))
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model.layer1[0].conv1.weight.dim() == 5 and model.layer1[0].conv1.weight.is_contiguous()
