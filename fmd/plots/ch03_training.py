"""Figures of chapter 03: learning curves and temperature schedules, drawn from run records."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import matplotlib.pyplot as plt
import numpy as np

from . import conv_color, label, use_style
from ..conv import CONVS as CONV_SPECS

# Record markers of runs with the same temperatures lie on top of each other: nest them by size.
_MARKER_SIZES = {"dyconv": 11, "odconv": 8, "fmdconv": 5.5}

_LINE_WIDTHS = {"dyconv": 4.0, "odconv": 2.6, "fmdconv": 1.6}

_ROLES = {"kernel": "kernel attention (softmax over K): T_k",
          "gate": "gates (sigmoid: input, output, spatial): T_io"}


def learning_curves_figure(records: Mapping[str, Mapping[str, Any]], dataset: str = "") -> plt.Figure:
    """Test top-1 and training loss per epoch, one line per conv, from the records' history."""
    use_style()
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in records.values():
        conv = r["config"]["conv"]
        epochs = [h["epoch"] for h in r["history"]]
        style = dict(color=conv_color(conv), ls=CONV_SPECS[conv].linestyle, marker=CONV_SPECS[conv].marker,
                     ms=5, lw=1.8, label=label(conv))
        acc_ax.plot(epochs, [h["test_top1"] for h in r["history"]], **style)
        loss_ax.plot(epochs, [h["train_loss"] for h in r["history"]], **style)
    last = max(len(r["history"]) for r in records.values())
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        ax.set_xticks(range(1, last + 1) if last <= 12 else ax.get_xticks())
    acc_ax.set(ylabel="test top-1 accuracy (%)", title="test accuracy after each epoch")
    loss_ax.set(ylabel="training loss (cross-entropy, nats)",
                title="training loss, mean over each epoch")
    acc_ax.legend(fontsize=8.5, loc="lower right", framealpha=0.95)
    if dataset:
        fig.suptitle(f"Learning curves of ResNet-18 with each convolution — {dataset}",
                     fontweight="bold", fontsize=11)
    fig.tight_layout()
    return fig


def temperature_figure(records: Mapping[str, Mapping[str, Any]],
                       schedules: Mapping[str, Mapping[str, Callable[[float], float]]],
                       points: int = 801) -> plt.Figure:
    """Each run's temperatures over training: its schedule (lines; ``schedules[name]``, as
    ``ch03.run_schedules`` gives them) and the values its record holds at the end of every epoch
    (markers), one panel per role."""
    use_style()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    without = []
    for name, r in records.items():
        conv, roles = r["config"]["conv"], schedules[name]
        if not roles:
            without.append(label(conv))
            continue
        grid = np.linspace(0.0, r["config"]["epochs"], points)
        for ax, role in zip(axes, _ROLES):
            if role not in roles:
                continue
            color, style = conv_color(conv), CONV_SPECS[conv].linestyle
            ax.plot(grid, [roles[role](e) for e in grid], color=color, ls=style,
                    lw=_LINE_WIDTHS.get(conv, 2),
                    label=f"{label(conv)}: {type(roles[role]).__name__}")
            stored = [(h["epoch"], h["temperatures"][role]) for h in r["history"]
                      if role in h.get("temperatures", {})]
            if stored:
                ax.plot(*zip(*stored), ls="none", marker=CONV_SPECS[conv].marker,
                        ms=_MARKER_SIZES.get(conv, 6),
                        mfc="white", mec=color, mew=1.5)
    epochs = max(len(r["history"]) for r in records.values())
    for ax, title in zip(axes, _ROLES.values()):
        ax.set(xlabel="training progress (epochs)", title=title, xlim=(-0.02 * epochs, epochs * 1.02))
        ax.set_ylim(bottom=-1.5)
        handles, texts = ax.get_legend_handles_labels()
        if handles:
            ax.plot([], [], ls="none", marker="o", mfc="white", mec="0.3",
                    label="record: value at the end of each epoch")
            ax.legend(fontsize=8, loc="center right", framealpha=0.95)
        else:
            ax.text(0.5, 0.5, "no run has this role", transform=ax.transAxes, ha="center",
                    color="0.4")
    axes[0].set_ylabel("temperature T")
    note = (f"no temperature: {', '.join(without)}" if without else "")
    fig.suptitle("Temperature schedules of the runs (lines: schedule, applied every iteration)"
                 + (f"; {note}" if note else ""), fontweight="bold", fontsize=10.5)
    fig.tight_layout()
    return fig
