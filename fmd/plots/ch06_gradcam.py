"""Figures of chapter 06 (where the models with different attentions look): Grad-CAM++ grids.

The heat maps come from :mod:`fmd.gradcam` (chapter 06 has no experiment code of its own: its
models are chapter 05's runs, :func:`fmd.chapters.ch05_attention_ablation.default_configs`); this
module only draws them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np

from . import use_style

if TYPE_CHECKING:  # fmd.gradcam loads trained models; drawing only needs its result types
    from ..gradcam import HeatMaps, ImageBatch


def _show(ax: plt.Axes, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image)


def gradcam_grid(images: ImageBatch, heat: Mapping[str, HeatMaps],
                 top1: Optional[Mapping[str, float]] = None, alpha: float = 0.5) -> plt.Figure:
    """Rows = images, columns = the image and one Grad-CAM++ overlay per model, with the class
    each model predicts (green when right, red when wrong) under the true class."""
    use_style()
    names = list(heat)
    rows, cols = len(images.targets), 1 + len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(1.75 * cols + 0.9, 1.95 * rows + 0.6),
                             squeeze=False)
    truth = images.names
    shown = None
    for i in range(rows):
        ax = axes[i, 0]
        _show(ax, images.display[i])
        ax.set_title(f"true: {truth[i]}", fontsize=8)
        for j, name in enumerate(names, start=1):
            ax = axes[i, j]
            _show(ax, images.display[i])
            shown = ax.imshow(heat[name].maps[i], cmap="jet", alpha=alpha, vmin=0, vmax=1)
            predicted = images.classes[int(heat[name].predicted[i])]
            right = int(heat[name].predicted[i]) == int(images.targets[i])
            ax.set_title(f"pred: {predicted} ({100 * float(heat[name].probabilities[i]):.0f}%)",
                         fontsize=8, color="#1a9850" if right else "#d73027")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    heads = ["image"] + [f"{n}\n(top-1 {top1[n]:.1f}%)" if top1 and n in top1 else n
                         for n in names]
    for j, head in enumerate(heads):
        axes[0, j].annotate(head, (0.5, 1.32), xycoords="axes fraction", ha="center",
                            va="bottom", fontsize=9.5, fontweight="bold")
    layer = {h.layer for h in heat.values()}
    explained = "the predicted class" if all(
        bool((h.explained == h.predicted).all()) for h in heat.values()) else "the true class"
    fig.suptitle(f"Grad-CAM++ at {', '.join(sorted(layer))}, explaining {explained} "
                 "(each map scaled to [0, 1])", fontweight="bold", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.93, 0.99), h_pad=1.6)
    if shown is not None:
        bar = fig.add_axes((0.945, 0.3, 0.015, 0.4))
        fig.colorbar(shown, cax=bar, label="Grad-CAM++ (per-map scale)")
    return fig


def heat_on_object_figure(shares: Mapping[str, Sequence[float]],
                          object_area: Optional[float] = None) -> plt.Figure:
    """Per model, the share of each image's heat on object pixels (dots) and its mean (bar);
    ``object_area`` (the object's share of the pixels: an evenly spread map) as a dashed line."""
    use_style()
    from . import conv_color

    names = list(shares)
    fig, ax = plt.subplots(figsize=(1.5 * len(names) + 2, 3.6))
    for x, name in enumerate(names):
        values = np.asarray(shares[name], dtype=float)
        ax.bar(x, values.mean(), width=0.6, color=conv_color("fmdconv"), alpha=0.35)
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(x + jitter, values, s=18, color=conv_color("fmdconv"), zorder=3)
        ax.annotate(f"{values.mean():.2f}", (x, values.mean()), xytext=(0, 4),
                    textcoords="offset points", ha="center", fontsize=8)
    if object_area is not None:
        ax.axhline(object_area, color="0.3", ls="--", lw=1.2,
                   label=f"a map spread evenly ({object_area:.2f})")
        ax.legend(loc="lower right", fontsize=8, framealpha=0.95)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.05)
    ax.set(ylabel="share of the heat map on the object", xlabel="model (attentions on)",
           title="How much of each map falls on the object (dots: images, bars: mean)")
    fig.tight_layout()
    return fig
