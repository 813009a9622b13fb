"""Every strategy under torch.compile, every exported graph in ONNX Runtime, and the strategy choice
per device: the deployment paths compute what eager PyTorch computes."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from fmd.conv import CONVS, DynamicConv2dBase, make_conv
from fmd.engine import applicable_strategies, choose_strategy
from fmd.export import conv_output_channels, export_onnx
from fmd.models import resnet18

COMPUTING = ("grouped", "kfold_conv", "kfold_im2col", "sample_im2col", "shared")


def layer_and_input(conv, batch=3, channels=8, size=6, **options):
    layer = make_conv(conv, channels, channels, 3, 1, 1, **options)
    return layer, torch.randn(batch, channels, size, size)


def strategies_of(conv):
    layer, x = layer_and_input(conv)
    with torch.no_grad():
        att = layer.attend(x)
    return applicable_strategies(att, layer.geometry)


CASES = [(conv, strategy) for conv in ("fmdconv", "odconv") for strategy in strategies_of(conv)]
CASES += [("fmdconv_gates", "shared"), ("fmdconv_gates", "grouped")]
MATRIX_CASES = [("fmdconv", "kfold_matrix"), ("odconv", "kfold_matrix")]  # on a 2×2 map


def build(conv, strategy):
    options = {"attentions": ("input", "output")} if conv == "fmdconv_gates" else {}
    size = 2 if strategy == "kfold_matrix" else 6  # it applies to maps smaller than the kernel
    return layer_and_input(conv.replace("_gates", ""), size=size, strategy=strategy, **options)


@pytest.mark.parametrize("conv,strategy", CASES)
def test_every_strategy_compiled_gives_eager_outputs_and_input_gradients(conv, strategy):
    # aot_eager traces the graph as inductor would (dynamo, AOTAutograd, the same strategy choice)
    # without generating code, so the suite stays fast; inductor itself is timed by fmd.bench.
    layer, x = build(conv, strategy)
    compiled = torch.compile(layer, backend="aot_eager")  # as users call it
    for train in (False, True):
        layer.train(train)
        outputs, grads = [], []
        for run in (layer, compiled):  # each backward before the next forward updates BN buffers
            x_leaf = x.clone().requires_grad_()
            outputs.append(run(x_leaf))
            outputs[-1].square().mean().backward()
            grads.append(x_leaf.grad)
            assert layer.last_strategy == strategy
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    torch._dynamo.reset()


def test_a_traced_graph_computes_kfold_matrix_s_layers_with_im2col_whatever_their_map_size():
    # kfold_matrix's tap tables fix the map size, which a graph may keep symbolic: inside a graph
    # auto takes kfold_im2col there, and a map marked dynamic still compiles and stays exact.
    layer, x = layer_and_input("fmdconv", batch=64, size=2)
    layer.eval()
    with torch.no_grad():
        eager = layer(x)
        assert layer.last_strategy == "kfold_matrix"
        torch._dynamo.mark_dynamic(x, 2)
        torch._dynamo.mark_dynamic(x, 3)
        compiled = torch.compile(layer, backend="aot_eager")
        torch.testing.assert_close(compiled(x), eager, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


@pytest.mark.parametrize("conv,strategy", CASES + MATRIX_CASES)
def test_every_strategy_runs_under_bf16_autocast_close_to_fp32(conv, strategy):
    layer, x = build(conv, strategy)
    for train in (False, True):
        layer.train(train)
        grads = []
        for dtype in (None, torch.bfloat16):
            x_leaf = x.clone().requires_grad_()
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                out = layer(x_leaf)
            out.float().square().mean().backward()
            grads.append((out.detach().float(), x_leaf.grad))
        (y32, g32), (y16, g16) = grads
        assert layer.last_strategy == strategy
        assert float((y16 - y32).abs().max()) <= 0.03 * float(y32.abs().max())
        assert float((g16 - g32).abs().max()) <= 0.03 * float(g32.abs().max())


def test_auto_compiled_with_a_symbolic_batch_stays_exact_at_every_batch():
    layer, _ = layer_and_input("fmdconv")
    layer.eval()
    compiled = torch.compile(layer, backend="aot_eager", dynamic=True, fullgraph=True)
    with torch.no_grad():
        for batch in (2, 5, 1):
            x = torch.randn(batch, 8, 6, 6)
            torch.testing.assert_close(compiled(x), layer(x), rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


def test_inductor_compiles_the_automatic_choice_to_eager_outputs():
    layer, x = layer_and_input("fmdconv", batch=1)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(layer)(x), layer(x), rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


@pytest.mark.parametrize("conv", list(CONVS))
@pytest.mark.parametrize("batch", [1, None])
def test_onnx_runtime_runs_every_convolution_as_eager(conv, batch, tmp_path):
    layer, _ = layer_and_input(conv)
    report = export_onnx(layer, tmp_path / f"{conv}.onnx", (8, 6, 6), batch=batch, threads=1)
    assert report["batch"] == (batch or "dynamic") and report["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("conv", ["fmdconv", "odconv"])
def test_onnx_runtime_runs_a_layer_that_eager_computes_as_dense_matrices_as_eager(conv, tmp_path):
    # the exported graph computes it with im2col (matrix_applies: not inside a traced graph)
    layer, x = layer_and_input(conv, batch=64, size=2)
    with torch.no_grad():
        layer.eval()(x)
    assert layer.last_strategy == "kfold_matrix"
    report = export_onnx(layer, tmp_path / f"{conv}.onnx", (8, 2, 2), batch=64, threads=1)
    assert report["max_abs_diff"] < 1e-4


def test_a_fixed_batch_1_onnx_export_has_no_k_fold_convolution(tmp_path):
    # Width 5 and K = 3: a K-fold convolution would have 15, 30, 60 or 120 output channels.
    model = resnet18(conv="fmdconv", stem="cifar", width=5, kernel_num=3, num_classes=10)
    export_onnx(model, tmp_path / "b1.onnx", (3, 32, 32), batch=1, threads=1)
    channels = conv_output_channels(tmp_path / "b1.onnx")
    assert len(channels) == 20 and set(channels) <= {5, 10, 20, 40}, channels


def test_onnx_export_refuses_bad_sizes(tmp_path):
    layer, _ = layer_and_input("fmdconv")
    with pytest.raises(ValueError, match="batch must be at least 1"):
        export_onnx(layer, tmp_path / "x.onnx", (8, 6, 6), batch=0)
    with pytest.raises(ValueError, match=r"input_size must be \(channels, height, width\)"):
        export_onnx(layer, tmp_path / "x.onnx", (1, 8, 6, 6))


def test_export_command_writes_a_checked_graph(tmp_path, capsys):
    from fmd.export import main

    out = tmp_path / "r18.onnx"
    assert main([str(out), "--conv", "dyconv", "--stem", "cifar", "--width", "4", "--size", "16",
                 "--num-classes", "10", "--dynamic-batch"]) == 0
    assert out.exists() and "ONNX Runtime matches eager PyTorch" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main([str(out), "--batch", "0"])
    assert stop.value.code == 2 and "positive integer" in capsys.readouterr().err


def test_cpu_thresholds_do_not_govern_cuda():
    # Fake tensors carry a CUDA device without a GPU: the rule is read from shapes and device only.
    with FakeTensorMode():
        for device in ("cpu", "cuda"):
            with torch.device(device):
                layer, x = layer_and_input("fmdconv", batch=128, channels=256, size=8, bias=False)
                picked = choose_strategy(x, layer.weight, layer.attend(x), layer.geometry)
            assert picked == {"cpu": "sample_im2col", "cuda": "grouped"}[device]
        with torch.device("cuda"):
            layer, x = layer_and_input("fmdconv", batch=128, channels=8, size=32,
                                       attentions=("input", "output"))
            layer(x)
        assert isinstance(layer, DynamicConv2dBase) and layer.last_strategy == "shared"


def test_tune_caches_per_device():
    from fmd.engine import _TUNED

    layer, x = layer_and_input("fmdconv", strategy="tune")
    before = set(_TUNED)
    layer(x)
    with torch.device("meta"):
        meta_layer, meta_x = layer_and_input("fmdconv", strategy="tune")
        meta_layer(meta_x)  # another device, the same shape: a key of its own
    added = set(_TUNED) - before
    assert len(added) == 2 and {key[-2] for key in added} == {"cpu", "meta"}


def test_benchmark_names_its_backend_and_compares_outputs_with_eager(tmp_path):
    from fmd import bench

    rows = bench.run(["r18w16-cifar-b1-infer"], ["fmdconv"], repeats=1, threads=1, out_dir=tmp_path,
                     backend="onnxruntime")
    assert [(r["conv"], r["backend"], r["amp"]) for r in rows] == [
        ("static", "onnxruntime", "fp32"), ("fmdconv", "onnxruntime", "fp32")]
    assert all(r["output_rel_diff"] < 1e-4 for r in rows) and rows[1]["strategies"] == "grouped"
    assert "| fmdconv | auto | onnxruntime | fp32 |" in (tmp_path / "bench_cpu_onnxruntime.md").read_text()
    for backend, amp, message in [("onnxruntime", "bf16", "fp32"), ("tpu", None, "backend must be"),
                                  ("eager", "fp8", "amp must be")]:
        with pytest.raises(ValueError, match=message):
            bench.run(["r18w16-cifar-b1-infer"], ["fmdconv"], backend=backend, amp=amp)
    with pytest.raises(ValueError, match="training case"):
        bench.run(["r18w16-cifar-b32-train"], ["fmdconv"], backend="onnxruntime")
    with pytest.raises(ValueError, match="needs --backend compile or onnxruntime"):
        bench.run(["r18w16-cifar-b1-infer"], ["fmdconv"], dynamic_batch=True)


def test_benchmark_times_the_official_computation_beside_auto(tmp_path):
    # What `--device cuda` adds by default, run here on the CPU: a row with grouped forced.
    from fmd import bench

    rows = bench.run(["r18w16-cifar-b32-train"], ["odconv"], strategy=["auto", "grouped"], repeats=1,
                     threads=1, out_dir=tmp_path, amp="bf16")
    assert [(r["conv"], r["strategy_forced"]) for r in rows] == [
        ("static", "auto"), ("odconv", "auto"), ("odconv", "grouped")]
    assert rows[2]["strategies"] == "grouped" and rows[1]["strategies"] != "grouped"
    assert (tmp_path / "bench_cpu_eager_bf16.json").exists()


def test_chapter_tables_keep_to_one_backend(tmp_path):
    import json

    from fmd.chapters.ch07_speed import load_bench_tables

    for name, row in [("eager", {"backend": "eager", "amp": "fp32"}),
                      ("compile", {"backend": "compile", "amp": "fp32"}),
                      ("eager_bf16", {"backend": "eager", "amp": "bf16"}),
                      ("old", {"conv": "static"})]:  # a table from before backends: eager
        (tmp_path / f"bench_cpu_{name}.json").write_text(json.dumps([row]))
    assert sorted(load_bench_tables([tmp_path])) == ["bench_cpu_eager.json", "bench_cpu_old.json"]
    assert list(load_bench_tables([tmp_path], backend="compile")) == ["bench_cpu_compile.json"]
    assert len(load_bench_tables([tmp_path], backend=None)) == 4


def test_training_speed_rows_compare_time_with_the_mac_ratio_and_the_targets():
    from fmd.bench import QUICK_CASES
    from fmd.chapters import ch07_speed as ch07

    def row(conv, seconds, strategy="tune"):
        return {"name": QUICK_CASES[0], "mode": "train", "conv": conv, "strategy_forced": strategy,
                "median_s": seconds, "time_ratio": seconds / 0.1, "memory_ratio": 1.5,
                "strategies": "grouped", "threads": "1", "device": "cpu", "cpu": "a CPU", "cores": 2,
                "torch": "2.14.1", "commit": "abc1234"}
    table = [row("static", 0.1, "auto"), row("fmdconv", 0.2), row("odconv", 0.4)]
    rows = ch07.training_speed_rows({"bench_cpu_eager.json": table}, QUICK_CASES)
    assert [r["conv"] for r in rows] == ["fmdconv", "odconv"]
    fmd_row = rows[0]
    assert fmd_row["time ×static"] == 2.0 and fmd_row["MACs ×static"] == pytest.approx(2.19, abs=0.01)
    reading = ch07.training_speed_reading(rows)
    # FMDConv: 2.0 <= 1.1 × 2.19; ODConv: 4.0 > 1.25 × its MAC ratio.
    assert "fmdconv with strategy `tune` (grouped), eager: ×2.00" in reading and "is met." in reading
    assert reading.count("is not met") == 1
    assert ch07.training_speed_reading([]).startswith("No benchmark table")
    assert fmd_row["target ×static"] == pytest.approx(1.1 * fmd_row["MACs ×static"], abs=0.01)

    # Before → after where a table has both strategies; at CIFAR width the target is absolute.
    table.append(row("fmdconv", 0.3, "auto"))
    cifar = [dict(row("static", 1.0, "auto"), name=ch07.CIFAR_TRAINING_CASE, time_ratio=1.0),
             dict(row("fmdconv", 2.1), name=ch07.CIFAR_TRAINING_CASE, time_ratio=2.1)]
    rows = ch07.training_speed_rows({"bench_cpu_eager.json": table, "bench_cifar.json": cifar},
                                    (*QUICK_CASES, ch07.CIFAR_TRAINING_CASE))
    assert [r["target ×static"] for r in rows if r["case"] == ch07.CIFAR_TRAINING_CASE] == [2.0]
    reading = ch07.training_speed_reading(rows)
    assert f"{QUICK_CASES[0]} fmdconv (eager) ×3.00 → ×2.00" in reading
    # a bf16 table is told apart: its rows name the autocast dtype and pair only among themselves
    bf16 = [dict(r, amp="bf16", conv="fmdconv", strategy_forced="tune") for r in table[1:2]]
    rows_bf16 = ch07.training_speed_rows({"bench_cpu_eager_bf16.json": bf16}, QUICK_CASES)
    assert rows_bf16[0]["backend"] == "eager bf16"
    assert "×2.10 the static step's time" in reading
    assert reading.count("is not met") == 3  # FMDConv auto, ODConv, CIFAR
