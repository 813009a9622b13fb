"""Chapter 03 (training static and dynamic convolutions): the configs, the runs and the accuracy table.

Every number is read from the run records of :mod:`fmd.train` (one JSON file per run, found through
the run cache of :mod:`fmd.runs`). Chapter 08 looks the same runs up through :func:`main_configs`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..conv import CONVS as CONV_SPECS
from ..plots import label
from ..profiles import get_profile, main_config, runs_root
from ..train import Name, TrainConfig, train_all

Record = Dict[str, Any]

CONVS = tuple(CONV_SPECS)


# ---------------------------------------------------------------------------------------------
# Runs


def main_configs(profile: str, dataset: str = "", convs: Sequence[str] = CONVS, *,
                 kernel_num: int = 4, preset: str = "official", epochs: Optional[int] = None,
                 seed: int = 0, depth: int = 18) -> Dict[str, TrainConfig]:
    """The chapter-3 config of each conv (:func:`fmd.profiles.main_config`), same K for all."""
    overrides: Dict[str, Any] = {"kernel_num": kernel_num, "preset": preset, "seed": seed,
                                 "depth": depth}
    if epochs is not None:
        overrides["epochs"] = epochs
    return {conv: main_config(profile, dataset, conv=conv, **overrides) for conv in convs}


def run_all(configs: Mapping[Name, TrainConfig], profile: str, *, progress: bool = False,
            checkpoints: bool = False) -> Dict[Name, Record]:
    """Train each config under the profile's runs folder, or fetch it (:func:`fmd.train.train_all`;
    ``checkpoints``: retrain runs whose weights are missing, for chapters that load the models)."""
    return train_all(configs, runs_root(profile), progress=progress, checkpoints=checkpoints,
                     download=get_profile(profile).download)


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


def run_schedules(records: Mapping[str, Mapping[str, Any]]
                  ) -> Dict[str, Dict[str, Callable[[float], float]]]:
    """Each record's temperature schedules, rebuilt from the config it stores (for the figure)."""
    return {name: TrainConfig.from_dict(r["config"]).schedules() for name, r in records.items()}


# ---------------------------------------------------------------------------------------------
# Tables


def accuracy_rows(records: Mapping[str, Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One row per run: accuracy, Δ top-1 against static, size, MACs, speed and wall time."""
    base = records.get("static")
    rows = []
    for r in records.values():
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
