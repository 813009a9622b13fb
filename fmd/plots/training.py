"""Figures of chapter 03 (training static and dynamic convolutions) and the helpers behind them.

Every number is read from the run records of :mod:`fmd.train` (one JSON file per run, found through
the run cache of :mod:`fmd.runs`); the temperature curves are the runs' own schedules, evaluated from
the configs stored in the records. Chapter 08 redraws these figures from the records alone.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np

from . import conv_color, label, use_style
from ..conv import CONVS as CONV_SPECS
from ..profiles import main_config, runs_root
from ..train import Name, TrainConfig, train_all

Record = Dict[str, Any]
CONVS = tuple(CONV_SPECS)
# Record markers of runs with the same temperatures lie on top of each other: nest them by size.
_MARKER_SIZES = {"dyconv": 11, "odconv": 8, "fmdconv": 5.5}
_LINE_WIDTHS = {"dyconv": 4.0, "odconv": 2.6, "fmdconv": 1.6}
_ROLES = {"kernel": "kernel attention (softmax over K): T_k",
          "gate": "gates (sigmoid: input, output, spatial): T_io"}

# ---------------------------------------------------------------------------------------------
# Runs


def main_configs(profile: str, dataset: str = "", convs: Sequence[str] = CONVS, *,
                 kernel_num: int = 4, preset: str = "official", epochs: Optional[int] = None,
                 seed: int = 0) -> Dict[str, TrainConfig]:
    """The chapter-3 config of each conv (:func:`fmd.profiles.main_config`), same K for all."""
    overrides: Dict[str, Any] = {"kernel_num": kernel_num, "preset": preset, "seed": seed}
    if epochs is not None:
        overrides["epochs"] = epochs
    return {conv: main_config(profile, dataset, conv=conv, **overrides) for conv in convs}


def run_all(configs: Mapping[Name, TrainConfig], profile: str, *, progress: bool = False,
            checkpoints: bool = False) -> Dict[Name, Record]:
    """Train each config under the profile's runs folder, or fetch it (:func:`fmd.train.train_all`;
    ``checkpoints``: retrain runs whose weights are missing, for chapters that load the models)."""
    return train_all(configs, runs_root(profile), progress=progress, checkpoints=checkpoints)


def key_fields(config: TrainConfig) -> List[str]:
    """The conv-specific fields that enter this config's run key (the rest is shared by all convs)."""
    shared = dataclasses.replace(config, conv="static").identity()
    return [name for name in config.identity() if name not in shared]


def record_matches(record: Mapping[str, Any], config: TrainConfig) -> bool:
    """Whether ``record`` is the finished run of ``config``: same key and one row per epoch."""
    return record["key"] == config.key() and len(record["history"]) == config.epochs


def schedule_summary(config: TrainConfig) -> Dict[str, str]:
    """Each temperature role of the run's schedule as text: the schedule type, start and end value."""
    out = {}
    for role, schedule in config.schedules().items():
        start, end = schedule(0.0), schedule(float(config.epochs))
        kind = type(schedule).__name__
        out[role] = (f"{kind}, constant {start:g}" if start == end
                     else f"{kind}, {start:g} → {end:g}")
    return out


def anneal_end(config: TrainConfig, role: str, steps: int = 20000) -> Optional[float]:
    """The first epoch from which the role's temperature stays at its final value (None: no schedule)."""
    schedule = config.schedules().get(role)
    if schedule is None:
        return None
    grid = np.linspace(0.0, config.epochs, steps + 1)
    values = np.array([schedule(e) for e in grid])
    changing = np.flatnonzero(~np.isclose(values, values[-1]))
    return 0.0 if changing.size == 0 else float(grid[changing[-1] + 1])


# ---------------------------------------------------------------------------------------------
# Tables


def accuracy_rows(records: Mapping[str, Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One row per run: accuracy, Δ top-1 against static, size, MACs, speed and wall time."""
    base = records.get("static")
    rows = []
    for name, r in records.items():
        conv = r["config"]["conv"]
        top1 = r["final"]["test_top1"]
        rows.append({
            "conv": label(conv), "K": 1 if conv == "static" else r["config"]["kernel_num"],
            "top-1 (%)": round(top1, 2), "top-5 (%)": round(r["final"]["test_top5"], 2),
            "Δ top-1 vs static (pp)": (None if base is None else
                                       round(top1 - base["final"]["test_top1"], 2)),
            "best top-1 (%)": round(r["best_test_top1"], 2),
            "params": r["params"], "MACs": r["macs"],
            "train images/s": round(r["speed"]["train_images_per_s"], 1),
            "eval ms/image": round(r["speed"]["eval_ms_per_image"], 3),
            "wall time (min)": round(r["wall_time_s"] / 60, 1),
            "epochs": len(r["history"]), "run": r["name"],
        })
    return rows


# ---------------------------------------------------------------------------------------------
# Figures


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


def temperature_figure(records: Mapping[str, Mapping[str, Any]], points: int = 801) -> plt.Figure:
    """Each run's temperatures over training: its schedule (lines) and the values its record holds
    at the end of every epoch (markers), one panel per role."""
    use_style()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    without = []
    for r in records.values():
        config = TrainConfig.from_dict(r["config"])
        schedules = config.schedules()
        if not schedules:
            without.append(label(config.conv))
            continue
        grid = np.linspace(0.0, config.epochs, points)
        for ax, role in zip(axes, _ROLES):
            if role not in schedules:
                continue
            color, style = conv_color(config.conv), CONV_SPECS[config.conv].linestyle
            ax.plot(grid, [schedules[role](e) for e in grid], color=color, ls=style,
                    lw=_LINE_WIDTHS.get(config.conv, 2),
                    label=f"{label(config.conv)}: {type(schedules[role]).__name__}")
            stored = [(h["epoch"], h["temperatures"][role]) for h in r["history"]
                      if role in h.get("temperatures", {})]
            if stored:
                ax.plot(*zip(*stored), ls="none", marker=CONV_SPECS[config.conv].marker,
                        ms=_MARKER_SIZES.get(config.conv, 6),
                        mfc="white", mec=color, mew=1.5)
    epochs = max(len(r["history"]) for r in records.values())
    for ax, (role, title) in zip(axes, _ROLES.items()):
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
