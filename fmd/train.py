"""The training loop: recipes, LR and temperature schedules, checkpoints, resume and run records.

``train(config)`` trains one ResNet on one dataset and returns its run record (see :mod:`fmd.runs`).
A run is identified by its configuration: asking again for a finished run returns the stored record
at no cost, unless ``force=True``. Every epoch ends with an atomic checkpoint, so an interrupted
run continues with ``resume=True`` and ends with the same weights and metrics, on the CPU, as an
uninterrupted one.

Command line: ``python -m fmd.train --recipe quick --conv fmdconv`` (``--help`` lists every knob).
"""
from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import io
import json
import math
import os
import statistics
import sys
import time
import typing
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import (Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, TypeVar,
                    Union)

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import cli, distributed, runs
from .provenance import atomic_write_bytes, describe_device, git_state, library_versions
from .conv import CONVS, FMD_ATTENTIONS, FMD_PRESETS, default_schedules
from .data import DATASETS, TRANSFORMS, BatchLoader, check_channels, get_datasets, make_loaders
from .metrics import kernel_entropies, speed_accuracy, topk_correct
from .models import DEPTHS, INITS, STEMS, ResNet
from .temperature import apply_schedules

PathLike = Union[str, Path]
Name = TypeVar("Name", bound=Hashable)
LR_SCHEDULES = ("step", "cosine")
CHECKPOINT_FORMAT = 1
ENTROPY_IMAGES = 1000  # test images on which a finished run's kernel attentions are measured
WEIGHTS_NAME = "weights.fp16.pt"  # a finished run's weights in half precision, small enough to commit
# Every progress line starts with this tag ("[train]", or "[run i/n]" inside train_all), which is
# how fmd.reproduce picks the training lines out of a notebook's output for its terminal.
PROGRESS_TAG = contextvars.ContextVar("PROGRESS_TAG", default="[train]")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: unreadable, from another configuration, or in the way."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


# The knobs some conv reads (fmd.conv.ConvSpec.run_fields); those a run's conv does not read stay
# out of its key, so a static baseline is shared by every FMDConv ablation.
_ALL_CONV_FIELDS = {f for spec in CONVS.values() for f in spec.run_fields}


@dataclass
class TrainConfig:
    """Every knob of a training run; two runs with equal configs compute the same thing."""

    recipe: str = "custom"  # the named recipe this config started from (a label)
    dataset: str = "fashion_mnist"
    channels: Optional[int] = None  # input channels; None: the dataset's own (Fashion-MNIST 1)
    transform: str = "cifar"  # "cifar" (32×32, pad-crop + flip), "imagenet" (224), "none"
    train_subset: Optional[int] = None  # a seeded random subset of the training images
    test_subset: Optional[int] = None
    data_seed: int = 0  # picks the subsets and the synthetic set; fixed across training seeds
    conv: str = "static"
    depth: int = 18
    stem: str = "cifar"
    width: int = 64
    init: str = "official"  # "official": as the official code draws weights; "torch": PyTorch's
    kernel_num: int = 4  # K kernels (CondConv: experts; its paper uses 8)
    preset: str = "official"  # FMDConv temperatures: "official" (T_k fixed) or "paper" (T_k decays)
    kernel_temperature: float = 34.0
    gate_temperature: float = 30.0
    attentions: Tuple[str, ...] = FMD_ATTENTIONS  # FMDConv branches (ablations switch some off)
    anneal_epochs: float = 10.0  # temperatures reach their end value after this many epochs
    epochs: int = 100
    batch_size: int = 128
    eval_batch_size: Optional[int] = None  # None: 2 × batch_size
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    lr_schedule: str = "step"  # "step" (× gamma at each milestone epoch) or "cosine" (per iteration)
    warmup_epochs: float = 0.0  # the LR rises linearly from 0 over this many epochs (per iteration)
    label_smoothing: float = 0.0  # of the training loss (F.cross_entropy's); evaluation has none
    milestones: Tuple[int, ...] = (30, 60, 90)
    gamma: float = 0.1
    seed: int = 0
    threads: Optional[int] = None  # torch.set_num_threads; None: leave torch's default
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:N"
    # Added after the committed runs: in a run's key only away from their defaults (_LATER_FIELDS).
    amp: str = "none"  # autocast: "none" (fp32), "bf16", "fp16" (with a GradScaler)
    channels_last: bool = False  # the model and its inputs in channels_last memory format
    compile: bool = False  # torch.compile the training forward
    world_size: int = 1  # processes (one per device) of a torchrun run; batch_size is per device
    sync_bn: bool = False  # SyncBatchNorm across the processes (attention trunks too)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        self._validate()
        # One order, no repeats: the same branches are the same run (and the same key).
        self.attentions = tuple(a for a in FMD_ATTENTIONS if a in self.attentions)

    def _validate(self) -> None:
        for name, allowed in _field_choices().items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {allowed}")
        unknown = set(self.attentions) - set(FMD_ATTENTIONS)
        if unknown:
            raise ValueError(f"attentions must be a subset of {FMD_ATTENTIONS}, got {self.attentions}")
        for name in ("width", "kernel_num", "epochs", "world_size"):
            self._require(name, getattr(self, name) >= 1, "a positive integer")
        for name in ("channels", "test_subset", "eval_batch_size", "threads"):
            value = getattr(self, name)
            self._require(name, value is None or value >= 1, "a positive integer or None")
        # A training batch of one image breaks BatchNorm (one value per channel on the last
        # stage's 1×1 maps): refused here, before any work (the loader drops a short last batch).
        self._require("batch_size", self.batch_size >= 2, "at least 2 (BatchNorm trains on batches)")
        self._require("train_subset", self.train_subset is None or self.train_subset >= 2,
                      "at least 2 images or None (BatchNorm trains on batches)")
        check_channels(self.dataset, self.channels)
        if self.dataset == "imagenet" and self.transform != "imagenet":
            raise ValueError(f"transform must be 'imagenet' for dataset imagenet (ImageFolder images "
                             f"differ in size), got {self.transform!r}")
        self._require("sync_bn", not self.sync_bn or self.world_size > 1,
                      "False for a single process (SyncBatchNorm needs world_size > 1)")
        self._require("lr", self.lr > 0 and math.isfinite(self.lr), "a positive number")
        self._require("momentum", 0 <= self.momentum < 1, "in [0, 1)")
        self._require("weight_decay", self.weight_decay >= 0, "non-negative")
        self._require("gamma", 0 < self.gamma <= 1, "in (0, 1]")
        self._require("anneal_epochs", self.anneal_epochs > 0, "positive")
        self._require("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)")
        self._require("warmup_epochs", 0 <= self.warmup_epochs < self.epochs, "in [0, epochs)")
        self._require("milestones", list(self.milestones) == sorted(set(self.milestones))
                      and all(m >= 1 for m in self.milestones), "increasing positive epochs")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        self.schedules()  # a temperature schedule that cannot run is refused here, by name

    def _require(self, name: str, ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")

    def to_dict(self) -> Dict[str, Any]:
        """The config as plain JSON-able values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        """The config stored in a record or checkpoint."""
        _check_fields(values)
        return cls(**{"init": _LATER_FIELDS["init"], **values})

    def identity(self) -> Dict[str, Any]:
        """The fields that decide what the run computes: the basis of its key."""
        kept = self.to_dict()
        for name in _ALL_CONV_FIELDS - set(CONVS[self.conv].run_fields):
            kept.pop(name)
        if self.lr_schedule == "cosine":
            kept.pop("milestones"), kept.pop("gamma")
        for name, default in _LATER_FIELDS.items():
            if kept[name] == default:
                kept.pop(name)
        return kept

    def key(self) -> str:
        """The run's key (see :func:`fmd.runs.config_key`)."""
        return runs.config_key(self.identity())

    def conv_options(self) -> Dict[str, Any]:
        """Options for each dynamic layer of the model."""
        return CONVS[self.conv].layer_options(self)

    def schedules(self) -> Dict[str, Callable[[float], float]]:
        """The temperature schedule of each role for this conv."""
        spec = CONVS[self.conv]
        return default_schedules(self.conv, **{name: getattr(self, name)
                                               for name in spec.schedule_fields})


# Fields added after runs were committed, and their defaults: a run that leaves them there keeps
# the key it had before they existed.
# A record from before `init` existed was drawn as PyTorch draws (from_dict reads it so).
_LATER_FIELDS = {"amp": "none", "channels_last": False, "compile": False, "world_size": 1,
                 "sync_bn": False, "init": "torch", "warmup_epochs": 0.0,
                 "label_smoothing": 0.0}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _field_choices() -> Dict[str, Tuple[Any, ...]]:
    """The values a config field with a fixed set of values accepts."""
    return {"recipe": tuple(RECIPES) + ("custom",), "dataset": DATASETS, "transform": TRANSFORMS,
            "conv": tuple(CONVS), "depth": tuple(DEPTHS), "stem": STEMS, "init": INITS,
            "preset": FMD_PRESETS,
            "lr_schedule": LR_SCHEDULES, "amp": ("none", *AMP_DTYPES)}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check a field against its type, making 1 and 1.0 (and lists and tuples) the same value."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(name, value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a sequence, got {value!r}")
        return tuple(_coerce(name, v, args[0]) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def _check_fields(values: Dict[str, Any]) -> None:
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; the fields are {names}")


# Named recipes: overrides of TrainConfig's defaults.
RECIPES: Dict[str, Dict[str, Any]] = {
    # The official FMDConv/ODConv recipe: ImageNet-style 224×224 inputs (RandomResizedCrop +
    # flip; Resize 256 + CenterCrop 224), SGD lr 0.1, wd 1e-4, ×0.1 at epochs 30/60/90 of 100,
    # temperatures annealed over the first 10 epochs. For a GPU and the CIFAR files.
    "paper": dict(dataset="cifar10", transform="imagenet", stem="imagenet", width=64, epochs=100,
                  batch_size=256, lr=0.1, momentum=0.9, weight_decay=1e-4, lr_schedule="step",
                  milestones=(30, 60, 90), anneal_epochs=10.0),
    # The same optimiser at CIFAR's own resolution: 32×32 inputs, the 3×3 CIFAR stem.
    "cifar": dict(dataset="cifar10", transform="cifar", stem="cifar", width=64, epochs=100,
                  batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4, lr_schedule="step",
                  milestones=(30, 60, 90), anneal_epochs=10.0),
    # Offline on a 2-core CPU in minutes: Fashion-MNIST 32×32, ResNet-18 at width 16 with the
    # ImageNet stem (7×7/2 + max-pool: 8×8 maps in the first stage, which a CPU can afford),
    # a cosine LR, and the temperatures annealed over the first 10% of the run as in `paper`.
    # No augmentation: a run this short underfits, and pad-crop cost 3 points of top-1 at 4 epochs.
    # A linear LR warm-up over the first half epoch: without it ResNet-50 ended its first epoch at a
    # mean training loss of 2.85 (above ln 10; 18.6% test top-1), with it at 1.45 (69.8%).
    "quick": dict(dataset="fashion_mnist", transform="none", stem="imagenet", width=16, epochs=5,
                  batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, lr_schedule="cosine",
                  anneal_epochs=0.5, warmup_epochs=0.5),
    # Seconds: the synthetic set and a width-8 ResNet-18, for tests and CI. One thread: a model
    # this small is bound by per-op overhead, and a second thread spinning on a shared machine
    # made it up to 5× slower.
    "smoke": dict(dataset="synthetic", transform="cifar", stem="imagenet", width=8, epochs=2,
                  batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4, lr_schedule="cosine",
                  anneal_epochs=0.5, threads=1),
}


def make_config(recipe: str = "quick", **overrides: Any) -> TrainConfig:
    """The config of a named recipe (``paper``, ``cifar``, ``quick``, ``smoke``) with overrides."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {tuple(RECIPES)}")
    _check_fields(overrides)
    values = {**RECIPES[recipe], "recipe": recipe, **overrides}
    if values["dataset"] == "imagenet" and "transform" not in overrides:
        values["transform"] = "imagenet"  # folder images differ in size: the one transform they take
    return TrainConfig(**values)


# ---------------------------------------------------------------------------------------------
# Pieces of a run


def lr_factor(config: TrainConfig, epoch: float) -> float:
    """The LR multiplier at training progress ``epoch`` (fractional, applied per iteration): the
    schedule's, times a linear warm-up over the first ``warmup_epochs`` (Goyal et al., 2017)."""
    warm = min(1.0, epoch / config.warmup_epochs) if config.warmup_epochs > 0 else 1.0
    if config.lr_schedule == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(epoch / config.epochs, 1.0)))
    passed = sum(1 for m in config.milestones if math.floor(epoch + 1e-9) >= m)
    return warm * config.gamma ** passed


def build_model(config: TrainConfig, num_classes: int, in_channels: int) -> ResNet:
    """The ResNet that ``config`` describes, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    return ResNet(config.depth, conv=config.conv, num_classes=num_classes, stem=config.stem,
                  width=config.width, in_channels=in_channels, init=config.init,
                  **config.conv_options())


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``amp``'s dtype ("bf16", "fp16") on ``device``; "none": fp32."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def _inputs(images: Tensor, channels_last: bool) -> Tensor:
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


@torch.inference_mode()
def evaluate(model: nn.Module, loader: BatchLoader, *, amp: str = "none", channels_last: bool = False,
             context: distributed.Context = distributed.SINGLE) -> Dict[str, float]:
    """Loss, top-1 and top-5 (percent) over the loader, and its throughput; summed over the
    ranks of ``context`` (each evaluates its shard of the test set)."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum, top1, top5, seen = 0.0, 0, 0, 0
    _sync(device)
    start = time.perf_counter()
    for images, targets in loader:
        with autocast(amp, device):
            logits = model(_inputs(images, channels_last))
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        hit1, hit5 = topk_correct(logits, targets, (1, 5))
        top1 += int(hit1.sum())
        top5 += int(hit5.sum())
        seen += targets.shape[0]
    _sync(device)
    seconds = context.max(time.perf_counter() - start)
    loss_sum, top1, top5, seen = context.sum([loss_sum, top1, top5, seen])
    seen = int(seen)
    return {"loss": loss_sum / seen, "top1": 100.0 * top1 / seen, "top5": 100.0 * top5 / seen,
            "images": seen, "seconds": seconds, "images_per_s": seen / seconds}


def train_epoch(model: nn.Module, loader: BatchLoader, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, schedules: Dict[str, Any],
                epoch: int, *, progress: bool = False, desc: str = "", amp: str = "none",
                channels_last: bool = False, scaler: Optional[torch.amp.GradScaler] = None,
                label_smoothing: float = 0.0,
                context: distributed.Context = distributed.SINGLE) -> Dict[str, Any]:
    """One epoch of SGD; temperatures follow ``schedules`` per iteration. Raises on a NaN loss.

    ``amp``: the forward under autocast, ``scaler`` (fp16) scaling the loss; the loss and accuracy
    are summed over the ranks of ``context`` (the loss every iteration, so that all ranks stop
    together on a NaN)."""
    model.train()
    loader.set_epoch(epoch)
    scaler = scaler if scaler is not None else torch.amp.GradScaler(enabled=False)
    device = next(model.parameters()).device
    iters = len(loader)
    loss_sum, correct, seen = 0.0, 0, 0
    temperatures: Dict[str, float] = {}
    from tqdm.auto import tqdm

    bar = tqdm(loader, total=iters, desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    _sync(device)
    start = time.perf_counter()
    for i, (images, targets) in enumerate(bar):
        temperatures = apply_schedules(model, schedules, epoch + i / iters)
        with autocast(amp, device):
            logits = model(_inputs(images, channels_last))
            loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        value, orphans = context.sum([loss.item(), context.orphaned()])
        value /= context.world_size
        if orphans:  # every rank stops at this iteration, none waits on a rank that left
            bar.close()
            raise distributed.LauncherGone(
                f"the torchrun launcher is gone (epoch {epoch + 1}, iteration {i + 1}/{iters}); every "
                "finished epoch is in the run's checkpoint: run the same command with --resume")
        if not math.isfinite(value):
            bar.close()
            raise NonFiniteLossError(f"the training loss became {value} at epoch {epoch + 1}, "
                                     f"iteration {i + 1}/{iters}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        batch = targets.shape[0]
        loss_sum += value * batch * context.world_size  # the ranks' batches are equal (drop_last)
        correct += int((logits.argmax(1) == targets).sum())
        seen += batch * context.world_size
        if progress and (i % 10 == 0 or i == iters - 1):
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
    _sync(device)
    seconds = context.max(time.perf_counter() - start)
    correct = int(context.sum([correct])[0])
    bar.close()
    return {"loss": loss_sum / seen, "top1": 100.0 * correct / seen, "images": seen,
            "seconds": seconds, "images_per_s": seen / seconds, "temperatures": temperatures,
            "lr": optimizer.param_groups[0]["lr"]}


# ---------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_path(config: TrainConfig, runs_root: Optional[PathLike] = None) -> Path:
    """Where the run's latest checkpoint lives."""
    return runs.run_dir(config.identity(), runs_root) / "checkpoints" / "last.pt"


def weights_path(config: TrainConfig, runs_root: Optional[PathLike] = None) -> Path:
    """Where the run's half-precision weights (:func:`save_weights`) live, beside its record."""
    return runs.run_dir(config.identity(), runs_root) / WEIGHTS_NAME


def save_checkpoint(path: PathLike, state: Dict[str, Any]) -> None:
    """Write a checkpoint atomically (a crash leaves the previous one intact)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


_CHECKPOINT_KEYS = ("format", "key", "config", "epoch", "model", "optimizer", "scheduler",
                    "loader", "rng", "history", "elapsed_s", "sessions", "git")


def load_checkpoint(path: PathLike, config: TrainConfig) -> Dict[str, Any]:
    """Read a checkpoint and check that ``config`` wrote it; :class:`CheckpointError` otherwise."""
    path = Path(path)
    hint = "delete it or pass force=True (--force) to start the run over"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable "
                              f"({type(error).__name__}: {_first_line(error)}); {hint}") from error
    if not isinstance(state, dict) or any(k not in state for k in _CHECKPOINT_KEYS):
        raise CheckpointError(f"checkpoint {path} is incomplete (not written by fmd.train "
                              f"format {CHECKPOINT_FORMAT}); {hint}")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']}, this code reads "
                              f"format {CHECKPOINT_FORMAT}; {hint}")
    if state["key"] != config.key():
        theirs = state["config"] if isinstance(state["config"], dict) else {}
        ours = config.to_dict()
        differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise CheckpointError(f"checkpoint {path} belongs to a different configuration (key "
                              f"{state['key']}, this run {config.key()}; fields that differ: "
                              f"{differ}); {hint}")
    if not 0 <= state["epoch"] <= config.epochs:
        raise CheckpointError(f"checkpoint {path} is at epoch {state['epoch']}, outside this "
                              f"run's {config.epochs} epochs; {hint}")
    return state


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def _read_checkpoint(path: Path, config: TrainConfig, strict: bool) -> Optional[Dict[str, Any]]:
    """The run's checkpoint, or None where there is none (or, unless ``strict``, none usable)."""
    if not path.exists():
        return None
    try:
        return load_checkpoint(path, config)
    except CheckpointError:
        if strict:
            raise
        return None


def _rng_state() -> Dict[str, Any]:
    state: Dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# The run


def train(config: TrainConfig, runs_root: Optional[PathLike] = None, *,
          data_root: Optional[PathLike] = None, force: bool = False, resume: bool = False,
          progress: bool = True, verbose: Optional[bool] = None, download: bool = False,
          stop_after: Optional[int] = None, workers: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """Train (or fetch) the run ``config`` describes and return its record.

    * A finished run's stored record is returned without training, unless ``force``.
    * An unfinished run's checkpoint is continued with ``resume``; without ``resume`` it is an
      error (so no work is silently thrown away), with ``force`` it is started over.
    * ``stop_after`` ends this call after that many epochs (checkpointed; ``None`` is returned);
      a later call with ``resume=True`` continues.
    * A NaN or infinite loss raises :class:`NonFiniteLossError`; the last checkpoint stays.
    * ``progress`` shows tqdm bars; ``verbose`` (default: as ``progress``) prints a line per epoch.
    * ``workers``: DataLoader processes of an ImageNet-style folder (default: up to 8, one per CPU
      core of this process's share); the in-memory sets need none.
    * ``config.world_size`` > 1: one of the processes ``torchrun --nproc_per_node N`` started (one
      per device, DistributedDataParallel); only rank 0 writes the checkpoint and the record.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (see make_config), got {type(config).__name__}")
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int)
                                   or stop_after < 1):
        raise ValueError(f"stop_after must be a positive integer or None, got {stop_after!r}")
    identity, key = config.identity(), config.key()
    ckpt_path = checkpoint_path(config, runs_root)
    record = None if force else runs.load_record(identity, runs_root)
    # A checkpoint that cannot be used stops a run that has nothing else, unless it is forced to
    # start over; beside a finished record it is ignored (load_trained reports it if asked).
    state = _read_checkpoint(ckpt_path, config, strict=record is None and not force)
    unfinished = state is not None and state["epoch"] < config.epochs
    if record is not None and not unfinished:
        return record
    if state is not None and not resume:
        if not force:
            raise CheckpointError(f"an unfinished run of this config has a checkpoint at {ckpt_path} "
                                  f"(epoch {state['epoch']} of {config.epochs}); pass resume=True "
                                  "(--resume) to continue it or force=True (--force) to start over")
        state = None
    rank = int(os.environ.get("RANK", "0")) if config.world_size > 1 else 0
    if rank == 0:
        cli.check_writable(ckpt_path.parent)  # now, not after an epoch of training
        # A write killed midway leaves its temporary file (named as provenance.atomic_path names it).
        for stale in ckpt_path.parent.glob(f".{ckpt_path.stem}.*.tmp{ckpt_path.suffix}"):
            stale.unlink()
    device = resolve_device(config.device)
    if config.sync_bn and device.type != "cuda":
        raise ValueError(f"sync_bn needs CUDA devices (torch's SyncBatchNorm runs on GPU modules only), "
                         f"this run is on {device}")
    context = distributed.setup(config.world_size, device)
    if workers is None:
        workers = min(8, max(1, (os.cpu_count() or 1) // config.world_size))

    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, identity, key, ckpt_path, state, runs_root, data_root,
                    progress and context.main, (progress if verbose is None else verbose) and context.main,
                    download, stop_after, context, workers)
    finally:
        torch.set_num_threads(previous_threads)
        distributed.teardown(context)


def train_all(configs: Mapping[Name, TrainConfig], runs_root: Optional[PathLike] = None, *,
              progress: bool = False, verbose: bool = True, checkpoints: bool = False,
              download: bool = False) -> Dict[Name, Dict[str, Any]]:
    """Train (or fetch) every config; an interrupted run continues from its checkpoint.

    Configs that coincide are one run: the second is fetched from the cache at no cost. With
    ``checkpoints``, a finished run whose checkpoint is missing (a fresh clone keeps the records,
    not the weights) is trained again now, so that a later :func:`load_trained` does not replace
    a record that tables were already drawn from.
    """
    run = _train_with_weights if checkpoints else partial(train, resume=True)
    records = {}
    for i, (name, config) in enumerate(configs.items(), 1):
        tag = PROGRESS_TAG.set(f"[run {i}/{len(configs)}]")
        try:
            records[name] = run(config, runs_root, progress=progress, verbose=verbose, download=download)
        finally:
            PROGRESS_TAG.reset(tag)
    return records


def _train_with_weights(config: TrainConfig, runs_root: Optional[PathLike] = None,
                        **options: Any) -> Dict[str, Any]:
    """Train or fetch run ``config``, training it again where its record is here but neither its
    checkpoint nor its stored weights (``force``, rewriting the record); an interrupted run continues."""
    again = (not checkpoint_path(config, runs_root).is_file()
             and not weights_path(config, runs_root).is_file()
             and runs.load_record(config.identity(), runs_root) is not None)
    return train(config, runs_root, force=again, resume=not again, **options)


def load_trained(config: TrainConfig, runs_root: Optional[PathLike] = None, *,
                 retrain: bool = True, data_root: Optional[PathLike] = None,
                 progress: bool = False, download: bool = False
                 ) -> Optional[Tuple[nn.Module, Dict[str, Any]]]:
    """The trained model of run ``config`` (eval mode, final temperatures) and its record.

    Records are committed, checkpoints are not: where the checkpoint of a finished run is missing,
    the half-precision weights :func:`save_weights` stored beside its record are loaded; without
    them the run is trained again (``force``, rewriting its record) and an interrupted one is
    continued if ``retrain``; else None is returned.
    """
    path = checkpoint_path(config, runs_root)
    record = runs.load_record(config.identity(), runs_root)
    stored = None if path.is_file() or record is None else _stored_weights(config, runs_root)
    if stored is not None:
        model = build_model(config, record["num_classes"], record["input_size"][1])
        model.load_state_dict(stored)
        return model.eval(), record
    if retrain:  # an interrupted (re)training is continued here, a missing one trained
        record = _train_with_weights(config, runs_root, data_root=data_root, progress=progress,
                                     verbose=True, download=download)  # a retrain says so
    elif record is None or not path.is_file():
        return None
    assert record is not None
    state = load_checkpoint(path, config)
    if state["epoch"] != config.epochs:
        if not retrain:
            return None
        raise CheckpointError(f"checkpoint {path} is at epoch {state['epoch']} of {config.epochs}; "
                              "the run is unfinished")
    model = build_model(config, record["num_classes"], record["input_size"][1])
    model.load_state_dict(state["model"])  # temperatures are buffers: the final ones come back too
    return model.eval(), record


def _run(config: TrainConfig, identity: Dict[str, Any], key: str, ckpt_path: Path,
         state: Optional[Dict[str, Any]], runs_root: Optional[PathLike],
         data_root: Optional[PathLike], progress: bool, verbose: bool, download: bool,
         stop_after: Optional[int], context: distributed.Context,
         workers: int) -> Optional[Dict[str, Any]]:
    device = context.device
    load = partial(get_datasets, config.dataset, data_root, train_subset=config.train_subset,
                   test_subset=config.test_subset, channels=config.channels, seed=config.data_seed)
    if context.main:
        train_set, test_set = load(download=download)
    context.barrier()  # rank 0 downloads, the others read what it wrote
    if not context.main:
        train_set, test_set = load()
    train_loader, test_loader = make_loaders(
        train_set, test_set, config.batch_size, transform=config.transform,
        eval_batch_size=config.eval_batch_size or 2 * config.batch_size, device=device,
        seed=config.seed, workers=workers if config.dataset == "imagenet" else 0,
        rank=context.rank, world_size=context.world_size)
    model = build_model(config, train_set.num_classes, train_set.channels).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the attention trunks' too
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)
    iters = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(config, it / iters))
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    schedules = config.schedules()

    history: List[Dict[str, Any]] = []
    start_epoch, elapsed, sessions, git = 0, 0.0, 1, git_state()
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            train_loader.load_state_dict(state.get("rank_loaders", [state["loader"]])[context.rank])
            if "scaler" in state:
                scaler.load_state_dict(state["scaler"])
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            raise CheckpointError(f"checkpoint {ckpt_path} does not fit this run's model or "
                                  f"optimizer ({error}); delete it or pass force=True") from error
        _set_rng_state(state["rng"])
        start_epoch, history = state["epoch"], list(state["history"])
        elapsed, sessions, git = state["elapsed_s"], state["sessions"] + 1, state["git"]
    net: nn.Module = model
    if context.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)  # the training forward; evaluation runs the eager model

    say = _printer(verbose)
    say(f"run {runs.run_name(identity)}: {config.conv} ResNet-{config.depth} on {config.dataset}"
        f" ({len(train_set)} train / {len(test_set)} test images, {device}, "
        f"{torch.get_num_threads()} threads"
        + (f", {context.world_size} processes ({context.backend})" if context.world_size > 1 else "")
        + ")" + (f", resuming after epoch {start_epoch}"
                                                  if state is not None else ""))
    session_start = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        tic = time.perf_counter()
        fit = train_epoch(net, train_loader, optimizer, scheduler, schedules, epoch,
                          progress=progress, desc=f"epoch {epoch + 1}/{config.epochs}", amp=config.amp,
                          channels_last=config.channels_last, scaler=scaler,
                          label_smoothing=config.label_smoothing, context=context)
        test = evaluate(model, test_loader, amp=config.amp, channels_last=config.channels_last,
                        context=context)
        row = {"epoch": epoch + 1, "train_loss": fit["loss"], "train_top1": fit["top1"],
               "test_loss": test["loss"], "test_top1": test["top1"], "test_top5": test["top5"],
               "lr": fit["lr"], "temperatures": fit["temperatures"],
               "train_images": fit["images"], "train_seconds": fit["seconds"],
               "train_images_per_s": fit["images_per_s"],
               "eval_seconds": test["seconds"], "eval_images_per_s": test["images_per_s"],
               "epoch_seconds": time.perf_counter() - tic}
        history.append(row)
        left = (config.epochs - epoch - 1) * statistics.mean(h["epoch_seconds"] for h in history)
        say(f"epoch {epoch + 1}/{config.epochs}: train loss {fit['loss']:.4f}, "
            f"test top-1 {test['top1']:.2f}% top-5 {test['top5']:.2f}%, "
            f"{fit['images_per_s']:.0f} img/s train, {row['epoch_seconds']:.1f} s"
            + (f", ETA {left:.0f} s" if left else ""))
        loaders = context.gather(train_loader.state_dict())
        if context.main:
            save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, "key": key, "config": config.to_dict(), "epoch": epoch + 1,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "loader": loaders[0], "rng": _rng_state(),
                "history": history, "elapsed_s": elapsed + time.perf_counter() - session_start,
                "sessions": sessions, "git": git, "scaler": scaler.state_dict(),
                **({"rank_loaders": loaders} if context.world_size > 1 else {})})
        if stop_after is not None and epoch + 1 - start_epoch >= stop_after and epoch + 1 < config.epochs:
            say(f"stopped after epoch {epoch + 1}; continue with resume=True (--resume)")
            return None
    elapsed += time.perf_counter() - session_start

    record = _make_record(config, identity, key, model, train_set, test_set, test_loader, history,
                          elapsed, sessions, git, context, workers)
    if context.main:
        say(f"record: {runs.write_record(record, runs_root)}")
    context.barrier()  # the record is on disk when any rank returns
    return record


def _printer(verbose: bool) -> Callable[[str], None]:
    if not verbose:
        return lambda message: None
    from tqdm.auto import tqdm
    tag = PROGRESS_TAG.get()
    return lambda message: tqdm.write(f"{tag} {message}", file=sys.stderr)


def _finite(value: float) -> Optional[float]:
    """JSON has no infinity: an unbounded score is stored as null."""
    return value if math.isfinite(value) else None


def _make_record(config: TrainConfig, identity: Dict[str, Any], key: str, model: nn.Module,
                 train_set: Any, test_set: Any, test_loader: BatchLoader, history: List[Dict[str, Any]],
                 elapsed: float, sessions: int, git: Dict[str, Any], context: distributed.Context,
                 workers: int) -> Dict[str, Any]:
    from .complexity import count_macs, count_params  # here: complexity pulls in thop

    input_shape = (1, *test_loader.output_shape())
    params = count_params(model)
    macs = count_macs(model, input_size=input_shape)
    last = history[-1]
    train_images = sum(h["train_images"] for h in history)
    train_seconds = sum(h["train_seconds"] for h in history)
    eval_ms = 1000.0 / last["eval_images_per_s"]
    scores = {
        "macs": {"cost_per_image": macs / 1e9, "unit": "GMACs",
                 **speed_accuracy(last["test_top1"], macs / 1e9)},
        "eval_time": {"cost_per_image": eval_ms, "unit": "ms",
                      **speed_accuracy(last["test_top1"], eval_ms)},
    }
    for basis in scores.values():
        basis["ies"] = _finite(basis["ies"])
    entropy = measure_kernel_entropy(model, first_images(test_loader, ENTROPY_IMAGES))
    return {
        "name": runs.run_name(identity), "key": key, "config": config.to_dict(),
        "final": {"test_top1": last["test_top1"], "test_top5": last["test_top5"],
                  "test_loss": last["test_loss"], "train_loss": last["train_loss"],
                  "train_top1": last["train_top1"]},
        "best_test_top1": max(h["test_top1"] for h in history),
        "history": history,
        "num_classes": train_set.num_classes, "train_images": len(train_set),
        "test_images": len(test_set), "input_size": list(input_shape),
        "params": params, "macs": macs,
        "speed": {"train_images_per_s": train_images / train_seconds,
                  "eval_images_per_s": last["eval_images_per_s"], "eval_ms_per_image": eval_ms,
                  "eval_batch_size": test_loader.batch_size,
                  "measured": "train: all epochs' training passes; eval: the last epoch's test "
                              "pass (model and input transforms, at eval_batch_size)"},
        "speed_accuracy": scores,
        **({"kernel_entropy": entropy} if entropy else {}),
        "wall_time_s": elapsed, "sessions": sessions, "seed": config.seed,
        "git_commit": git["commit"], "git_dirty": git["dirty"], "versions": library_versions(),
        "device": describe_device(context.device), "threads": torch.get_num_threads(),
        "distributed": {"world_size": context.world_size, "backend": context.backend,
                        "batch_per_device": config.batch_size,
                        "global_batch": config.batch_size * context.world_size},
        "precision": {"amp": config.amp, "channels_last": config.channels_last,
                      "compile": config.compile},
        **({"loader_workers": workers} if config.dataset == "imagenet" else {}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def first_images(loader: BatchLoader, count: int) -> Tensor:
    """The first ``count`` images ``loader`` yields (transformed as the run's evaluation sees them)."""
    batches, seen = [], 0
    for x, _ in loader:
        batches.append(x)
        seen += x.shape[0]
        if seen >= count:
            break
    return torch.cat(batches)[:count]


def measure_kernel_entropy(model: nn.Module, images: Tensor) -> Optional[Dict[str, Any]]:
    """Mean entropy (nats) of each FMDConv layer's kernel attention over ``images``, as a run's
    record keeps it (``None`` for a model without a kernel attention): chapters read it from the
    record instead of loading the weights."""
    layers = kernel_entropies(model.eval(), images.to(next(model.parameters()).device))
    return {"images": images.shape[0], "nats": layers} if layers else None


def save_weights(config: TrainConfig, runs_root: Optional[PathLike] = None) -> Path:
    """Store a finished run's weights (and temperature buffers) in half precision beside its
    record, so that a fresh clone can load the model without training it again."""
    state = load_checkpoint(checkpoint_path(config, runs_root), config)
    if state["epoch"] != config.epochs:
        raise CheckpointError(f"run {runs.run_name(config.identity())} is unfinished "
                              f"(epoch {state['epoch']} of {config.epochs}); finish it first")
    half = {name: t.half() if t.is_floating_point() else t for name, t in state["model"].items()}
    buffer = io.BytesIO()
    torch.save({"key": config.key(), "model": half}, buffer)
    path = weights_path(config, runs_root)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _stored_weights(config: TrainConfig, runs_root: Optional[PathLike]) -> Optional[Dict[str, Tensor]]:
    """The half-precision weights :func:`save_weights` stored for this run, as float32, or None."""
    path = weights_path(config, runs_root)
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(f"stored weights {path} are corrupt or unreadable ({type(error).__name__}: "
                              f"{_first_line(error)}); delete them and the run is trained again") from error
    if not isinstance(stored, dict) or "model" not in stored:
        raise CheckpointError(f"stored weights {path} were not written by fmd.train.save_weights (no "
                              "'key' and 'model'); delete them and the run is trained again")
    if stored.get("key") != config.key():
        raise CheckpointError(f"{path} belongs to another run (key {stored.get('key')}, expected "
                              f"{config.key()}); delete it")
    return {name: t.float() if t.is_floating_point() else t for name, t in stored["model"].items()}


# ---------------------------------------------------------------------------------------------
# Command line


def _parse_value(text: str, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        if text.lower() == "none":
            return None
        return _parse_value(text, next(a for a in args if a is not type(None)))
    if origin is tuple:
        return tuple(_parse_value(t.strip(), args[0]) for t in text.split(",") if t.strip())
    if hint is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {hint.__name__}, got {text!r}") from None
    return text


def _parser() -> argparse.ArgumentParser:
    parser = cli.Parser(
        prog="python -m fmd.train", description="Train a ResNet with a (dynamic) convolution; "
        "prints the run record's summary. Config flags override the recipe's values.")
    parser.add_argument("--recipe", default="quick", choices=tuple(RECIPES),
                        help="the recipe whose values the config flags override (default quick)")
    parser.add_argument("--runs-root", default=None, help=f"run records (default {runs.RUNS_ROOT})")
    parser.add_argument("--data-root", default=None, help="datasets (default data/ in the repo)")
    parser.add_argument("--force", action="store_true", help="train even if a record exists")
    parser.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    parser.add_argument("--download", action="store_true", help="download missing datasets")
    parser.add_argument("--workers", type=_workers, default=None,
                        help="DataLoader processes for an ImageNet-style folder (default: up to 8)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (a line per epoch is still printed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no messages")
    parser.add_argument("--print-config", action="store_true",
                        help="print the config and its run folder, then exit")
    hints = typing.get_type_hints(TrainConfig)
    config_group = parser.add_argument_group("config (see fmd.train.TrainConfig)")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "recipe":
            continue
        hint = hints[f.name]
        # SUPPRESS: a flag left out keeps the recipe's value, even where "none" is a valid value.
        config_group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name,
                                  default=argparse.SUPPRESS,
                                  type=lambda text, hint=hint: _parse_value(text, hint),
                                  metavar=_metavar(hint), help=_help(f.name))
    return parser


def _explain_missing_checkpoint(config: TrainConfig, runs_root: Optional[PathLike]) -> None:
    """``--resume`` without a checkpoint of this run: refuse where an unfinished run of the same
    dataset and conv exists (the flags probably differ from the interrupted command's), naming
    the fields that differ; otherwise the run simply starts."""
    root = Path(runs_root if runs_root is not None else runs.RUNS_ROOT)
    ours = config.to_dict()
    for path in sorted(root.glob(f"{config.dataset}-{config.conv}-*/checkpoints/last.pt")):
        if (path.parent.parent / runs.RECORD_NAME).exists():
            continue  # a finished run
        try:
            theirs = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["config"]
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is not the one meant
            continue
        differ = {k: (ours.get(k), theirs.get(k)) for k in sorted(set(ours) | set(theirs))
                  if ours.get(k) != theirs.get(k)}
        raise CheckpointError(
            f"--resume: this run ({runs.run_name(config.identity())}) has no checkpoint, but the "
            f"unfinished run {path.parent.parent.name} does; it differs in "
            + ", ".join(f"{k} (here {a!r}, there {b!r})" for k, (a, b) in differ.items())
            + " — rerun with its values to continue it, or without --resume to start this run")


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _help(name: str) -> Optional[str]:
    choices = _field_choices().get(name)
    return None if choices is None else "one of " + ", ".join(map(str, choices))


def _metavar(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return _metavar(next(a for a in args if a is not type(None))) + "|none"
    if origin is tuple:
        return f"{_metavar(args[0])},..."
    return {int: "INT", float: "FLOAT", bool: "BOOL", str: "STR"}.get(hint, "VALUE")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return cli.run(_main, argv, faults=(CheckpointError, NonFiniteLossError, distributed.LauncherGone),
                   on_interrupt="interrupted: every finished epoch is in the run's checkpoint; run "
                                "the same command with --resume to continue")


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name != "recipe" and hasattr(args, f.name)}
    overrides.setdefault("world_size", distributed.launched_world_size())  # torchrun's processes
    try:
        config = make_config(args.recipe, **overrides)
    except ValueError as error:
        parser.error(str(error))
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        print(runs.run_dir(config.identity(), args.runs_root))
        return 0
    if (args.resume and not args.force and not checkpoint_path(config, args.runs_root).exists()
            and runs.load_record(config.identity(), args.runs_root) is None):
        _explain_missing_checkpoint(config, args.runs_root)  # a finished run is simply returned
    record = train(config, args.runs_root, data_root=args.data_root, force=args.force,
                   resume=args.resume, progress=not (args.no_progress or args.quiet),
                   verbose=not args.quiet, download=args.download, workers=args.workers)
    assert record is not None
    summary = {k: record[k] for k in ("name", "final", "params", "macs", "speed", "wall_time_s")}
    if os.environ.get("RANK", "0") == "0":  # one summary from a torchrun run
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
