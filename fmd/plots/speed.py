"""Figures of chapter 07 (speed: dynamic against static convolution) and the tables behind them.

The benchmark tables come from :mod:`fmd.bench` (``figures/bench_<device><tag>.json``, one row per
case and conv, each with the machine it ran on); the strategy tables are read from the layers'
``last_strategy`` after a forward pass. Nothing here types in a timing.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import torch
from torch import nn

from . import conv_color, label, use_style
from ..complexity import median_time
from ..conv import (GROUPED_MIN_POSITIONS, STRATEGIES, UNFOLD_MAX_POSITIONS, DynamicConv2dBase,
                    applicable_strategies, choose_strategy, make_conv)
from ..models import ResNet

Config = Tuple[str, Dict[str, Any]]  # (registered conv name, conv_options)
STRATEGY_COLORS = {"grouped": "#1f78b4", "parallel": "#e6550d", "unfold": "#756bb1",
                   "shared": "#31a354", "auto": "black"}


def strategy_configs(kernel_num: int = 4, condconv_experts: int = 8) -> Dict[str, Config]:
    """The dynamic convs of the chapter, plus FMDConv without kernel attention (the shared path)."""
    return {
        "condconv": ("condconv", {"num_experts": condconv_experts}),
        "dyconv": ("dyconv", {"kernel_num": kernel_num}),
        "odconv": ("odconv", {"kernel_num": kernel_num}),
        "fmdconv": ("fmdconv", {"kernel_num": kernel_num}),
        "fmdconv, no kernel att.": ("fmdconv", {"kernel_num": kernel_num,
                                                "attentions": ("input", "output")}),
    }


# ---------------------------------------------------------------------------------------------
# Which strategy each layer can use and picks


def applicable_rows(configs: Mapping[str, Config], channels: int = 16) -> List[Dict[str, Any]]:
    """Per conv: the attentions it computes and the strategies that compute it exactly."""
    rows = []
    x = torch.randn(2, channels, 8, 8)
    for name, (conv, options) in configs.items():
        layer = make_conv(conv, channels, channels, 3, 1, 1, bias=False, **options).eval()
        with torch.no_grad():
            att = layer.attend(x)
        rows.append({"conv": name,
                     "attentions": "+".join(k for k in ("input", "kernel", "spatial", "output")
                                            if getattr(att, k) is not None),
                     "applicable strategies": ", ".join(applicable_strategies(att, layer.geometry)),
                     "auto at batch 1": choose_strategy(x[:1], layer.weight, att, layer.geometry),
                     "auto at batch 2, 8×8 map": choose_strategy(x, layer.weight, att,
                                                                 layer.geometry)})
    return rows


def strategy_rows(configs: Mapping[str, Config], batches: Sequence[int] = (1, 128),
                  depth: int = 18, stem: str = "cifar", size: int = 32, width: int = 64,
                  num_classes: int = 100, train: bool = True) -> List[Dict[str, Any]]:
    """One row per dynamic layer of a ResNet: its output map and the strategy each conv picks.

    The models live on PyTorch's meta device (shapes, no storage): ``choose_strategy`` reads only
    shapes, so a batch-128 training forward costs nothing here.
    """
    picks: Dict[str, Dict[int, Dict[str, str]]] = {}
    shapes: Dict[str, str] = {}
    for name, (conv, options) in configs.items():
        with torch.device("meta"):
            model = ResNet(depth, conv, num_classes, stem, width, **options)
        model.train(train)
        picks[name] = {}
        for batch in batches:
            hooks = []

            def keep_shape(module: nn.Module, inputs: Any, output: torch.Tensor, name: str) -> None:
                shapes.setdefault(name, tuple(output.shape[1:]))

            for layer_name, m in model.named_modules():
                if isinstance(m, DynamicConv2dBase):
                    hooks.append(m.register_forward_hook(
                        lambda mod, inp, out, n=layer_name: keep_shape(mod, inp, out, n)))
            with torch.set_grad_enabled(train):
                model(torch.empty(batch, 3, size, size, device="meta"))
            for h in hooks:
                h.remove()
            picks[name][batch] = {n: m.last_strategy for n, m in model.named_modules()
                                  if isinstance(m, DynamicConv2dBase)}
    rows = []
    for layer_name, (c, h, w) in shapes.items():
        row: Dict[str, Any] = {"layer": layer_name, "output": f"{c}×{h}×{w}",
                               "positions": h * w}
        for name in configs:
            row[name] = " / ".join(picks[name][b][layer_name] for b in batches)
        rows.append(row)
    return rows


def strategy_timing_rows(config: Config, stages: Sequence[Tuple[int, int]], batch: int = 32,
                         repeats: int = 5, warmup: int = 1, seed: int = 0,
                         threads: Optional[int] = None, rounds: int = 3) -> List[Dict[str, Any]]:
    """Time one training step (forward + backward) of a C→C 3×3 layer with each strategy.

    ``stages`` lists (channels, map size) pairs, e.g. the four stages of a CIFAR ResNet-18. Each
    dynamic strategy is timed beside a static ``nn.Conv2d`` of the same shape, in the same call,
    in ``rounds`` interleaved rounds (static, then each strategy) of ``repeats`` timings: a burst of
    load on a shared machine then hits one round of every layer rather than all of one layer. A
    layer's time is the median of its round medians.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    conv, options = config
    rows = []
    for channels, size in stages:
        torch.manual_seed(seed)
        x = torch.randn(batch, channels, size, size)
        static = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        probe = make_conv(conv, channels, channels, 3, 1, 1, bias=False, **options)
        with torch.no_grad():
            att = probe.attend(x)
        auto = choose_strategy(x, probe.weight, att, probe.geometry)
        candidates = [s for s in STRATEGIES[1:] if s in applicable_strategies(att, probe.geometry)]

        def step(layer: nn.Module) -> None:
            layer.zero_grad(set_to_none=True)
            layer(x).square().mean().backward()

        layers = {"static": static}
        layers.update({strategy: make_conv(conv, channels, channels, 3, 1, 1, bias=False,
                                           strategy=strategy, **options).train()
                       for strategy in candidates})
        times: Dict[str, List[float]] = {name: [] for name in layers}
        for _ in range(rounds):
            for name, layer in layers.items():
                times[name].append(median_time(lambda: step(layer), warmup=warmup,
                                               repeats=repeats)["median"])
        base = statistics.median(times["static"])
        for strategy in candidates:
            median = statistics.median(times[strategy])
            rows.append({"channels": channels, "map": f"{size}×{size}", "positions": size * size,
                         "batch": batch, "strategy": strategy, "auto picks": auto == strategy,
                         "static ms": 1e3 * base, "dynamic ms": 1e3 * median,
                         "time ×static": median / base})
    return rows


# ---------------------------------------------------------------------------------------------
# Benchmark tables


def load_bench_tables(folders: Iterable[Path], pattern: str = "bench_*.json"
                      ) -> Dict[str, List[Dict[str, Any]]]:
    """Every ``pattern`` file in ``folders`` (each file once), keyed by its file name."""
    tables: Dict[str, List[Dict[str, Any]]] = {}
    seen = set()
    for folder in folders:
        for path in sorted(Path(folder).glob(pattern)):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            rows = json.loads(path.read_text())
            if rows:
                tables[path.name] = rows
    return tables


def machine_label(rows: Sequence[Mapping[str, Any]]) -> str:
    """What a benchmark table was measured on: device, threads, torch and commit."""
    first = rows[0]
    device = first.get("gpu") or f"{first['device']} {first['cpu']}, {first['cores']} cores"
    return (f"{device}, {first['threads']} threads, torch {first['torch']}, "
            f"commit {first['commit']}")


def case_label(row: Mapping[str, Any]) -> str:
    """A benchmark case in words: backbone, input, batch, inference or training."""
    width = "" if row["width"] == 64 else f", width {row['width']}"
    mode = {"infer": "inference", "train": "training step"}[row["mode"]]
    return (f"ResNet-{row['depth']}{width}\n{row['size']}×{row['size']}, batch {row['batch']}\n"
            f"{mode}")


def bench_rows(tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """All tables' rows flattened for printing and saving, with their file and machine."""
    rows = []
    for name, table in tables.items():
        for r in table:
            rows.append({"table": name, "machine": machine_label(table), "case": r["name"],
                         "conv": r["conv"], "median ms": 1e3 * r["median_s"],
                         "time ×static": r["time_ratio"], "peak MB": r["peak_mb"],
                         "memory ×static": r["memory_ratio"], "strategies": r["strategies"]})
    return rows


def _ratio_figure(tables: Mapping[str, Sequence[Mapping[str, Any]]], key: str, ylabel: str,
                  title: str, absolute: str, unit_scale: float, unit: str) -> plt.Figure:
    use_style()
    n = len(tables)
    widths = [max(2, len({r["name"] for r in t})) for t in tables.values()]
    fig, axes = plt.subplots(1, n, figsize=(sum(3.4 * w for w in widths) + 0.6, 4.9), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, (name, table) in zip(axes[0], tables.items()):
        cases = list(dict.fromkeys(r["name"] for r in table))
        convs = [c for c in dict.fromkeys(r["conv"] for r in table) if c != "static"]
        width = 0.8 / max(1, len(convs))
        for i, conv in enumerate(convs):
            xs, values = [], []
            for j, case in enumerate(cases):
                match = [r for r in table if r["name"] == case and r["conv"] == conv]
                if match and match[0][key] == match[0][key]:  # NaN-safe
                    xs.append(j + (i - (len(convs) - 1) / 2) * width)
                    values.append(match[0][key])
            bars = ax.bar(xs, values, width * 0.92, color=conv_color(conv), label=label(conv))
            for bar, v in zip(bars, values):
                ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color=conv_color("static"), ls="--", lw=1.2, label="static = 1")
        ticks = []
        for case in cases:
            static = next(r for r in table if r["name"] == case and r["conv"] == "static")
            ticks.append(case_label(static) + f"\nstatic: {static[absolute] * unit_scale:.3g} {unit}")
        ax.set_xticks(range(len(cases)), ticks, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
        ax.set_title(f"{name}\n{machine_label(table)}", fontsize=8.5)
    handles: Dict[str, Any] = {}
    for ax in axes[0]:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    fig.suptitle(title, fontweight="bold", fontsize=11, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=len(handles), fontsize=8.5,
               frameon=False, bbox_to_anchor=(0.5, 0.95))
    return fig


def time_ratio_figure(tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> plt.Figure:
    """Dynamic / static time (median) per case and conv, one panel per benchmark table."""
    return _ratio_figure(tables, "time_ratio", "time of the dynamic network / static (×)",
                         "How much slower than the static ResNet (same case, same run)",
                         "median_s", 1e3, "ms")


def memory_ratio_figure(tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> plt.Figure:
    """Dynamic / static peak memory per case and conv, one panel per benchmark table."""
    return _ratio_figure(tables, "memory_ratio", "peak memory of the dynamic network / static (×)",
                         "How much more memory than the static ResNet (same case, same run)",
                         "peak_mb", 1.0, "MB")


def strategy_timing_figure(rows: Sequence[Mapping[str, Any]], conv: str,
                           thresholds: Optional[Mapping[str, int]] = None) -> plt.Figure:
    """Training-step time of one layer per strategy against the map size, with auto's choice.

    ``thresholds`` (name → output positions) are drawn as dotted lines between the last map with at
    least that many positions and the first with fewer; by default the engine's two thresholds.
    """
    if thresholds is None:
        thresholds = {"GROUPED_MIN_POSITIONS": GROUPED_MIN_POSITIONS,
                      "UNFOLD_MAX_POSITIONS": UNFOLD_MAX_POSITIONS}
    use_style()
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    stages = list(dict.fromkeys((r["positions"], r["channels"], r["map"]) for r in rows))
    xs = {p: i for i, (p, _, _) in enumerate(stages)}
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        mine = [r for r in rows if r["strategy"] == strategy]
        ax.plot([xs[r["positions"]] for r in mine], [r["time ×static"] for r in mine], marker="o",
                lw=2, color=STRATEGY_COLORS.get(strategy, "0.5"), label=strategy)
    picked = [r for r in rows if r["auto picks"]]
    ax.scatter([xs[r["positions"]] for r in picked], [r["time ×static"] for r in picked], s=160,
               facecolor="none", edgecolor="black", lw=1.5, zorder=5, label="auto's choice")
    ax.axhline(1.0, color=conv_color("static"), ls="--", lw=1.2, label="static = 1")
    for name, threshold in thresholds.items():
        above = [i for i, (p, _, _) in enumerate(stages) if p >= threshold]
        if above and above[-1] + 1 < len(stages):
            ax.axvline(above[-1] + 0.5, color="0.5", ls=":", lw=1.2)
            ax.annotate(f"{name} = {threshold} output positions", (above[-1] + 0.5, 0.98),
                        xycoords=("data", "axes fraction"), xytext=(-3, 0), textcoords="offset points",
                        rotation=90, ha="right", va="top", fontsize=7.5, color="0.35")
    ax.set_xticks(range(len(stages)), [f"{c}→{c} ch\n{m} map\n({p} positions)"
                                       for p, c, m in stages], fontsize=8)
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.set(ylabel="training-step time / static conv (×, log scale)",
           xlabel="one 3×3 layer per ResNet-18 stage (CIFAR stem)")
    batch = rows[0]["batch"]
    ax.set_title(f"{label(conv)}: each strategy, forward + backward at batch {batch}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", framealpha=0.95)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Batch-1 breakdown (fmd.bench.batch1_breakdown)

BREAKDOWN_PARTS = (("mix_x", "kernel mix", "#e6550d"), ("attention_x", "attention branches", "#756bb1"),
                   ("rest_x", "rest (gates, biases, conv differences)", "#9ecae1"))


def load_breakdown_tables(folders: Iterable[Path]) -> Dict[str, List[Dict[str, Any]]]:
    """Every ``breakdown_*.json`` that ``python -m fmd.bench --breakdown`` wrote in ``folders``."""
    return load_bench_tables(folders, "breakdown_*.json")


def breakdown_rows(tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """All breakdown tables' rows, rounded for printing and saving, with their file."""
    return [{"table": name, "case": r["name"], "conv": r["conv"],
             "static ms": round(r["static_ms"], 1), "dynamic ms": round(r["dynamic_ms"], 1),
             "time ×static": round(r["time_ratio"], 2), "mix ×": round(r["mix_x"], 2),
             "attention ×": round(r["attention_x"], 2), "rest ×": round(r["rest_x"], 2),
             "bank MB": round(r["bank_mb"]), "mix GB/s": round(r["mix_gb_s"], 1),
             "read GB/s": round(r["read_gb_s"], 1), "floor ×": round(r["floor_ratio"], 2)}
            for name, table in tables.items() for r in table]


def batch1_breakdown_figure(rows: Sequence[Mapping[str, Any]]) -> plt.Figure:
    """Dynamic / static batch-1 time as stacked bars: 1 (static) + mix + attention + rest.

    A black tick marks the memory floor, 1 + (one read of every bank) / static.
    """
    use_style()
    bars = [(r["name"], r["conv"]) for r in rows]
    fig, ax = plt.subplots(figsize=(8.0, 0.55 * len(bars) + 1.9))
    for y, r in enumerate(rows):
        ax.barh(y, 1.0, color=conv_color("static"), alpha=0.35,
                label="static forward = 1" if y == 0 else None)
        left = 1.0
        for key, text, color in BREAKDOWN_PARTS:
            width = max(0.0, r[key])  # a negative rest is noise; drawn as nothing
            ax.barh(y, width, left=left, color=color, label=text if y == 0 else None)
            left += width
        ax.annotate(f"×{r['time_ratio']:.2f}", (left, y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8)
        ax.plot([r["floor_ratio"]] * 2, [y - 0.42, y + 0.42], color="black", lw=2,
                label="floor: static + one read of the bank" if y == 0 else None)
    ax.set_yticks(range(len(bars)), [f"{label(c)}\n{n}, bank {r['bank_mb']:.0f} MB"
                                     for (n, c), r in zip(bars, rows)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(r["time_ratio"] for r in rows) * 1.15)
    ax.set_xlabel("batch-1 inference time / static network (×)")
    first = rows[0]
    ax.set_title(f"Where batch-1 time goes ({first['cpu']}, {first['threads']} threads, "
                 f"commit {first['commit']})", fontsize=9.5)
    ax.legend(fontsize=7.5, loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=3, frameon=False)
    fig.tight_layout()
    return fig
