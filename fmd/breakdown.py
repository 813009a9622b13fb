"""Where a batch-1 CPU forward's time goes (``python -m fmd.bench --breakdown``): the kernel mix, the
attention branches and the rest of each dynamic network, against the static one, beside the floor
that one read of every kernel bank sets."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from .bench import CASES, _dynamic_layer_inputs, check_counts, write_table
from .conv import DYNAMIC_CONV_NAMES
from .timing import interleaved_times
from .engine import mix_kernels_reusing
from .models import ResNet
from .profiles import figures_dir
from .provenance import machine_info


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
