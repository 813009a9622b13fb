"""Figures of chapter 02: parameters and MACs per convolution, and per layer.

The rows come from :mod:`fmd.chapters.ch02_dynamic_conv_family`.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np

from . import conv_color, figure_legend, use_style
from ..labels import conv_label

Config = Tuple[str, Dict[str, Any]]  # (registered conv name, conv_options)


def _display(name: str, configs: Mapping[str, Config]) -> str:
    conv = configs[name][0]
    return conv_label(conv) + (f" {name.split('_')[-1]}" if "_" in name else "")


def params_macs_figure(rows: Sequence[Mapping[str, Any]], configs: Mapping[str, Config],
                       settings: Mapping[str, Tuple[str, int, int]],
                       published: Sequence[Mapping[str, Any]] = ()) -> plt.Figure:
    """Grouped bars of parameters (M) and MACs (G) per conv, arch and input setting.

    ``settings``: (stem, input size, classes) of each setting, as ``ch02.SETTINGS``.
    """
    use_style()
    shown = list(dict.fromkeys(r["setting"] for r in rows))
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    names = list(configs)
    fig, axes = plt.subplots(2, len(shown), figsize=(5.6 * len(shown), 7.4), squeeze=False)
    width = 0.8 / len(names)
    metrics = (("params_m", "params M (published)", "parameters (millions)", "{:.1f}"),
               ("gmacs", "GMACs (published)", "MACs per image (billions)", "{:.2f}"))
    for col, setting in enumerate(shown):
        _, size, classes = settings[setting]
        for row_i, (key, pub_key, unit, fmt) in enumerate(metrics):
            ax = axes[row_i, col]
            for i, name in enumerate(names):
                values = [next(r[key] for r in rows if r["setting"] == setting and r["arch"] == a
                               and r["conv"] == name) for a in archs]
                xs = np.arange(len(archs)) + (i - (len(names) - 1) / 2) * width
                bars = ax.bar(xs, values, width * 0.95, color=conv_color(configs[name][0]),
                              alpha=0.55 if name == "odconv_1x" else 1.0,
                              label=_display(name, configs), edgecolor="white", lw=0.5)
                for j, (bar, v) in enumerate(zip(bars, values)):
                    match = [p[pub_key] for p in published if p["arch"] == archs[j]
                             and p["our conv"] == name and p.get(pub_key) is not None]
                    top, marked = v, bool(match) and setting == "imagenet_224"
                    if marked:
                        ax.scatter([xs[j]], match[:1], marker="D", s=30, facecolor="white",
                                   edgecolor="black", lw=1.2, zorder=5,
                                   label="published (fmd.reference)")
                        top = max(v, match[0])
                    ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, top),
                                xytext=(0, 7 if marked else 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=6.5, rotation=90)
            ax.set_xticks(range(len(archs)), [a.replace("resnet", "ResNet-") for a in archs])
            ax.set_ylabel(unit)
            ax.margins(y=0.2)
            if row_i == 0:
                stem = {"imagenet": "ImageNet", "cifar": "CIFAR"}[settings[setting][0]]
                ax.set_title(f"{stem}-style stem, {size}×{size} "
                             f"input, {classes} classes", fontsize=10)
    figure_legend(fig, axes.ravel(), y=0.965, ncol=4, top=0.92,
                  title="Parameters and MACs per image of the dynamic-convolution family (ours: bars)")
    return fig


def layer_macs_figure(per_conv: Mapping[str, Sequence[Mapping[str, Any]]],
                      configs: Mapping[str, Config], focus: str) -> plt.Figure:
    """Per dynamic layer: ``focus``'s MACs split into conv / aggregation / attention, and every
    conv's overhead (aggregation + attention) as a percentage of the layer's convolution."""
    use_style()
    from matplotlib.ticker import FuncFormatter

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1.2]})
    dynamic = {r["layer"] for r in per_conv[focus] if r["type"] not in ("Conv2d", "Linear")}
    layers = [r["layer"] for r in per_conv[focus] if r["layer"] in dynamic]
    short = [n.replace("layer", "L").replace(".conv", ".c") for n in layers]
    xs = np.arange(len(layers))
    rows = {r["layer"]: r for r in per_conv[focus]}
    parts = {k: np.array([rows[n][k] for n in layers]) / 1e6
             for k in ("conv", "aggregation", "attention")}
    conv = configs[focus][0]
    left.bar(xs, parts["conv"], color="#9ecae1", label="convolution with the mixed kernel")
    left.bar(xs, parts["aggregation"], bottom=parts["conv"], color=conv_color(conv),
             label="aggregation Σ π_k W_k (+ biases)")
    left.bar(xs, parts["attention"], bottom=parts["conv"] + parts["aggregation"], color="0.15",
             label="attention branches (linear layers)")
    left.set_xticks(xs, short, rotation=90, fontsize=8)
    left.set(ylabel="MACs per image (millions)", xlabel="dynamic layer (stage.block.conv)",
             title=f"{_display(focus, configs)}: where each layer's MACs go")
    left.legend(fontsize=8, loc="lower right", framealpha=0.95)
    markers = dict(zip(configs, "xosD^v<>"))
    order = [n for n in per_conv if n != focus] + [focus]  # the focus drawn last, on top
    for name in order:
        rows = {r["layer"]: r for r in per_conv[name]}
        overhead = [100 * (rows[n]["aggregation"] + rows[n]["attention"]) / rows[n]["conv"]
                    for n in layers]
        right.plot(xs, overhead, marker=markers[name], color=conv_color(configs[name][0]),
                   lw=2.4 if name == focus else 1.4, ms=6 if name == focus else 4,
                   ls="--" if name == focus else "-", alpha=0.55 if name == "odconv_1x" else 1.0,
                   label=_display(name, configs))
    right.set_yscale("log")
    right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    right.set_xticks(xs, short, rotation=90, fontsize=8)
    right.set(ylabel="(aggregation + attention) / convolution", xlabel="dynamic layer (stage.block.conv)",
              title="overhead of each dynamic layer over its convolution")
    handles, labels_ = right.get_legend_handles_labels()
    right.legend(handles[::-1], labels_[::-1], fontsize=8, loc="upper left", framealpha=0.95)
    fig.tight_layout()
    return fig
