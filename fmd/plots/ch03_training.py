"""Figures of chapter 03: learning curves and temperature schedules, drawn from run records."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from . import conv_color, use_style
from ..labels import conv_label
from ..conv import CONVS

# Record markers of runs with the same temperatures lie on top of each other: nest them by size.
_MARKER_SIZES = {"dyconv": 11, "odconv": 8, "fmdconv": 5.5}

_LINE_WIDTHS = {"dyconv": 4.0, "odconv": 2.6, "fmdconv": 1.6}

_ROLES = {"kernel": "kernel attention (softmax over K): T_k",
          "gate": "gates (sigmoid: input, output, spatial): T_io"}


def learning_curves_figure(groups: Mapping[str, Sequence[Mapping[str, Any]]], title: str = ""
                           ) -> plt.Figure:
    """Test top-1 and training loss per epoch, one line per conv: the mean over its seeds (the
    records in ``groups[conv]``) with a band of ± one standard deviation where there are several."""
    use_style()
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    last = 1
    for conv, runs in groups.items():
        epochs = [h["epoch"] for h in runs[0]["history"]]
        last = max(last, len(epochs))
        style = dict(color=conv_color(conv), ls=CONVS[conv].linestyle, marker=CONVS[conv].marker,
                     ms=5, lw=1.8, label=f"{conv_label(conv)} ({len(runs)} seed{'s' * (len(runs) > 1)})")
        for ax, metric in ((acc_ax, "test_top1"), (loss_ax, "train_loss")):
            values = np.array([[h[metric] for h in r["history"]] for r in runs])
            mean = values.mean(axis=0)
            ax.plot(epochs, mean, **style)
            if len(runs) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(epochs, mean - std, mean + std, color=conv_color(conv), alpha=0.15, lw=0)
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        ax.set_xticks(range(1, last + 1) if last <= 12 else ax.get_xticks())
    acc_ax.set(ylabel="test top-1 accuracy (%)", title="test accuracy after each epoch (mean ± std)")
    loss_ax.set(ylabel="training loss (cross-entropy, nats)",
                title="training loss, mean over each epoch (mean ± std)")
    acc_ax.legend(fontsize=8.5, loc="lower right", framealpha=0.95)
    if title:
        fig.suptitle(title, fontweight="bold", fontsize=11)
    fig.tight_layout()
    return fig


def accuracy_figure(rows: Sequence[Mapping[str, Any]], seed_rows: Sequence[Mapping[str, Any]],
                    title: str = "") -> plt.Figure:
    """Final top-1 per conv, one panel per depth: each seed's run (dots) and the mean with ± one
    standard deviation (error bar), from ``ch03.accuracy_rows`` and ``ch03.seed_rows``."""
    use_style()
    depths = list(dict.fromkeys(r["depth"] for r in rows))
    fig, axes = plt.subplots(1, len(depths), figsize=(5.2 * len(depths), 4.0), squeeze=False)
    names = {conv_label(c): c for c in CONVS}
    for ax, depth in zip(axes[0], depths):
        group = [r for r in rows if r["depth"] == depth]
        for x, r in enumerate(group):
            color = conv_color(names[r["conv"]])
            seeds = [s["top-1 (%)"] for s in seed_rows if s["depth"] == depth and s["conv"] == r["conv"]]
            ax.plot([x] * len(seeds), seeds, ls="none", marker="o", ms=4, color=color, alpha=0.5)
            ax.errorbar(x + 0.18, r["top-1 (%)"], yerr=r["top-1 std (pp)"] or 0, fmt="s", ms=7,
                        capsize=5, color=color, mec="black", mew=0.6)
        static = next((r for r in group if r["conv"] == conv_label("static")), None)
        if static is not None:
            ax.axhline(static["top-1 (%)"], color="0.5", lw=0.8, ls=":")
        ax.set_xticks(range(len(group)), [r["conv"] for r in group], rotation=20)
        ax.set(title=f"ResNet-{depth}", ylabel="final test top-1 (%)")
    if title:
        fig.suptitle(title, fontweight="bold", fontsize=10.5)
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
            without.append(conv_label(conv))
            continue
        grid = np.linspace(0.0, r["config"]["epochs"], points)
        for ax, role in zip(axes, _ROLES):
            if role not in roles:
                continue
            color, style = conv_color(conv), CONVS[conv].linestyle
            ax.plot(grid, [roles[role](e) for e in grid], color=color, ls=style,
                    lw=_LINE_WIDTHS.get(conv, 2),
                    label=f"{conv_label(conv)}: {type(roles[role]).__name__}")
            stored = [(h["epoch"], h["temperatures"][role]) for h in r["history"]
                      if role in h.get("temperatures", {})]
            if stored:
                ax.plot(*zip(*stored), ls="none", marker=CONVS[conv].marker,
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


def pilot_figure(records: Mapping[str, Mapping[str, Any]], chosen: Sequence[str], title: str = ""
                 ) -> plt.Figure:
    """Test top-1 per epoch of each recipe-pilot run (``ch03.pilot_configs`` labels → records): the
    static network at each recipe tried (left), each conv at the recipes it was run (right; the
    runs of the chosen recipe, ``chosen`` labels, solid)."""
    use_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    statics = [(label, r) for label, r in records.items() if r["config"]["conv"] == "static"]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(statics)))
    for (label, r), color in zip(statics, colors):
        history = r["history"]
        left.plot([h["epoch"] for h in history], [h["test_top1"] for h in history], color=color,
                  marker="o", ms=3, lw=1.5, label=label.split(" · ", 1)[1])
    for label, r in records.items():
        conv, history, ours = r["config"]["conv"], r["history"], label in chosen
        if conv == "static" and not ours:
            continue
        right.plot([h["epoch"] for h in history], [h["test_top1"] for h in history],
                   color=conv_color(conv), marker=CONVS[conv].marker, ms=3.5, lw=1.8 if ours else 1.0,
                   ls="-" if ours else "--", label=label)
    for ax, what in ((left, "static ResNet-18 at each recipe tried"),
                     (right, "each conv: chosen recipe (solid) and other tries (dashed)")):
        ax.set(xlabel="epoch", title=what)
        ax.legend(fontsize=7.5, loc="lower right", framealpha=0.95)
    left.set_ylabel("test top-1 accuracy (%)")
    left.set_ylim(80, 95)
    if title:
        fig.suptitle(title, fontweight="bold", fontsize=11)
    fig.tight_layout()
    return fig
