"""Figures of chapter 09: FMDConv's cost reduction against ODConv 4×, measured beside the claim."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from . import figure_legend, use_style

COMPUTATION_COLORS = {"any": "#4c72b0", "official (grouped)": "#dd8452", "fmd engine (auto)": "#55a868"}


def reduction_figure(rows: Sequence[Mapping[str, Any]], claimed: Mapping[str, float]) -> plt.Figure:
    """Per backbone, FMDConv's reduction against ODConv 4× for each cost and computation, with the
    abstract's claimed reduction as a dashed line (``claimed``: backbone → percent, published)."""
    use_style()
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    fig, axes = plt.subplots(1, len(backbones), figsize=(5.5 * len(backbones), 4.2), sharey=True,
                             squeeze=False)
    for ax, backbone in zip(axes[0], backbones):
        mine = [r for r in rows if r["backbone"] == backbone and r["cost"] != "parameters"]
        x = np.arange(len(mine))
        ax.bar(x, [r["FMDConv reduction vs ODConv (%)"] for r in mine],
               color=[COMPUTATION_COLORS[r["computation"]] for r in mine])
        ax.set_xticks(x, [f"{r['cost']}\n{r['computation']}" for r in mine], rotation=30, ha="right",
                      fontsize=8)
        ax.axhline(0, color="black", lw=0.8)
        if backbone in claimed:
            ax.axhline(claimed[backbone], color="crimson", ls="--", lw=1.2,
                       label=f"claimed for {backbone}: {claimed[backbone]:g}% (abstract, published)")
        ax.set_title(backbone)
    for computation in dict.fromkeys(r["computation"] for r in rows if r["cost"] != "parameters"):
        axes[0][0].add_patch(Rectangle((0, 0), 0, 0, color=COMPUTATION_COLORS[computation],
                                       label=f"computation: {computation}"))
    axes[0][0].set_ylabel("reduction vs ODConv 4× (%)")
    figure_legend(fig, list(axes[0]), y=0.94, ncol=3, top=0.84,
                  title="The cost claim, measured: 1 − FMDConv / ODConv 4× "
                        "(MACs; time per image at batch 1; time per training step)")
    return fig
