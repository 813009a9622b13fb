"""Chapter 04 (FMDConv's kernel temperature and number of kernels: the paper's Figure 5).

The grids and their defaults, the configs of every sweep (:func:`sweep_configs`, which chapter 08
calls too), the tables, and the kernel-attention entropy of the trained models. The runs are
FMDConv ablation runs (:func:`fmd.profiles.ablation_config`), fetched from the run cache or trained.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..conv import FMDConv2d
from ..data import get_datasets, make_loaders
from ..metrics import kernel_entropies
from ..profiles import ablation_config, runs_root
from ..train import TrainConfig, load_trained

# The paper's grids: initial T_k (preset "paper", T_k degraded by 3 per step) and K (preset
# "official"); the smoke profile (the tests) trains a subset of each.
TEMPERATURES = (1, 10, 34, 40, 52, 61, 100)
KERNEL_NUMS = (1, 2, 4, 8)
SMOKE_TEMPERATURES = (1, 34, 100)
SMOKE_KERNEL_NUMS = (1, 4)
REFERENCE_TEMPERATURE = 34.0  # the official preset's constant T_k: the reference run
KERNEL_NUM = 4                # K of the temperature sweep and of the reference run
GATE_TEMPERATURE = 30.0       # initial T_io of the input and output gates (annealed to 1)
SEEDS = (0, 1)                # training seeds of the reference run, to gauge seed noise


def temperature_grid(profile: str) -> List[float]:
    """The initial kernel temperatures the chapter sweeps under ``profile``."""
    return list(SMOKE_TEMPERATURES if profile == "smoke" else TEMPERATURES)


def kernel_grid(profile: str) -> List[int]:
    """The numbers of kernels K the chapter sweeps under ``profile``."""
    return list(SMOKE_KERNEL_NUMS if profile == "smoke" else KERNEL_NUMS)


# ---------------------------------------------------------------------------------------------
# Configs and runs


def _config(profile: str, dataset: Optional[str], epochs: Optional[int], **overrides: Any) -> TrainConfig:
    if epochs is not None:
        overrides["epochs"] = epochs
    config = ablation_config(profile, **overrides)
    # ablation_config always takes the profile's first dataset; another one is swapped in here.
    return config if dataset is None else dataclasses.replace(config, dataset=dataset)


def reference_config(profile: str, *, kernel_temperature: float = REFERENCE_TEMPERATURE,
                     kernel_num: int = KERNEL_NUM,
                     gate_temperature: float = GATE_TEMPERATURE, epochs: Optional[int] = None, seed: int = 0,
                     dataset: Optional[str] = None) -> TrainConfig:
    """The official FMDConv ablation run: T_k fixed (preset "official"), all attentions on."""
    return _config(profile, dataset, epochs, conv="fmdconv", preset="official",
                   kernel_temperature=kernel_temperature, kernel_num=kernel_num,
                   gate_temperature=gate_temperature, seed=seed)


def temperature_configs(profile: str, temperatures: Sequence[float], *, kernel_num: int = KERNEL_NUM,
                        gate_temperature: float = GATE_TEMPERATURE, epochs: Optional[int] = None,
                        seed: int = 0,
                        dataset: Optional[str] = None) -> Dict[float, TrainConfig]:
    """One run per initial T_k with the temperature-degraded kernel attention (preset "paper")."""
    return {float(t): _config(profile, dataset, epochs, conv="fmdconv", preset="paper",
                              kernel_temperature=t, kernel_num=kernel_num,
                              gate_temperature=gate_temperature, seed=seed)
            for t in temperatures}


def kernel_configs(profile: str, kernel_nums: Sequence[int], *,
                   kernel_temperature: float = REFERENCE_TEMPERATURE,
                   gate_temperature: float = GATE_TEMPERATURE, epochs: Optional[int] = None, seed: int = 0,
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


def sweep_configs(profile: str, *, temperatures: Optional[Sequence[float]] = None,
                  kernel_nums: Optional[Sequence[int]] = None,
                  reference_temperature: float = REFERENCE_TEMPERATURE, kernel_num: int = KERNEL_NUM,
                  gate_temperature: float = GATE_TEMPERATURE, seeds: Sequence[int] = SEEDS,
                  epochs: Optional[int] = None, seed: int = 0, dataset: Optional[str] = None
                  ) -> Dict[str, Any]:
    """Every run of the chapter: ``T_k`` and ``K`` sweeps, ``seeds`` of the reference, the
    ``reference`` run and the ``static`` baseline (grids: the profile's, unless given)."""
    common = dict(gate_temperature=gate_temperature, epochs=epochs, seed=seed, dataset=dataset)
    reference = reference_config(profile, kernel_temperature=reference_temperature,
                                 kernel_num=kernel_num, **common)
    return {
        "T_k": temperature_configs(profile, temperature_grid(profile)
                                   if temperatures is None else temperatures,
                                   kernel_num=kernel_num, **common),
        "K": kernel_configs(profile, kernel_grid(profile)
                            if kernel_nums is None else kernel_nums,
                            kernel_temperature=reference_temperature, **common),
        "seeds": seed_configs(reference, seeds),
        "reference": reference,
        "static": static_config(profile, epochs=epochs, seed=seed, dataset=dataset),
    }


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
