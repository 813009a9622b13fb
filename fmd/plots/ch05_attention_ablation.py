"""Figures of chapter 05 (the paper's Figure 3): accuracy, IES and RCS per attention set."""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np

from . import conv_color, figure_legend, use_style
from ..labels import conv_label

# One colour per set: static and the full FMDConv keep the colours of every other chapter.
SET_COLORS = {"static": conv_color("static"), "none": "#bdbdbd", "input": "#66a61e",
              "kernel": "#7570b3", "output": "#e6ab02", "input+kernel": "#1b9e77",
              "input+output": "#a6761d", "kernel+output": "#1f78b4",
              "input+kernel+output": conv_color("fmdconv")}

SET_MARKERS = {"static": "s", "none": "o", "input": "^", "kernel": "v", "output": "<",
               "input+kernel": "D", "input+output": "P", "kernel+output": "X",
               "input+kernel+output": "*"}


def _set_label(name: str) -> str:
    if name == "static":
        return conv_label("static")
    return f"FMDConv: {name}" if name != "none" else "FMDConv: no attention"


def accuracy_figure(rows: Sequence[Mapping[str, Any]]) -> plt.Figure:
    """(3a) Top-1 per attention set, and top-1 against MACs and against batch-1 latency."""
    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6), gridspec_kw={"width_ratios": [1.15, 1, 1]})
    dots, by_macs, by_time = axes
    names = [r["set"] for r in rows]
    ys = np.arange(len(rows))[::-1]
    static = next((r for r in rows if r["set"] == "static"), None)
    for y, r in zip(ys, rows):
        dots.errorbar([r["top1 %"]], [y], xerr=r.get("top1 std") or 0, marker=SET_MARKERS[r["set"]],
                      ms=9, color=SET_COLORS[r["set"]], ls="none", capsize=4, elinewidth=1.2)
        dots.annotate(f"{r['top1 %']:.2f}", (r["top1 %"], y), xytext=(7, 7),
                      textcoords="offset points", va="center", fontsize=8)
    if static is not None:
        dots.axvline(static["top1 %"], color=conv_color("static"), ls=":", lw=1.2)
    dots.set_yticks(ys, names)
    dots.margins(x=0.25)
    seeds = max(r.get("seeds", 1) for r in rows)
    dots.set(xlabel="test top-1 accuracy (%)" + (f", mean ± std over {seeds} seeds" if seeds > 1 else ""),
             title="(a) accuracy of each attention set")
    for ax, key, xlabel in ((by_macs, "MMACs", "MACs per image (millions)"),
                            (by_time, "latency ms (b=1)", "batch-1 latency (ms per image)")):
        for r in rows:
            xerr = None
            if key.startswith("latency"):
                xerr = [[r[key] - r["latency min round ms"]], [r["latency max round ms"] - r[key]]]
            ax.errorbar([r[key]], [r["top1 %"]], xerr=xerr, marker=SET_MARKERS[r["set"]],
                        ms=11 if r["set"] == "input+kernel+output" else 8,
                        color=SET_COLORS[r["set"]], ls="none", capsize=2, elinewidth=1,
                        label=_set_label(r["set"]))
        ax.set(xlabel=xlabel, ylabel="test top-1 accuracy (%)")
        ax.margins(x=0.12, y=0.15)
    by_macs.set_title("accuracy against MACs")
    by_time.set_title("accuracy against measured time")
    fig.tight_layout()
    figure_legend(fig, [by_macs], y=0.0, ncol=5)
    return fig


def _score_figure(rows: Sequence[Mapping[str, Any]], panels: Sequence[Tuple[str, str, str]],
                  title: str, better: str) -> plt.Figure:
    use_style()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
    names = [r["set"] for r in rows]
    ys = np.arange(len(rows))[::-1]
    static = next((r for r in rows if r["set"] == "static"), None)
    for ax, (key, xlabel, subtitle) in zip(axes[0], panels):
        values = [r[key] for r in rows]
        ax.barh(ys, values, color=[SET_COLORS[n] for n in names], edgecolor="white", height=0.7)
        for y, v in zip(ys, values):
            ax.annotate(f"{v:.3g}", (v, y), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=8)
        if static is not None:
            ax.axvline(static[key], color=conv_color("static"), ls=":", lw=1.2)
        ax.set_yticks(ys, names)
        ax.margins(x=0.15)
        ax.set(xlabel=xlabel, title=subtitle)
    fig.suptitle(f"{title} ({better} is better; dotted line: static)", fontweight="bold",
                 fontsize=11)
    fig.tight_layout()
    return fig


def ies_figure(rows: Sequence[Mapping[str, Any]]) -> plt.Figure:
    """(3b) Inverse Efficiency Score per attention set, cost in MACs and in batch-1 latency."""
    return _score_figure(rows, [
        ("IES MMACs", "IES (million MACs per image / proportion correct)", "cost basis: MACs"),
        ("IES ms", "IES (ms per image / proportion correct)", "cost basis: batch-1 latency")],
        "(b) Inverse Efficiency Score", "lower")


def rcs_figure(rows: Sequence[Mapping[str, Any]]) -> plt.Figure:
    """(3c) Rate-Correct Score per attention set, cost in MACs and in batch-1 latency."""
    return _score_figure(rows, [
        ("RCS per MMAC", "RCS (correct images per million MACs)", "cost basis: MACs"),
        ("RCS per ms", "RCS (correct images per ms)", "cost basis: batch-1 latency")],
        "(c) Rate-Correct Score", "higher")
