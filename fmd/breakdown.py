"""Where the time goes (``python -m fmd.bench --breakdown``), against static convolution in the same run.

* batch-1 CPU inference: the kernel mix, the attention branches and the rest of each dynamic
  network, beside the floor that one read of every kernel bank sets (:func:`batch1_breakdown`);
* a training case: every dynamic layer's forward and backward, its attention branches on their own
  and each exact strategy of the engine, beside a static convolution of the same shape
  (:func:`train_layer_breakdown`).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from .bench import CASES, _dynamic_layer_inputs, check_counts, write_table
from .conv import DYNAMIC_CONV_NAMES
from .engine import (applicable_strategies, choose_strategy, mix_kernels_reusing, output_positions,
                     run_strategy)
from .models import ResNet
from .profiles import figures_dir
from .provenance import machine_info
from .timing import interleaved_times


def _attend_all(seen: List[tuple]) -> None:
    for layer, inp in seen:
        layer.attend(inp)


def _mix_all(mixes: List[tuple]) -> None:
    for weight, att in mixes:
        mix_kernels_reusing(weight, att.kernel, att.spatial)


def _read_all(weights: List[torch.Tensor]) -> None:
    for weight in weights:
        weight.sum()


def batch1_breakdown(name: str, convs: List[str], *, rounds: int = 10, repeats: int = 3,
                     threads: Optional[int] = None) -> List[Dict[str, object]]:
    """Where the time of a batch-1 CPU forward goes, per dynamic conv, against the static network.

    In one process, in interleaved rounds (median of round medians), times the static network, the
    dynamic one, and two pieces of the dynamic one run on their own over every dynamic layer in
    order, on the inputs each layer saw in a forward: its attention branches (``attend``) and its
    kernel mix (:func:`fmd.engine.mix_kernels_reusing`, as the batch-1 path computes it). What remains is the
    rest of the engine (gates, biases, reshapes) and any difference in the convolutions. A read of
    every bank (a sum) gives the floor set by memory: no exact mix reads fewer bytes.
    """
    case = CASES[name]
    if case.mode != "infer" or case.batch != 1:
        raise ValueError(f"the breakdown is for batch-1 inference cases, got {name!r}; choose from "
                         f"{sorted(n for n, c in CASES.items() if c.mode == 'infer' and c.batch == 1)}")
    bad = [c for c in convs if c not in DYNAMIC_CONV_NAMES]
    if bad:
        raise ValueError(f"unknown dynamic conv(s) {bad}; choose from {DYNAMIC_CONV_NAMES}")
    check_counts(rounds=rounds, repeats=repeats, threads=threads)
    threads = threads or torch.get_num_threads()
    torch.manual_seed(0)
    x = torch.randn(1, 3, case.size, case.size)
    build = lambda conv: ResNet(case.depth, conv, case.num_classes, case.stem,  # noqa: E731
                                case.width).eval()
    parts: Dict[tuple, Callable[[], object]] = {("static", "network"): partial(build("static"), x)}
    bank_mb: Dict[str, float] = {}
    with torch.inference_mode():
        for conv in convs:
            model = build(conv)
            seen = _dynamic_layer_inputs(model, x)
            mixes = [(layer.weight, layer.attend(inp)) for layer, inp in seen]
            bank_mb[conv] = sum(w.numel() * w.element_size() for w, _ in mixes) / 1e6
            parts[conv, "network"] = partial(model, x)
            parts[conv, "attention"] = partial(_attend_all, seen)
            parts[conv, "mix"] = partial(_mix_all, mixes)
            parts[conv, "bank read"] = partial(_read_all, [w for w, _ in mixes])
        times = interleaved_times(parts, rounds=rounds, repeats=repeats, warmup=2, threads=threads)
    ms = {key: 1e3 * t.median for key, t in times.items()}
    static = ms["static", "network"]
    info = machine_info("cpu", threads)
    rows = []
    for conv in convs:
        t = {part: ms[conv, part] for part in ("network", "mix", "attention", "bank read")}
        rows.append({"name": name, "conv": conv, "static_ms": static, "dynamic_ms": t["network"],
                     "time_ratio": t["network"] / static, "mix_x": t["mix"] / static,
                     "attention_x": t["attention"] / static,
                     "rest_x": (t["network"] - static - t["mix"] - t["attention"]) / static,
                     "bank_mb": bank_mb[conv], "mix_ms": t["mix"], "read_ms": t["bank read"],
                     "mix_gb_s": bank_mb[conv] / t["mix"], "read_gb_s": bank_mb[conv] / t["bank read"],
                     "floor_ratio": 1 + t["bank read"] / static, "rounds": rounds, **info})
    return rows


BREAKDOWN_COLUMNS = ["name", "conv", "static_ms", "dynamic_ms", "time_ratio", "mix_x", "attention_x",
                     "rest_x", "bank_mb", "mix_gb_s", "read_gb_s", "floor_ratio"]


def run_breakdown(cases: List[str], convs: List[str], rounds: int = 10,
                  threads: Optional[int] = None, out_dir: Optional[Path] = None,
                  tag: str = "") -> List[Dict[str, object]]:
    """:func:`batch1_breakdown` for each case; print and write ``breakdown_cpu<tag>.*``."""
    rows: List[Dict[str, object]] = []
    for name in cases:
        found = batch1_breakdown(name, convs, rounds=rounds, threads=threads)
        print(f"{name}: static {found[0]['static_ms']:.1f} ms", flush=True)
        for r in found:
            print(f"  {r['conv']:9s} ×{r['time_ratio']:.2f} = 1 + mix {r['mix_x']:.2f} + attention "
                  f"{r['attention_x']:.2f} + rest {r['rest_x']:.2f}; bank {r['bank_mb']:.0f} MB, "
                  f"floor ×{r['floor_ratio']:.2f}", flush=True)
        rows += found
    write_table(rows, figures_dir(folder=out_dir), f"breakdown_cpu{tag}", BREAKDOWN_COLUMNS,
                "Batch-1 inference, where the time goes: dynamic / static = 1 + mix + attention + "
                "rest (each × the static forward; median of interleaved rounds in one process)")
    return rows


def _backward_of(fn: Callable[[], object]) -> Callable[[], None]:
    """A step that runs ``fn`` (returning a tensor or a tuple of them) and the backward of its sum."""
    def step() -> None:
        out = fn()
        tensors = out if isinstance(out, tuple) else (out,)
        sum(t.sum() for t in tensors if t is not None).backward()
    return step


def static_weighted(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    """The ``key`` ratio (× static) of several layers of :func:`train_layer_breakdown` together:
    their mean weighted by each layer's static time."""
    return sum(r[key] * r["static_ms"] for r in rows) / sum(r["static_ms"] for r in rows)


def train_layer_breakdown(name: str, conv: str, *, rounds: int = 10, repeats: int = 1,
                          threads: Optional[int] = None) -> List[Dict[str, object]]:
    """Forward + backward of every dynamic layer of a training case, one row per layer.

    On the input each layer saw in a forward of the case's batch, in interleaved rounds (median of
    round medians): a static ``nn.Conv2d`` of the same shape, the layer's attention branches alone,
    and the whole layer (attentions included) computed by each exact strategy. Times are × the
    static convolution; ``auto`` is what :func:`fmd.engine.choose_strategy` picks, ``best`` the
    fastest strategy in this run (what ``tune`` would pick, timed the same way). ``mix_macs_x`` is
    the arithmetic of mixing a kernel per sample and convolving with it, × the convolution's:
    1 + K / (output positions), in forward and in backward alike.
    """
    case = CASES[name]
    if case.mode != "train":
        raise ValueError(f"the layer breakdown is for training cases, got {name!r}; choose from "
                         f"{sorted(n for n, c in CASES.items() if c.mode == 'train')}")
    if conv not in DYNAMIC_CONV_NAMES:
        raise ValueError(f"unknown dynamic conv {conv!r}; choose from {DYNAMIC_CONV_NAMES}")
    check_counts(rounds=rounds, repeats=repeats, threads=threads)
    threads = threads or torch.get_num_threads()
    torch.manual_seed(0)
    model = ResNet(case.depth, conv, case.num_classes, case.stem, case.width, case.channels)
    seen = _dynamic_layer_inputs(model, torch.randn(case.batch, case.channels, case.size, case.size))
    parts: Dict[tuple, Callable[[], object]] = {}
    layers = []
    for i, (layer, inp) in enumerate(seen):
        x = inp.detach().requires_grad_(True)
        geo = layer.geometry
        static = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                 layer.stride, layer.padding, layer.dilation, layer.groups, bias=False)
        att = layer.attend(x)
        options = applicable_strategies(att, geo, x, layer.weight)
        parts[i, "static"] = _backward_of(partial(static, x))
        parts[i, "attention"] = _backward_of(partial(layer.attend, x))
        for strategy in options:
            parts[i, strategy] = _backward_of(
                lambda layer=layer, x=x, strategy=strategy: run_strategy(
                    strategy, x, layer.weight, layer.bias, layer.attend(x), layer.geometry))
        layers.append((i, layer, x, options, choose_strategy(x, layer.weight, att, geo)))
    times = interleaved_times(parts, rounds=rounds, repeats=repeats, warmup=1, threads=threads)
    ms = {key: 1e3 * t.median for key, t in times.items()}
    info = machine_info("cpu", threads)
    rows = []
    for i, layer, x, options, auto in layers:
        static = ms[i, "static"]
        positions = output_positions(x, layer.weight, layer.geometry)  # per sample
        best = min(options, key=lambda s: ms[i, s])
        rows.append({"name": name, "conv": conv, "layer": i,
                     "shape": (f"{layer.in_channels}→{layer.out_channels} "
                               f"{layer.kernel_size[0]}×{layer.kernel_size[1]}/{layer.stride[0]} "
                               f"on {x.shape[-2]}×{x.shape[-1]}"),
                     "positions": positions,
                     "conv_macs": layer.weight[0].numel() * positions,
                     "mix_macs_x": 1 + layer.kernel_num / positions,
                     "static_ms": static, "attention_x": ms[i, "attention"] / static,
                     **{f"{s}_x": ms[i, s] / static for s in options},
                     "auto": auto, "auto_x": ms[i, auto] / static, "best": best,
                     "best_x": ms[i, best] / static, "rounds": rounds, **info})
    conv_macs = sum(r["conv_macs"] for r in rows)
    rows.append({"name": name, "conv": conv, "layer": "all", "shape": f"{len(rows)} dynamic layers",
                 "positions": "", "conv_macs": conv_macs,
                 "mix_macs_x": sum(r["mix_macs_x"] * r["conv_macs"] for r in rows) / conv_macs,
                 "static_ms": sum(r["static_ms"] for r in rows),
                 "attention_x": static_weighted(rows, "attention_x"),
                 "auto": "", "auto_x": static_weighted(rows, "auto_x"), "best": "",
                 "best_x": static_weighted(rows, "best_x"), "rounds": rounds, **info})
    return rows


TRAIN_BREAKDOWN_COLUMNS = ["conv", "layer", "shape", "mix_macs_x", "static_ms", "attention_x", "grouped_x",
                           "kfold_conv_x", "kfold_im2col_x", "sample_im2col_x", "kfold_matrix_x", "auto",
                           "auto_x", "best", "best_x"]


def run_train_breakdown(cases: List[str], convs: List[str], rounds: int = 10,
                        threads: Optional[int] = None, out_dir: Optional[Path] = None,
                        tag: str = "") -> List[Dict[str, object]]:
    """:func:`train_layer_breakdown` for each case and conv; print and write
    ``breakdown_train_cpu<tag>.*``."""
    rows: List[Dict[str, object]] = []
    for name in cases:
        for conv in convs:
            found = train_layer_breakdown(name, conv, rounds=rounds, threads=threads)
            total = found[-1]
            print(f"{name} {conv}: the dynamic layers' forward + backward ×{total['best_x']:.2f} "
                  f"static with the fastest strategy per layer, ×{total['auto_x']:.2f} with auto "
                  f"(attention branches alone ×{total['attention_x']:.2f})", flush=True)
            for r in found[:-1]:
                print(f"  {r['layer']:>3} {r['shape']:24s} static {r['static_ms']:6.2f} ms  "
                      f"attention ×{r['attention_x']:.2f}  auto {r['auto']} ×{r['auto_x']:.2f}  "
                      f"best {r['best']} ×{r['best_x']:.2f}", flush=True)
            rows += found
    columns = list(dict.fromkeys(key for r in rows for key in r))  # strategies differ by conv
    write_table([{c: r.get(c, "") for c in columns} for r in rows], figures_dir(folder=out_dir),
                f"breakdown_train_cpu{tag}",
                TRAIN_BREAKDOWN_COLUMNS,
                "Training step, where the time goes: each dynamic layer's forward + backward × a "
                "static convolution of its shape, by strategy (median of interleaved rounds in "
                "one process)")
    return rows
