"""The three sizes of run every notebook knows: ``smoke``, ``quick`` and ``paper``.

A notebook's ``parameters`` cell reads the profile from ``FMD_PROFILE`` (papermill can also pass
it); :func:`get_profile` turns the name into what each chapter needs: which training recipe and
datasets, how much smaller the ablation runs are, which benchmark cases to time.

``FMD_TINY=1`` runs a profile's code path at a tiny size: the same recipes, datasets, grids and
cells, with every run on :data:`TINY_RUNS` (a few images, one epoch, a narrower ResNet), one seed
(the smoke profile trains two, for the seed statistics) and the smoke profile's benchmark case
timed once, its runs and figures under ``build/tiny-<profile>-*`` (never over the committed ones).
The test suite runs the ``paper`` profile this way on fixture CIFAR files.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from .provenance import FIGURES, REPO_ROOT, PathLike
from .runs import RUNS_ROOT

PROFILE_NAMES = ("smoke", "quick", "paper")

# The sweeps' scale under the quick profile (chapters 4, 5 and 8, and chapter 3's ResNet-50s):
# 12,000 training images for 35 epochs of the quick recipe, about a third of a full-set run's cost.
# Checked by chapter 03 (ch03.scale_configs, scale_rows) against check runs at 1.5x the epochs.
QUICK_SWEEPS: Dict[str, Any] = dict(train_subset=12000, epochs=35)


@dataclass(frozen=True)
class Profile:
    """What one profile runs."""

    name: str
    recipe: str  # the fmd.train recipe of the main runs (chapter 3)
    datasets: Tuple[str, ...]  # datasets of the main runs; the first one is used by the ablations
    ablation: Dict[str, Any] = field(default_factory=dict)  # overrides that shrink ablation runs
    main: Dict[str, Any] = field(default_factory=dict)  # overrides of the main runs (chapter 3)
    # overrides of chapter 3's runs of one depth, over `main` (a deeper network at a smaller scale)
    main_by_depth: Dict[int, Dict[str, Any]] = field(default_factory=dict)
    seeds: Tuple[int, ...] = (0,)  # training seeds of each compared configuration (chapters 3, 5)
    seeds_by_depth: Dict[int, Tuple[int, ...]] = field(default_factory=dict)  # chapter 3, if not `seeds`
    bench_cases: Tuple[str, ...] = ()  # fmd.bench cases timed by chapter 7
    bench_repeats: int = 5
    backend_convs: Tuple[str, ...] = ("fmdconv", "odconv")  # timed on every backend by chapter 7
    gradcam_images: int = 8
    download: bool = False  # whether training may download a missing dataset
    scale: Dict[str, Any] = field(default_factory=dict)  # overrides of every run (FMD_TINY)


PROFILES = {
    "smoke": Profile(name="smoke", recipe="smoke", datasets=("synthetic",), ablation={"epochs": 1},
                     seeds=(0, 1), bench_cases=("r18w16-cifar-b1-infer",), bench_repeats=2,
                     backend_convs=("fmdconv",), gradcam_images=4),
    # quick: chapter 3's comparison on the quick recipe (all 60,000 training images, 23 epochs);
    # the sweeps (chapters 4, 5 and 8) on 12,000 images for 35 epochs (QUICK_SWEEPS), and chapter
    # 3's ResNet-50s there too, one seed (each costs about three ResNet-18s at that scale),
    # annealed over 15 epochs (as many steps as the full-set runs' 3).
    "quick": Profile(name="quick", recipe="quick", datasets=("fashion_mnist",),
                     ablation=dict(QUICK_SWEEPS), main_by_depth={50: dict(QUICK_SWEEPS, anneal_epochs=15.0)},
                     seeds=(0, 1, 2), seeds_by_depth={50: (0,)},
                     bench_cases=("r18-224-b1-infer", "r18w16-cifar-b32-train"), bench_repeats=5,
                     gradcam_images=8),
    "paper": Profile(name="paper", recipe="cifar", datasets=("cifar10", "cifar100"), seeds=(0, 1, 2),
                     bench_cases=("r18-224-b1-infer", "r18-cifar-b128-train", "r50-224-b1-infer",
                                  "r50-cifar-b32-train"), bench_repeats=20, gradcam_images=8,
                     download=True),
}


TINY_ENV = "FMD_TINY"
# Every run under FMD_TINY: one batch of 8 images (BatchNorm trains on it; Grad-CAM draws 8), one
# epoch, and width 16 (the quick recipe's). At the paper's width 64 the notebooks' 40-odd runs cost
# 270 MB of checkpoint each and chapters 01-04 alone took 10 minutes on two shared cores.
TINY_RUNS: Dict[str, Any] = {"train_subset": 8, "test_subset": 8, "epochs": 1, "width": 16}


def tiny() -> bool:
    """Whether ``FMD_TINY`` asks for the tiny size (set and not ``0``)."""
    return os.environ.get(TINY_ENV, "") not in ("", "0")


def get_profile(name: str) -> Profile:
    """The profile called ``name`` (at the tiny size under ``FMD_TINY``); a clear error for anything
    else."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {PROFILE_NAMES}")
    profile = PROFILES[name]
    if tiny():
        # Timing: chapter 7's cells as they are, on the smoke profile's benchmark case, once, and one
        # dynamic network per backend (each torch.compile build costs half a minute on two cores).
        profile = replace(profile, ablation={**profile.ablation, **TINY_RUNS}, scale=dict(TINY_RUNS),
                          seeds=profile.seeds[:1],
                          seeds_by_depth={d: s[:1] for d, s in profile.seeds_by_depth.items()},
                          bench_cases=PROFILES["smoke"].bench_cases, bench_repeats=1,
                          backend_convs=PROFILES["smoke"].backend_convs)
    return profile


def depth_seeds(profile: str, depth: int) -> Tuple[int, ...]:
    """The training seeds of chapter 3's networks of ``depth`` under ``profile``."""
    p = get_profile(profile)
    return p.seeds_by_depth.get(depth, p.seeds)


def main_config(profile: str, dataset: str = "", **overrides: Any):
    """The training config of a chapter-3 run under ``profile`` (fmd.train.TrainConfig)."""
    from .train import make_config

    p = get_profile(profile)
    depth_overrides = p.main_by_depth.get(overrides.get("depth", 18), {})
    return make_config(p.recipe, dataset=dataset or p.datasets[0],
                       **{**p.main, **depth_overrides, **p.scale, **overrides})


def ablation_config(profile: str, **overrides: Any):
    """The (smaller) training config of an ablation run under ``profile``."""
    from .train import make_config

    p = get_profile(profile)
    return make_config(p.recipe, dataset=p.datasets[0], **{**p.ablation, **overrides})


def runs_root(profile: str) -> Path:
    """Where a profile's run records go: ``data/runs/`` (committed), or ``build/smoke-runs/``
    (under ``FMD_TINY``: ``build/tiny-<profile>-runs/``)."""
    get_profile(profile)
    if tiny():
        return _tiny_dir(profile, "runs")
    return REPO_ROOT / "build" / "smoke-runs" if profile == "smoke" else RUNS_ROOT


def figures_dir(profile: Optional[str] = None, folder: Optional[PathLike] = None,
                changed: Optional[Mapping[str, Any]] = None) -> Path:
    """Where a figure or table goes; every writer of one asks here.

    ``folder`` (a notebook's ``figures_dir``, ``fmd.bench --out``; relative to the repository root)
    wins. Otherwise ``figures/`` (also for ``profile`` None: the benchmark's command line), except
    that the smoke profile writes to ``build/smoke-figures/`` and ``FMD_TINY`` to
    ``build/tiny-<profile>-figures/``: never over the committed figures. A notebook run whose
    parameters differ from the chapter's defaults (``changed``: name → value) writes into a folder
    beside those, named after them: ``papermill -p kernel_num 2`` → ``figures/kernel_num=2/``.
    """
    if folder is not None:
        return REPO_ROOT / Path(folder)
    if profile is None:
        base = FIGURES
    else:
        get_profile(profile)
        base = (_tiny_dir(profile, "figures") if tiny() else
                REPO_ROOT / "build" / "smoke-figures" if profile == "smoke" else FIGURES)
    return base / parameters_folder(changed) if changed else base


def parameters_folder(changed: Mapping[str, Any]) -> str:
    """A folder name for a run's changed parameters: ``depths=18-50,kernel_num=2``."""
    def text(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return "-".join(text(v) for v in value)
        return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(value))

    return ",".join(f"{name}={text(value)}" for name, value in sorted(changed.items()))


def _tiny_dir(profile: str, kind: str) -> Path:
    """Where a profile's ``kind`` ("runs" or "figures") goes under ``FMD_TINY``."""
    return REPO_ROOT / "build" / f"tiny-{profile}-{kind}"
