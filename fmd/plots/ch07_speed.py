"""Figures of chapter 07: dynamic / static time and memory, strategy timing, the batch-1 breakdown."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import seaborn as sns

from . import conv_color, figure_legend, use_style
from ..engine import GROUPED_MIN_POSITIONS, KFOLD_IM2COL_MAX_POSITIONS
from ..labels import conv_label, machine_label, variant


def backend_figure(rows: Sequence[Mapping[str, Any]]) -> plt.Figure:
    """Per backend (rows of :func:`fmd.chapters.ch07_speed.backend_rows`): milliseconds per network
    on the left, dynamic / static on the right."""
    use_style()
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    convs = [c for c in dict.fromkeys(r["conv"] for r in rows)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    width = 0.8 / (len(convs) + 1)
    for i, conv in enumerate(["static"] + convs):
        xs = [j + (i - len(convs) / 2) * width for j in range(len(backends))]
        found = [next(r for r in rows if r["backend"] == b and conv in ("static", r["conv"]))
                 for b in backends]  # every row of a backend carries its static time
        ms = [r["static ms" if conv == "static" else "ms"] for r in found]
        left.bar(xs, ms, width * 0.92, color=conv_color(conv), label=conv_label(conv))
        if conv == "static":
            continue
        ratios = [r["time ×static"] for r in found]
        bars = right.bar(xs, ratios, width * 0.92, color=conv_color(conv))
        for bar, v in zip(bars, ratios):
            right.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), xytext=(0, 2),
                           textcoords="offset points", ha="center", va="bottom", fontsize=7)
    right.axhline(1.0, color=conv_color("static"), ls="--", lw=1.2)
    for ax, ylabel in ((left, "milliseconds per forward (median)"),
                       (right, "dynamic / static, same backend (×)")):
        ax.set_xticks(range(len(backends)), backends, fontsize=8, rotation=20, ha="right")
        ax.set_ylabel(ylabel)
    left.set_yscale("log")
    figure_legend(fig, [left], y=0.95, title=f"One network, several backends: {rows[0]['case']}, "
                  f"batch {rows[0]['batch']}")
    return fig


def case_label(row: Mapping[str, Any]) -> str:
    """A benchmark case in words: backbone, input, batch, inference or training."""
    width = "" if row["width"] == 64 else f", width {row['width']}"
    mode = {"infer": "inference", "train": "training step"}[row["mode"]]
    return (f"ResNet-{row['depth']}{width}\n{row['size']}×{row['size']}, batch {row['batch']}\n"
            f"{mode}")


def _ratio_figure(tables: Mapping[str, Sequence[Mapping[str, Any]]], key: str, ylabel: str,
                  title: str, absolute: str, unit_scale: float, unit: str) -> plt.Figure:
    use_style()
    n = len(tables)
    widths = [max(2, len({r["name"] for r in t})) for t in tables.values()]
    fig, axes = plt.subplots(1, n, figsize=(sum(3.4 * w for w in widths) + 0.6, 4.9), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, (name, table) in zip(axes[0], tables.items()):
        cases = list(dict.fromkeys(r["name"] for r in table))
        convs = [c for c in dict.fromkeys(map(variant, table)) if c != "static"]
        width = 0.8 / max(1, len(convs))
        for i, conv in enumerate(convs):
            xs, values = [], []
            for j, case in enumerate(cases):
                match = [r for r in table if r["name"] == case and variant(r) == conv]
                if match and match[0][key] == match[0][key]:  # NaN-safe
                    xs.append(j + (i - (len(convs) - 1) / 2) * width)
                    values.append(match[0][key])
            base = conv.split(" (")[0]
            bars = ax.bar(xs, values, width * 0.92, color=conv_color(base),
                          hatch="//" if conv != base else None,
                          label=conv_label(base) + conv[len(base):])
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
    figure_legend(fig, axes[0], y=0.95, title=title)
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
                      "KFOLD_IM2COL_MAX_POSITIONS": KFOLD_IM2COL_MAX_POSITIONS}
    use_style()
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    stages = list(dict.fromkeys((r["positions"], r["channels"], r["map"]) for r in rows))
    xs = {p: i for i, (p, _, _) in enumerate(stages)}
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    colors = dict(zip(strategies, sns.color_palette("colorblind", len(strategies))))
    for strategy in strategies:
        mine = [r for r in rows if r["strategy"] == strategy]
        ax.plot([xs[r["positions"]] for r in mine], [r["time ×static"] for r in mine], marker="o",
                lw=2, color=colors[strategy], label=strategy)
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
    ax.set_title(f"{conv_label(conv)}: each strategy, forward + backward at batch {batch}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", framealpha=0.95)
    fig.tight_layout()
    return fig

BREAKDOWN_PARTS = (("mix_x", "kernel mix", "#e6550d"), ("attention_x", "attention branches", "#756bb1"),
                   ("rest_x", "rest (gates, biases, conv differences)", "#9ecae1"))


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
    ax.set_yticks(range(len(bars)), [f"{conv_label(c)}\n{n}, bank {r['bank_mb']:.0f} MB"
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
