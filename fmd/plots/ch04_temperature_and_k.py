"""Figures of chapter 04 (the paper's Figure 5, the T_k schedules, the kernel-attention entropy)."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np

from . import conv_color, figure_legend, use_style
from ..labels import conv_label

Record = Dict[str, Any]

_PAPER, _OFFICIAL, _STATIC = conv_color("fmdconv"), "#1f78b4", conv_color("static")


def _top(r: Mapping[str, Any], metric: str) -> float:
    return r["final"][metric]


def _sweep_line(ax: plt.Axes, records: Mapping[Any, Mapping[str, Any]], metric: str, color: str,
                marker: str, text: str) -> None:
    """One sweep's ``metric`` against its swept value, each point labelled with its value."""
    xs = sorted(records)
    if not xs:
        return
    ys = [_top(records[x], metric) for x in xs]
    ax.plot(xs, ys, color=color, marker=marker, lw=2, ms=6, label=text)
    for x, y in zip(xs, ys):
        ax.annotate(f"{y:.2f}", (x, y), xytext=(0, 7), textcoords="offset points", ha="center",
                    fontsize=7, color=color)


def figure5(temperature_records: Mapping[float, Mapping[str, Any]],
            kernel_records: Mapping[int, Mapping[str, Any]],
            reference: Optional[Mapping[str, Any]] = None,
            seed_records: Sequence[Mapping[str, Any]] = (),
            static: Optional[Mapping[str, Any]] = None) -> plt.Figure:
    """The paper's Figure 5: top-1 and top-5 against the initial T_k (preset "paper", with the
    official fixed-T_k run as a reference) and against the number of kernels K (official)."""
    use_style()
    fig, axes = plt.subplots(2, 2, figsize=(11.5, 7.2), sharey="row")
    metrics = (("test_top1", "top-1 accuracy (%)"), ("test_top5", "top-5 accuracy (%)"))
    ref_label = (f"official: T_k fixed at {reference['config']['kernel_temperature']:g}, "
                 f"K = {reference['config']['kernel_num']}" if reference else "")
    for row, (metric, unit) in enumerate(metrics):
        t_ax, k_ax = axes[row]
        _sweep_line(t_ax, temperature_records, metric, _PAPER, "o",
                    "paper: T_k degraded (−3 per step) from T_k")
        _sweep_line(k_ax, kernel_records, metric, _OFFICIAL, "s", "official preset")
        for ax in (t_ax, k_ax):
            if reference is not None:
                value = _top(reference, metric)
                ax.axhline(value, color=_OFFICIAL, ls="--", lw=1.2, label=ref_label)
            if static is not None:
                ax.axhline(_top(static, metric), color=_STATIC, ls=":", lw=1.5,
                           label=f"{conv_label('static')} ResNet-18, same scale")
        if reference is not None:
            t_ax.plot([reference["config"]["kernel_temperature"]], [_top(reference, metric)],
                      ls="none", marker="*", ms=13, color=_OFFICIAL, mec="white", zorder=5)
        if seed_records:
            values = [_top(r, metric) for r in seed_records]
            for ax, x in ((t_ax, seed_records[0]["config"]["kernel_temperature"]),
                          (k_ax, seed_records[0]["config"]["kernel_num"])):
                ax.errorbar([x], [np.mean(values)], yerr=[[np.mean(values) - min(values)],
                                                          [max(values) - np.mean(values)]],
                            fmt="none", ecolor="black", elinewidth=1.4, capsize=5, zorder=6,
                            label=f"range over seeds {sorted(r['seed'] for r in seed_records)}")
                ax.plot([x] * len(values), values, ls="none", marker="_", ms=10, color="black",
                        zorder=6)
        t_ax.set(ylabel=unit)
        if row == 1:
            t_ax.set_xlabel("initial kernel temperature T_k")
            k_ax.set_xlabel("number of kernels K")
        k_ax.set_xscale("log", base=2)
        if kernel_records:
            k_ax.set_xticks(sorted(kernel_records), [str(k) for k in sorted(kernel_records)])
        k_ax.minorticks_off()
        t_ax.margins(y=0.25)
    axes[0, 0].set_title("(a) initial kernel temperature T_k (K = "
                         f"{next(iter(temperature_records.values()))['config']['kernel_num']})"
                         if temperature_records else "(a) initial kernel temperature T_k")
    axes[0, 1].set_title("(b) number of kernels K")
    figure_legend(fig, axes.ravel(), y=0.955, ncol=2, title="FMDConv ResNet-18: accuracy against the "
                  "kernel temperature and the number of kernels")
    return fig


def kernel_schedule_figure(configs: Mapping[float, Any],
                           reference: Optional[Any] = None, points: int = 2001) -> plt.Figure:
    """T_k over one ablation run for each initial T_k (preset "paper") and the official constant."""
    use_style()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    cmap = plt.cm.viridis
    ts = sorted(configs)
    for i, t in enumerate(ts):
        config = configs[t]
        grid = np.linspace(0.0, config.epochs, points)
        ax.plot(grid, [config.schedules()["kernel"](e) for e in grid], lw=1.8,
                color=cmap(0.85 * i / max(len(ts) - 1, 1)), label=f"paper, T_k = {t:g}",
                drawstyle="steps-post")
    if reference is not None:
        ax.axhline(reference.schedules()["kernel"](0.0), color=_OFFICIAL, ls="--", lw=1.5,
                   label=f"official, T_k = {reference.kernel_temperature:g} (constant)")
    epochs = max(c.epochs for c in configs.values())
    ax.set(xlabel="training progress (epochs)", ylabel="kernel temperature T_k",
           title="The kernel temperature over one ablation run", xlim=(0, epochs))
    ax.legend(fontsize=8, ncol=2, loc="upper right", framealpha=0.95)
    fig.tight_layout()
    return fig


def entropy_figure(rows: Sequence[Mapping[str, Any]]) -> plt.Figure:
    """Kernel-attention entropy of the trained models (share of the uniform mix's ln K), per layer:
    (a) against the initial T_k, (b) against K."""
    use_style()
    fig, (t_ax, k_ax) = plt.subplots(1, 2, figsize=(11.5, 4.3), sharey=True)

    def mean_by(group: str, key: str) -> Tuple[List[float], List[float], List[float], List[float]]:
        xs = sorted({r[key] for r in rows if r["group"] == group})
        means, lows, highs = [], [], []
        for x in xs:
            v = [r["entropy / ln K"] for r in rows if r["group"] == group and r[key] == x]
            means.append(float(np.mean(v)))
            lows.append(float(np.min(v)))
            highs.append(float(np.max(v)))
        return xs, means, lows, highs

    for ax, group, key, color, marker, text in (
            (t_ax, "temperature", "T_k start", _PAPER, "o", "paper preset (T_k degraded to 1)"),
            (k_ax, "kernels", "K", _OFFICIAL, "s", "official preset (T_k constant)")):
        xs, means, lows, highs = mean_by(group, key)
        if not xs:
            ax.text(0.5, 0.5, "no checkpoints", transform=ax.transAxes, ha="center", color="0.4")
            continue
        ax.fill_between(xs, lows, highs, color=color, alpha=0.15, lw=0,
                        label="range over the dynamic layers")
        ax.plot(xs, means, color=color, marker=marker, lw=2, label=f"{text}: mean over layers")
    reference = [r for r in rows if r["group"] == "reference"]
    if reference:
        values = [r["entropy / ln K"] for r in reference]
        t_ax.errorbar([reference[0]["T_k start"]], [np.mean(values)],
                      yerr=[[np.mean(values) - min(values)], [max(values) - np.mean(values)]],
                      fmt="*", ms=13, color=_OFFICIAL, capsize=4,
                      label=f"official, T_k fixed at {reference[0]['T_k start']:g}")
    for ax in (t_ax, k_ax):
        ax.axhline(1.0, color="0.4", ls=":", lw=1.2, label="uniform mix (entropy = ln K)")
        ax.set_ylim(-0.03, 1.08)
        ax.legend(fontsize=8, loc="lower right", framealpha=0.95)
    t_ax.set(xlabel="initial kernel temperature T_k",
             ylabel="entropy of π / ln K (1 = all kernels equal)",
             title="(a) kernel attention after training vs T_k")
    k_ax.set(xlabel="number of kernels K", title="(b) kernel attention after training vs K")
    k_ax.set_xscale("log", base=2)
    ks = sorted({r["K"] for r in rows if r["group"] == "kernels"})
    if ks:
        k_ax.set_xticks(ks, [str(k) for k in ks])
    k_ax.minorticks_off()
    fig.tight_layout()
    return fig
