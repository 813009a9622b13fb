"""The engine's automatic choice, deployment with torch.export, and the benchmark's table."""
import json

import pytest
import torch

from fmd import bench, breakdown
from fmd.conv import DynamicConv2dBase, FMDConv2d, ODConv2d, make_conv
from fmd.engine import choose_strategy
from fmd.models import ResNet, resnet18


def strategies_used(model):
    return [m.last_strategy for m in model.modules() if isinstance(m, DynamicConv2dBase)]


def assert_same_gradients(layer, x, out, strategy="kfold_conv"):
    """Backward of ``out`` gives the gradients that ``strategy`` (plain autograd) gives."""
    out.square().mean().backward()
    found = layer.weight.grad.clone(), x.grad.clone()
    layer.zero_grad()
    x.grad = None
    previous, layer.strategy = layer.strategy, strategy
    layer(x).square().mean().backward()
    layer.strategy = previous
    torch.testing.assert_close(found[0], layer.weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(found[1], x.grad, rtol=1e-4, atol=1e-6)


def test_auto_picks_by_batch_and_map_size():
    model = resnet18(conv="fmdconv", stem="cifar", width=8, num_classes=10).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
        assert set(strategies_used(model)) == {"grouped"}
        model(torch.randn(4, 3, 32, 32))
    used = strategies_used(model)
    # 32×32 and 16×16 maps mix a kernel per sample; 8×8 maps run K kernels as one convolution;
    # 4×4 maps as one im2col matmul.
    assert used == ["grouped"] * 8 + ["kfold_conv"] * 4 + ["kfold_im2col"] * 4
    odconv = resnet18(conv="odconv", stem="cifar", width=8, num_classes=10).eval()
    with torch.no_grad():
        odconv(torch.randn(4, 3, 32, 32))
    assert strategies_used(odconv)[-1] == "kfold_im2col"  # spatial attention rules out "kfold_conv"


# (map, kernel, stride, padding, dilation): maps smaller than the kernel, square or not, with
# unequal strides, paddings and dilations, so that a tap table that mixed up rows and columns fails
MATRIX_GEOMETRIES = [((2, 2), 3, 1, 1, 1), ((1, 1), 3, 1, 1, 1), ((2, 2), 3, 2, 1, 1),
                     ((2, 1), 3, 1, 1, 1), ((1, 2), 3, 2, 1, 1), ((2, 3), 3, (1, 2), (1, 2), 1),
                     ((2, 2), 3, 1, 2, 2), ((2, 2), 3, 1, (2, 1), (2, 1)), ((1, 4), (3, 5), 1, (1, 2), 1),
                     ((2, 4), (3, 5), (1, 2), (2, 1), 1)]


@pytest.mark.parametrize("conv", ["fmdconv", "odconv", "dyconv", "condconv"])
@pytest.mark.parametrize("size, kernel, stride, padding, dilation", MATRIX_GEOMETRIES)
def test_kfold_matrix_computes_what_grouped_computes_on_maps_smaller_than_the_kernel(
        conv, size, kernel, stride, padding, dilation):
    torch.manual_seed(0)
    layer = make_conv(conv, 6, 10, kernel, stride, padding, dilation, bias=True).double().train()
    x = torch.randn(5, 6, *size, dtype=torch.double)
    found = {}
    for strategy in ("grouped", "kfold_matrix"):
        layer.strategy = strategy
        layer.zero_grad()
        x_leaf = x.clone().requires_grad_()
        y = layer(x_leaf)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.double).reshape(y.shape)).sum().backward()
        assert layer.last_strategy == strategy
        found[strategy] = [y, x_leaf.grad, *(p.grad for p in layer.parameters() if p.grad is not None)]
    assert len(found["kfold_matrix"]) == len(found["grouped"]) > 3
    for got, want in zip(found["kfold_matrix"], found["grouped"]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_kfold_matrix_keeps_only_the_taps_inside_the_map_and_applies_only_where_it_can():
    from fmd.engine import applicable_strategies, tap_selection
    layer = make_conv("fmdconv", 4, 4, 3, 1, 1)
    for size, taps in (((2, 2), 16), ((1, 1), 1), ((2, 1), 4)):
        selection = tap_selection(torch.zeros(1, 4, *size), layer.weight, layer.geometry)
        assert selection.shape == (9, size[0] * size[1], size[0] * size[1])
        assert selection.sum() == taps and selection.max() == 1  # im2col reads 9 per position
    assert tap_selection(torch.zeros(1, 4, 1, 1), layer.weight, layer.geometry)[4, 0, 0] == 1  # centre
    layer.strategy = "kfold_matrix"
    with pytest.raises(ValueError, match="strategy 'kfold_matrix' cannot compute this layer"):
        layer(torch.randn(2, 4, 3, 3))  # 9 positions: not fewer than the 9 taps
    # every tap in the padding (stride 5, padding 4 on 1×1): nothing to multiply, so not applicable,
    # and auto computes the layer another way
    padded = make_conv("fmdconv", 4, 6, 3, 5, 4).eval()
    x = torch.randn(3, 4, 1, 1)
    with torch.no_grad():
        options = applicable_strategies(padded.attend(x), padded.geometry, x, padded.weight)
        assert "kfold_matrix" not in options
        y = padded(x)
        padded.strategy = "grouped"
        torch.testing.assert_close(y, padded(x))
    # a 7×7 kernel on a 6×6 map would build matrices of 47 times its bank: over MATRIX_MAX_BYTES
    big = make_conv("fmdconv", 64, 64, 7, 1, 3)
    x = torch.randn(2, 64, 6, 6)
    with torch.no_grad():
        assert "kfold_matrix" not in applicable_strategies(big.attend(x), big.geometry, x, big.weight)


def test_auto_takes_kfold_matrix_where_the_map_is_smaller_than_the_kernel_at_large_batches():
    from fmd.engine import MATRIX_MIN_BATCH
    # The ImageNet stem on 32×32: stages at 8×8, 4×4, 2×2, 1×1.
    model = ResNet(18, "fmdconv", 10, "imagenet", 8, 3).eval()
    with torch.no_grad():
        model(torch.randn(MATRIX_MIN_BATCH, 3, 32, 32))
        used = strategies_used(model)
        # layer3's first conv reads the 4×4 map (stride 2): im2col; the rest read 2×2 or 1×1 maps
        assert used[8:] == ["kfold_im2col"] + ["kfold_matrix"] * 7
        model(torch.randn(MATRIX_MIN_BATCH - 1, 3, 32, 32))  # building the matrices does not pay
        assert "kfold_matrix" not in strategies_used(model)


def test_auto_picks_sample_im2col_for_large_kernels_on_small_maps():
    # The shapes of a full-width CIFAR ResNet-18 at batch 128, on the meta device (no storage).
    def pick(channels_in, channels, size, stride=1):
        with torch.device("meta"):
            layer = make_conv("fmdconv", channels_in, channels, 3, stride, 1, bias=False)
            x = torch.empty(128, channels_in, size, size)
            return choose_strategy(x, layer.weight, layer.attend(x), layer.geometry)

    assert pick(128, 128, 16) == "grouped"  # 256 output positions
    assert pick(128, 256, 16, 2) == "sample_im2col"  # 8×8 out, 1.2 MB kernel, 4.7 MB bank
    assert pick(256, 256, 8) == "sample_im2col"  # 2.4 MB kernel, 9.4 MB bank
    assert pick(512, 512, 4) == "kfold_im2col"  # a 38 MB bank would be read again for every chunk
    assert pick(64, 64, 8) == "kfold_conv"  # 147 kB kernel: per-sample matmuls too small


def test_sample_im2col_training_keeps_neither_kernels_nor_columns_for_backward():
    layer = make_conv("fmdconv", 16, 16, 3, padding=1, strategy="sample_im2col").train()
    x = torch.randn(8, 16, 6, 6, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = layer(x)
    assert saved and max(saved) < 8 * layer.weight[0].numel(), saved
    assert max(saved) < 8 * 16 * 9 * 36  # the im2col columns are rebuilt too
    assert_same_gradients(layer, x, out)


def test_forced_strategies_agree_on_a_whole_network():
    model = resnet18(conv="fmdconv", stem="cifar", width=8, num_classes=10).eval()
    x = torch.randn(3, 3, 32, 32)
    outputs = {}
    with torch.no_grad():
        for strategy in ("grouped", "kfold_conv", "kfold_im2col", "sample_im2col"):
            for m in model.modules():
                if isinstance(m, DynamicConv2dBase):
                    m.strategy = strategy
            outputs[strategy] = model(x)
    torch.testing.assert_close(outputs["kfold_conv"], outputs["grouped"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs["kfold_im2col"], outputs["grouped"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs["sample_im2col"], outputs["grouped"], rtol=1e-4, atol=1e-5)


def test_batch_one_inference_reuses_the_mix_buffer_without_leaking_state():
    layer = FMDConv2d(8, 8, 3, 1, 1).eval()
    a, b = torch.randn(1, 8, 5, 5), torch.randn(1, 8, 5, 5)
    with torch.inference_mode():
        ya1 = layer(a).clone()
        layer(b)
        ya2 = layer(a)
    torch.testing.assert_close(ya1, ya2)
    with torch.no_grad():  # a buffer made in inference mode is not reused outside it
        torch.testing.assert_close(layer(a), ya1)


def test_batch_one_inference_scales_the_mix_buffer_in_place_exactly_once():
    # ODConv's spatial attention multiplies the reused mix buffer in place at batch 1: each call
    # must start from a fresh mix (no scaling carried over) and leave the kernel bank untouched.
    layer = ODConv2d(8, 8, 3, 1, 1).eval()
    bank = layer.weight.detach().clone()
    x = torch.randn(1, 8, 5, 5)
    expected = layer(x).detach()  # with autograd on: no buffer, no in-place scaling
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            for _ in range(3):
                torch.testing.assert_close(layer(x), expected)
    assert torch.equal(layer.weight.detach(), bank)


@pytest.mark.parametrize("conv", ["condconv", "dyconv", "odconv", "fmdconv"])
def test_export_with_dynamic_batch_matches_eager(conv):
    model = resnet18(conv=conv, stem="cifar", width=4, num_classes=10).eval()
    batch = torch.export.Dim("batch", min=1, max=256)
    exported = torch.export.export(model, (torch.randn(2, 3, 32, 32),),
                                   dynamic_shapes={"x": {0: batch}})
    for size in (1, 5):
        x = torch.randn(size, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-5)


def test_benchmark_writes_a_table_with_ratios_against_static(tmp_path):
    rows = bench.run(["r18w16-cifar-b1-infer"], ["fmdconv"], repeats=2, threads=1, out_dir=tmp_path)
    assert [r["conv"] for r in rows] == ["static", "fmdconv"]
    assert rows[0]["time_ratio"] == 1.0
    assert rows[1]["time_ratio"] == pytest.approx(rows[1]["median_s"] / rows[0]["median_s"])
    assert rows[1]["strategies"] == "grouped"
    assert rows[1]["rounds"] == 2 and rows[1]["repeats"] == 2  # static and fmdconv took turns
    saved = json.loads((tmp_path / "bench_cpu_eager.json").read_text())
    assert saved[1]["commit"] and saved[1]["threads"] == "1"
    assert "| r18w16-cifar-b1-infer | fmdconv |" in (tmp_path / "bench_cpu_eager.md").read_text()
    with pytest.raises(ValueError, match="unknown case"):
        bench.run(["r9"], ["fmdconv"])
    # Fresh workers per session; the reported median is the median of the sessions' medians.
    rows = bench.run(["r18w16-cifar-b1-infer"], ["fmdconv"], repeats=1, threads=1, out_dir=tmp_path,
                     sessions=3)
    for row in rows:
        assert row["sessions"] == 3 and len(row["session_medians_s"]) == 3 and row["repeats"] == 3
        assert row["median_s"] == sorted(row["session_medians_s"])[1]
    with pytest.raises(ValueError, match="repeats must be at least 1, got 0"):
        bench.run(["r18w16-cifar-b1-infer"], ["fmdconv"], repeats=0)
    # A worker that fails says which conv and passes on its error.
    with pytest.raises(RuntimeError, match=r"benchmark of odconv on r18w16-cifar-b1-infer "
                       r"\(kfold_conv\) failed(.|\n)*cannot compute this layer"):
        bench.run(["r18w16-cifar-b1-infer"], ["odconv"], strategy="kfold_conv", repeats=1, threads=1,
                  out_dir=tmp_path)


def test_batch1_breakdown_splits_the_ratio_over_every_dynamic_layer(tmp_path):
    rows = breakdown.run_breakdown(["r18w16-cifar-b1-infer"], ["odconv", "fmdconv"], rounds=1,
                               threads=1, out_dir=tmp_path)
    assert [r["conv"] for r in rows] == ["odconv", "fmdconv"]
    case = bench.CASES["r18w16-cifar-b1-infer"]
    for row in rows:
        model = ResNet(case.depth, row["conv"], case.num_classes, case.stem, case.width)
        layers = [m for m in model.modules() if isinstance(m, DynamicConv2dBase)]
        assert len(layers) == 16  # every block conv of a ResNet-18 is in the bank count
        assert row["bank_mb"] == pytest.approx(sum(m.weight.numel() * 4 for m in layers) / 1e6)
        assert row["time_ratio"] == pytest.approx(
            1 + row["mix_x"] + row["attention_x"] + row["rest_x"])
        assert row["mix_x"] > 0 and row["attention_x"] > 0 and row["floor_ratio"] > 1
        assert row["read_gb_s"] == pytest.approx(row["bank_mb"] / row["read_ms"])
    assert "| r18w16-cifar-b1-infer | fmdconv |" in (tmp_path / "breakdown_cpu.md").read_text()
    assert json.loads((tmp_path / "breakdown_cpu.json").read_text())[1]["threads"] == "1"
    from fmd.provenance import read_stamp  # chapter 08's inventory names where the table came from
    stamp = read_stamp(tmp_path / "breakdown_cpu.md")
    assert stamp["from"] == "fmd.bench --breakdown: cpu, 1 threads" and stamp["commit"] != "?"
    with pytest.raises(ValueError, match="batch-1 inference cases"):
        breakdown.batch1_breakdown("r18-cifar-b128-train", ["fmdconv"])
    with pytest.raises(ValueError, match="unknown dynamic conv"):
        breakdown.batch1_breakdown("r18w16-cifar-b1-infer", ["static"])


def test_training_breakdown_times_every_dynamic_layer_by_strategy(tmp_path):
    rows = breakdown.run_train_breakdown(["r18w16-cifar-b32-train"], ["odconv", "fmdconv"],
                                         rounds=1, threads=1, out_dir=tmp_path)
    for conv in ("odconv", "fmdconv"):
        *layers, total = [r for r in rows if r["conv"] == conv]
        assert [r["layer"] for r in layers] == list(range(16)) and total["layer"] == "all"
        for r in layers:
            timed = {s: r[f"{s}_x"] for s in ("grouped", "kfold_conv", "kfold_im2col", "sample_im2col",
                                              "kfold_matrix") if f"{s}_x" in r}
            assert r["best_x"] == min(timed.values()) and r["auto_x"] == timed[r["auto"]]
            assert r["static_ms"] > 0 and r["attention_x"] > 0
        assert ("kfold_conv_x" in layers[0]) == (conv == "fmdconv")  # a spatial attention forbids it
        static = sum(r["static_ms"] for r in layers)
        assert total["static_ms"] == pytest.approx(static)
        assert total["best_x"] == pytest.approx(sum(r["best_x"] * r["static_ms"] for r in layers) / static)
        assert total["best_x"] <= total["auto_x"]
    assert "| fmdconv | 15 | 128→128 3×3/1 on 4×4 |" in (tmp_path / "breakdown_train_cpu.md").read_text()
    assert json.loads((tmp_path / "breakdown_train_cpu.json").read_text())[0]["threads"] == "1"
    with pytest.raises(ValueError, match="training cases"):
        breakdown.train_layer_breakdown("r18w16-cifar-b1-infer", "fmdconv")
    # 1 + K/L: the per-sample mix's arithmetic over the convolution's
    for r in (r for r in rows if r["layer"] != "all"):
        assert r["mix_macs_x"] == 1 + 4 / r["positions"] and r["positions"] in (1024, 256, 64, 16)
    # chapter 07 reads the training table by map size; its batch-1 reader leaves it alone
    from fmd.chapters import ch07_speed as ch07
    assert ch07.load_breakdown_tables([tmp_path]) == {}
    grouped = ch07.train_breakdown_rows(ch07.load_train_breakdown_tables([tmp_path]))
    assert [(r["conv"], r["output positions"], r["layers"]) for r in grouped][:5] == [
        ("odconv", 1024, 4), ("odconv", 256, 4), ("odconv", 64, 4), ("odconv", 16, 4), ("fmdconv", 1024, 4)]
    fmd16 = next(r for r in grouped if r["conv"] == "fmdconv" and r["output positions"] == 16)
    layers16 = [r for r in rows if r["conv"] == "fmdconv" and r["positions"] == 16]
    assert fmd16["best ×"] == round(sum(r["best_x"] * r["static_ms"] for r in layers16)
                                    / sum(r["static_ms"] for r in layers16), 2)
    assert "fmdconv, 4 layer(s) with 16 output positions" in ch07.train_breakdown_reading(grouped)


def test_odconv_refuses_kfold_conv_but_computes_with_kfold_im2col():
    # A per-sample spatial attention does not commute with a convolution: kfold_conv cannot apply it.
    layer = ODConv2d(4, 4, 3, 1, 1, strategy="kfold_im2col").eval()
    with torch.no_grad():
        y = layer(torch.randn(2, 4, 6, 6))
        assert y.shape == (2, 4, 6, 6) and layer.last_strategy == "kfold_im2col"
        layer.strategy = "kfold_conv"
        with pytest.raises(ValueError, match="strategy 'kfold_conv' cannot compute this layer"):
            layer(torch.randn(2, 4, 6, 6))


def test_tuned_strategy_is_exact_cached_and_visible():
    from fmd.engine import _TUNED
    layer = FMDConv2d(8, 8, 3, 1, 1, strategy="tune").train()
    x = torch.randn(4, 8, 6, 6)
    before = len(_TUNED)
    y = layer(x)
    chosen = layer.last_strategy
    assert chosen in ("grouped", "kfold_conv", "kfold_im2col", "sample_im2col") and len(_TUNED) == before + 1
    layer(x)
    assert len(_TUNED) == before + 1 and layer.last_strategy == chosen  # cached per shape
    layer.strategy = "grouped"
    torch.testing.assert_close(y, layer(x), rtol=1e-5, atol=1e-6)


def test_grouped_training_rebuilds_large_per_sample_kernels_and_keeps_small_ones(monkeypatch):
    # Above RECOMPUTE_MIN_KERNEL_BYTES the per-sample kernels are rebuilt in backward, not saved: no
    # tensor saved for the backward pass has their B·|W| elements (with and without the gates
    # folded into them); below it autograd keeps them. Both give the same gradients.
    import fmd.engine as engine

    def saved_shapes(layer, x):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, seen=saved: seen.append(t.shape) or t,
                                                      lambda t: t):
            out = layer(x)
        return out, saved

    for size in (6, 14):  # 14: both gates are folded into the kernels
        layer = make_conv("fmdconv", 16, 16, 3, padding=1, strategy="grouped").train()
        x = torch.randn(8, 16, size, size, requires_grad=True)
        per_sample = 8 * layer.weight[0].numel()
        assert per_sample * 4 < engine.RECOMPUTE_MIN_KERNEL_BYTES
        out, saved = saved_shapes(layer, x)
        assert any(s.numel() == per_sample for s in saved), saved
        assert_same_gradients(layer, x, out)
        monkeypatch.setattr(engine, "RECOMPUTE_MIN_KERNEL_BYTES", 0)
        layer.zero_grad()
        x.grad = None
        out, saved = saved_shapes(layer, x)
        assert saved and all(s.numel() != per_sample for s in saved), saved
        assert_same_gradients(layer, x, out)
        monkeypatch.undo()


def test_a_fixed_batch_1_export_mixes_then_convolves_with_no_k_fold_convolution():
    # Width 5 and K = 3: a K-fold convolution would have 15, 30, 60 or 120 output channels, which
    # no convolution of this network has.
    model = resnet18(conv="fmdconv", stem="cifar", width=5, kernel_num=3, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    outs = [node.args[1].meta["val"].shape[0] for node in exported.graph.nodes
            if node.op == "call_function" and "conv" in str(node.target)]
    assert len(outs) == 20 and set(outs) <= {5, 10, 20, 40}, outs
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-5)
