"""Figures of chapter 05 (which of FMDConv's attentions pay for their cost) and the runs behind them.

The paper's Figure 3 ablates FMDConv's three attentions and scores each combination by accuracy
and by two speed-accuracy scores, IES and RCS (:mod:`fmd.metrics`). Every number here comes from a
run record (:mod:`fmd.runs`) or from a batch-1 latency measured in the notebook run
(:func:`fmd.complexity.measure_latency`).
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from . import conv_color, label, use_style
from .. import profiles
from ..complexity import measure_latency
from ..conv import FMD_ATTENTIONS, FMDConv2d
from ..metrics import speed_accuracy
from ..train import TrainConfig, train_all

# The ablation: the static baseline, FMDConv with every attention off, then every non-empty subset
# of (input, kernel, output), in the order the figures list them.
ATTENTION_SETS: Dict[str, Optional[Tuple[str, ...]]] = {
    "static": None,
    "none": (),
    "input": ("input",),
    "kernel": ("kernel",),
    "output": ("output",),
    "input+kernel": ("input", "kernel"),
    "input+output": ("input", "output"),
    "kernel+output": ("kernel", "output"),
    "input+kernel+output": FMD_ATTENTIONS,
}
# One colour per set: static and the full FMDConv keep the colours of every other chapter.
SET_COLORS = {"static": conv_color("static"), "none": "#bdbdbd", "input": "#66a61e",
              "kernel": "#7570b3", "output": "#e6ab02", "input+kernel": "#1b9e77",
              "input+output": "#a6761d", "kernel+output": "#1f78b4",
              "input+kernel+output": conv_color("fmdconv")}
SET_MARKERS = {"static": "s", "none": "o", "input": "^", "kernel": "v", "output": "<",
               "input+kernel": "D", "input+output": "P", "kernel+output": "X",
               "input+kernel+output": "*"}


def ablation_configs(profile: str, sets: Optional[Sequence[str]] = None,
                     **overrides: Any) -> Dict[str, TrainConfig]:
    """The training config of each attention set (``fmd.profiles.ablation_config``).

    ``overrides`` go to every config (``None`` values are left out, so ``epochs=None`` keeps the
    profile's); the static baseline ignores FMDConv's knobs, so its run key does not see them.
    """
    names = list(ATTENTION_SETS) if sets is None else list(sets)
    unknown = [n for n in names if n not in ATTENTION_SETS]
    if unknown:
        raise ValueError(f"unknown attention set(s) {unknown}; choose from {tuple(ATTENTION_SETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    configs = {}
    for name in names:
        attentions = ATTENTION_SETS[name]
        if attentions is None:
            configs[name] = profiles.ablation_config(profile, conv="static", **given)
        else:
            configs[name] = profiles.ablation_config(profile, conv="fmdconv",
                                                     attentions=attentions, **given)
    return configs


def branch_rows(configs: Mapping[str, TrainConfig], channels: int = 16) -> List[Dict[str, Any]]:
    """Per set: the branches one of its block convolutions has, and how it mixes its K kernels."""
    rows = []
    for name, config in configs.items():
        row: Dict[str, Any] = {"set": name, "conv": config.conv,
                               "attentions": "—" if config.conv == "static"
                               else ", ".join(config.attentions) or "(none)"}
        options = config.conv_options()
        if config.conv == "static":
            row.update({"branches": "—", "kernels": 1, "kernel mix": "—"})
        else:
            layer = FMDConv2d(channels, channels, 3, 1, 1, **options)
            row["branches"] = ", ".join(n for n in ("trunk", "input_head", "output_head",
                                                    "kernel_attention")
                                        if getattr(layer, n) is not None) or "—"
            row["kernels"] = layer.kernel_num
            row["kernel mix"] = ("softmax per sample" if layer.kernel_attention is not None
                                 else "uniform mean")
        rows.append(row)
    return rows


def run_ablation(configs: Mapping[str, TrainConfig], runs_root: Any, *,
                 progress: bool = False) -> Dict[str, Dict[str, Any]]:
    """Train (or fetch from the run cache) every config; returns the records by set name.

    The chapter times the trained models, so a run whose checkpoint is missing is trained again
    here, before its record is read (``train_all(checkpoints=True)``).
    """
    return train_all(configs, runs_root, progress=progress, verbose=progress, checkpoints=True)


def measure_latencies(models: Mapping[str, nn.Module], input_size: Sequence[int], *,
                      repeats: int = 20, rounds: int = 5, warmup: int = 3,
                      threads: Optional[int] = None) -> Dict[str, Dict[str, float]]:
    """Batch-1 latency of every model in ms: ``rounds`` interleaved rounds of ``repeats`` timings.

    Each round times every model in turn (in a rotated order), so a change of load on the machine
    hits every model alike; a model's latency is the median of its per-round medians, with the
    smallest and largest round medians as its spread. ``threads`` sets torch's threads for the
    measurement and is restored afterwards.
    """
    previous = torch.get_num_threads()
    names = list(models)
    medians: Dict[str, List[float]] = {n: [] for n in names}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                result = measure_latency(models[name], input_size, warmup=warmup, repeats=repeats)
                medians[name].append(1000 * result["median"])
    finally:
        torch.set_num_threads(previous)
    return {n: {"median_ms": statistics.median(v), "min_round_ms": min(v),
                "max_round_ms": max(v), "samples": rounds * repeats} for n, v in medians.items()}


def ablation_rows(configs: Mapping[str, TrainConfig], records: Mapping[str, Mapping[str, Any]],
                  latencies: Mapping[str, Mapping[str, float]]) -> List[Dict[str, Any]]:
    """One row per set: accuracy, params, MACs, latency, and IES/RCS on both cost bases."""
    rows = []
    for name, config in configs.items():
        r = records[name]
        top1 = r["final"]["test_top1"]
        mmacs = r["macs"] / 1e6  # millions: the quick profile's networks are small
        ms = latencies[name]["median_ms"]
        by_macs, by_time = speed_accuracy(top1, mmacs), speed_accuracy(top1, ms)
        rows.append({
            "set": name, "conv": config.conv,
            "attentions": "—" if config.conv == "static" else "+".join(config.attentions) or "none",
            "top1 %": top1, "top5 %": r["final"]["test_top5"], "params": r["params"],
            "MMACs": round(r["macs"] / 1e6, 3),
            "latency ms (b=1)": ms, "latency min round ms": latencies[name]["min_round_ms"],
            "latency max round ms": latencies[name]["max_round_ms"],
            "eval ms/image (record, b=%d)" % r["speed"]["eval_batch_size"]:
                r["speed"]["eval_ms_per_image"],
            "IES MMACs": by_macs["ies"], "RCS per MMAC": by_macs["rcs"],
            "IES ms": by_time["ies"], "RCS per ms": by_time["rcs"],
            "train s": r["wall_time_s"], "run": r["name"],
        })
    return rows


# ---------------------------------------------------------------------------------------------
# Figures


def _legend_below(fig: plt.Figure, axes: Sequence[plt.Axes], ncol: int = 5) -> None:
    unique: Dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            unique.setdefault(text, handle)
    fig.legend(unique.values(), unique.keys(), loc="upper center", ncol=ncol, fontsize=8.5,
               frameon=False, bbox_to_anchor=(0.5, 0.0))


def _set_label(name: str) -> str:
    if name == "static":
        return label("static")
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
        dots.plot([r["top1 %"]], [y], marker=SET_MARKERS[r["set"]], ms=9,
                  color=SET_COLORS[r["set"]], ls="none")
        dots.annotate(f"{r['top1 %']:.2f}", (r["top1 %"], y), xytext=(7, 0),
                      textcoords="offset points", va="center", fontsize=8)
    if static is not None:
        dots.axvline(static["top1 %"], color=conv_color("static"), ls=":", lw=1.2)
    dots.set_yticks(ys, names)
    dots.margins(x=0.25)
    dots.set(xlabel="test top-1 accuracy (%)", title="(a) accuracy of each attention set")
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
    _legend_below(fig, [by_macs], ncol=5)
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
