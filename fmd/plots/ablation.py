"""Figures of chapter 04 (FMDConv's kernel temperature and number of kernels: the paper's Figure 5).

The runs are FMDConv ablation runs (:func:`fmd.profiles.ablation_config`), fetched from the run
cache or trained; every point of every figure is read from a run record or, for the attention
entropies, from the run's checkpoint. Chapter 08 redraws :func:`figure5` from the records alone.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from . import conv_color, label, use_style
from ..conv import FMDConv2d
from ..data import get_datasets, make_loaders
from ..profiles import ablation_config, runs_root
from ..train import TrainConfig, load_trained

Record = Dict[str, Any]
_PAPER, _OFFICIAL, _STATIC = conv_color("fmdconv"), "#1f78b4", conv_color("static")

# ---------------------------------------------------------------------------------------------
# Configs and runs


def _config(profile: str, dataset: Optional[str], epochs: Optional[int], **overrides: Any) -> TrainConfig:
    if epochs is not None:
        overrides["epochs"] = epochs
    config = ablation_config(profile, **overrides)
    # ablation_config always takes the profile's first dataset; another one is swapped in here.
    return config if dataset is None else dataclasses.replace(config, dataset=dataset)


def reference_config(profile: str, *, kernel_temperature: float = 34.0, kernel_num: int = 4,
                     gate_temperature: float = 30.0, epochs: Optional[int] = None, seed: int = 0,
                     dataset: Optional[str] = None) -> TrainConfig:
    """The official FMDConv ablation run: T_k fixed (preset "official"), all attentions on."""
    return _config(profile, dataset, epochs, conv="fmdconv", preset="official",
                   kernel_temperature=kernel_temperature, kernel_num=kernel_num,
                   gate_temperature=gate_temperature, seed=seed)


def temperature_configs(profile: str, temperatures: Sequence[float], *, kernel_num: int = 4,
                        gate_temperature: float = 30.0, epochs: Optional[int] = None, seed: int = 0,
                        dataset: Optional[str] = None) -> Dict[float, TrainConfig]:
    """One run per initial T_k with the temperature-degraded kernel attention (preset "paper")."""
    return {float(t): _config(profile, dataset, epochs, conv="fmdconv", preset="paper",
                              kernel_temperature=t, kernel_num=kernel_num,
                              gate_temperature=gate_temperature, seed=seed)
            for t in temperatures}


def kernel_configs(profile: str, kernel_nums: Sequence[int], *, kernel_temperature: float = 34.0,
                   gate_temperature: float = 30.0, epochs: Optional[int] = None, seed: int = 0,
                   dataset: Optional[str] = None) -> Dict[int, TrainConfig]:
    """One official-preset run per number of kernels K."""
    return {int(k): reference_config(profile, kernel_temperature=kernel_temperature, kernel_num=k,
                                     gate_temperature=gate_temperature, epochs=epochs, seed=seed,
                                     dataset=dataset)
            for k in kernel_nums}


def seed_configs(config: TrainConfig, seeds: Sequence[int]) -> Dict[int, TrainConfig]:
    """``config`` repeated with each training seed (the data subset stays fixed by ``data_seed``)."""
    return {int(s): dataclasses.replace(config, seed=int(s)) for s in seeds}


def static_config(profile: str, *, epochs: Optional[int] = None, seed: int = 0,
                  dataset: Optional[str] = None) -> TrainConfig:
    """The static ResNet at the same ablation scale (the same run chapter 05 uses)."""
    return _config(profile, dataset, epochs, conv="static", seed=seed)


def kernel_schedule_rows(configs: Mapping[float, TrainConfig], steps: int = 20000) -> List[Dict[str, Any]]:
    """Per initial T_k: the step schedule, and when (in epochs and as a share of the run) T_k hits 1."""
    rows = []
    for t, config in configs.items():
        schedule = config.schedules()["kernel"]
        grid = np.linspace(0.0, config.epochs, steps + 1)
        at_one = next((float(e) for e in grid if schedule(e) == 1.0), None)
        rows.append({"T_k start": t, "schedule": f"{type(schedule).__name__}(−{schedule.step:g} "
                                                 f"every {schedule.every:g} epochs)",
                     "T_k reaches 1 at epoch": None if at_one is None else round(at_one, 3),
                     "share of the run at T_k > 1 (%)": (None if at_one is None else
                                                         round(100 * at_one / config.epochs, 1))})
    return rows


# ---------------------------------------------------------------------------------------------
# Tables


def sweep_rows(sweeps: Mapping[str, Mapping[Hashable, Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """One row per run of each named sweep: its knobs, accuracy, final T_k, size and wall time."""
    rows = []
    for sweep, records in sweeps.items():
        for r in records.values():
            c = r["config"]
            rows.append({"sweep": sweep, "preset": c["preset"], "T_k start": c["kernel_temperature"],
                         "K": c["kernel_num"], "seed": c["seed"],
                         "top-1 (%)": round(r["final"]["test_top1"], 2),
                         "top-5 (%)": round(r["final"]["test_top5"], 2),
                         "best top-1 (%)": round(r["best_test_top1"], 2),
                         "final T_k": r["history"][-1]["temperatures"].get("kernel"),
                         "params": r["params"], "MACs": r["macs"],
                         "wall time (s)": round(r["wall_time_s"]), "run": r["name"]})
    return rows


def seed_spread(records: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """Mean and range (max − min) of top-1 and top-5 over runs that differ only in the seed."""
    out: Dict[str, float] = {"runs": len(records)}
    for metric in ("test_top1", "test_top5"):
        values = [r["final"][metric] for r in records]
        out[f"{metric} mean"] = float(np.mean(values))
        out[f"{metric} range"] = float(np.max(values) - np.min(values))
    return out


# ---------------------------------------------------------------------------------------------
# What the kernel attention of a trained model does


def load_model(config: TrainConfig, profile: str) -> Optional[nn.Module]:
    """The trained model of ``config`` from its checkpoint (eval mode), or None without one."""
    loaded = load_trained(config, runs_root(profile), retrain=False)
    return None if loaded is None else loaded[0]


def test_images(config: TrainConfig, count: int = 1000) -> Tensor:
    """The first ``count`` test images of the config's dataset, transformed as the run's test loader."""
    train_set, test_set = get_datasets(config.dataset, train_subset=config.train_subset,
                                       test_subset=config.test_subset, channels=config.channels,
                                       seed=config.data_seed)
    _, loader = make_loaders(train_set, test_set, config.batch_size, transform=config.transform,
                             eval_batch_size=config.eval_batch_size or 2 * config.batch_size,
                             device="cpu", seed=config.seed)
    batches, seen = [], 0
    for images, _ in loader:
        batches.append(images)
        seen += images.shape[0]
        if seen >= count:
            break
    return torch.cat(batches)[:count]


def kernel_entropies(model: nn.Module, x: Tensor) -> Dict[str, float]:
    """Mean entropy (nats) of each FMDConv layer's kernel attention π over the images ``x``."""
    found: Dict[str, List[Tensor]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, FMDConv2d) and module.kernel_attention is not None:
            def hook(_m: nn.Module, _inputs: Any, pi: Tensor, name: str = name) -> None:
                found.setdefault(name, []).append(-(pi * pi.clamp_min(1e-12).log()).sum(1))
            hooks.append(module.kernel_attention.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for chunk in x.split(256):
                model(chunk)
    finally:
        for h in hooks:
            h.remove()
    return {name: torch.cat(values).mean().item() for name, values in found.items()}


def entropy_rows(configs: Mapping[Hashable, TrainConfig], profile: str, x: Tensor,
                 group: str) -> List[Dict[str, Any]]:
    """Kernel-attention entropy per layer of each trained run whose checkpoint is present."""
    rows = []
    for name, config in configs.items():
        model = load_model(config, profile)
        if model is None:
            continue
        t_final = sorted({m.kernel_attention.head.temperature.item() for m in model.modules()
                          if isinstance(m, FMDConv2d) and m.kernel_attention is not None})
        for layer, entropy in kernel_entropies(model, x).items():
            rows.append({"group": group, "run": name, "preset": config.preset,
                         "T_k start": config.kernel_temperature, "T_k final": t_final[0],
                         "K": config.kernel_num, "layer": layer, "entropy (nats)": entropy,
                         "entropy / ln K": entropy / math.log(config.kernel_num)
                         if config.kernel_num > 1 else None})
    return rows


# ---------------------------------------------------------------------------------------------
# Figures


def _top(r: Mapping[str, Any], metric: str) -> float:
    return r["final"][metric]


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
        if temperature_records:
            ts = sorted(temperature_records)
            t_ax.plot(ts, [_top(temperature_records[t], metric) for t in ts], color=_PAPER,
                      marker="o", lw=2, ms=6, label="paper: T_k degraded (−3 per step) from T_k")
            for t in ts:
                t_ax.annotate(f"{_top(temperature_records[t], metric):.2f}",
                              (t, _top(temperature_records[t], metric)), xytext=(0, 7),
                              textcoords="offset points", ha="center", fontsize=7, color=_PAPER)
        if kernel_records:
            ks = sorted(kernel_records)
            k_ax.plot(ks, [_top(kernel_records[k], metric) for k in ks], color=_OFFICIAL,
                      marker="s", lw=2, ms=6, label="official preset")
            for k in ks:
                k_ax.annotate(f"{_top(kernel_records[k], metric):.2f}",
                              (k, _top(kernel_records[k], metric)), xytext=(0, 7),
                              textcoords="offset points", ha="center", fontsize=7, color=_OFFICIAL)
        for ax in (t_ax, k_ax):
            if reference is not None:
                value = _top(reference, metric)
                ax.axhline(value, color=_OFFICIAL, ls="--", lw=1.2, label=ref_label)
            if static is not None:
                ax.axhline(_top(static, metric), color=_STATIC, ls=":", lw=1.5,
                           label=f"{label('static')} ResNet-18, same scale")
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
    handles: Dict[str, Any] = {}
    for ax in axes.ravel():
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    fig.suptitle("FMDConv ResNet-18: accuracy against the kernel temperature and the number of kernels",
                 fontweight="bold", fontsize=11, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=2, fontsize=8.5,
               frameon=False, bbox_to_anchor=(0.5, 0.955))
    return fig


def kernel_schedule_figure(configs: Mapping[float, TrainConfig],
                           reference: Optional[TrainConfig] = None, points: int = 2001) -> plt.Figure:
    """T_k over one ablation run for each initial T_k (preset "paper") and the official constant."""
    use_style()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    cmap = plt.cm.viridis
    ts = sorted(configs)
    for i, t in enumerate(ts):
        config = configs[t]
        grid = np.linspace(0.0, config.epochs, points)
        ax.plot(grid, [config.schedules()["kernel"](e) for e in grid], lw=1.8,
                color=cmap(0.85 * i / max(len(ts) - 1, 1)), label=f"paper, T_k = {t:g}", drawstyle="steps-post")
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
