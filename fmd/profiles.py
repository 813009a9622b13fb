"""The three sizes of run every notebook knows: ``smoke``, ``quick`` and ``paper``.

A notebook's ``parameters`` cell reads the profile from ``FMD_PROFILE`` (papermill can also pass
it); :func:`get_profile` turns the name into what each chapter needs: which training recipe and
datasets, how much smaller the ablation runs are, which benchmark cases to time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Tuple

from .provenance import REPO_ROOT

PROFILE_NAMES = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class Profile:
    """What one profile runs."""

    name: str
    recipe: str  # the fmd.train recipe of the main runs (chapter 3)
    datasets: Tuple[str, ...]  # datasets of the main runs; the first one is used by the ablations
    ablation: Dict[str, Any] = field(default_factory=dict)  # overrides that shrink ablation runs
    bench_cases: Tuple[str, ...] = ()  # fmd.bench cases timed by chapter 7
    bench_repeats: int = 5
    gradcam_images: int = 8
    download: bool = False  # whether training may download a missing dataset


PROFILES = {
    "smoke": Profile("smoke", "smoke", ("synthetic",), {"epochs": 1},
                     ("r18w16-cifar-b1-infer",), 2, 4),
    "quick": Profile("quick", "quick", ("fashion_mnist",),
                     {"train_subset": 12000, "epochs": 3},
                     ("r18-224-b1-infer", "r18w16-cifar-b32-train"), 5, 8),
    "paper": Profile("paper", "cifar", ("cifar10", "cifar100"), {},
                     ("r18-224-b1-infer", "r18-cifar-b128-train", "r50-224-b1-infer",
                      "r50-cifar-b32-train"), 20, 8, download=True),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; a clear error for anything else."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {PROFILE_NAMES}")
    return PROFILES[name]


def main_config(profile: str, dataset: str = "", **overrides: Any):
    """The training config of a chapter-3 run under ``profile`` (fmd.train.TrainConfig)."""
    from .train import make_config

    p = get_profile(profile)
    return make_config(p.recipe, dataset=dataset or p.datasets[0], **overrides)


def ablation_config(profile: str, **overrides: Any):
    """The (smaller) training config of an ablation run under ``profile``."""
    from .train import make_config

    p = get_profile(profile)
    return make_config(p.recipe, dataset=p.datasets[0], **{**p.ablation, **overrides})


def runs_root(profile: str) -> Path:
    """Where a profile's run records go: ``data/runs/`` (committed), or ``build/smoke-runs/``."""
    get_profile(profile)
    return REPO_ROOT / ("build/smoke-runs" if profile == "smoke" else "data/runs")
