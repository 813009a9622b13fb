"""Figures of chapter 08 drawn from records alone: the speed-accuracy trade-off of the chapter-03 runs."""
from __future__ import annotations

from typing import Any, Dict, Mapping

import matplotlib.pyplot as plt

from . import conv_color, figure_legend, use_style
from ..labels import conv_label

Record = Dict[str, Any]


def speed_accuracy_figure(records: Mapping[str, Record], dataset: str = "") -> plt.Figure:
    """Top-1 of the chapter-3 runs against MACs per image and against the records' eval time."""
    use_style()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True)
    for ax, basis, scale, xlabel in (
            (axes[0], "macs", 1e3, "MACs per image (millions)"),
            (axes[1], "eval_time", 1.0, "evaluation time per image (ms, record, batched)")):
        for r in records.values():
            conv = r["config"]["conv"]
            x = r["speed_accuracy"][basis]["cost_per_image"] * scale
            y = r["final"]["test_top1"]
            ax.plot([x], [y], ls="none", marker="o", ms=9, color=conv_color(conv), label=conv_label(conv),
                    mec="white", mew=0.8, alpha=0.9)
        ax.set_xlabel(xlabel)
        ax.margins(x=0.15, y=0.2)
    axes[0].set_ylabel("test top-1 accuracy (%)")
    axes[0].set_title("accuracy against arithmetic")
    axes[1].set_title("accuracy against measured time")
    figure_legend(fig, axes[:1], y=0.95, title="Speed-accuracy trade-off of the chapter-3 runs"
                  + (f" — {dataset}" if dataset else "") + " (up and left is better)")
    return fig
