"""A finished run's record: its results, history, cost (parameters, MACs, IES/RCS), the kernel
attentions' entropies, and where and how it was made."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from . import distributed, runs
from .config import TrainConfig
from .data import BatchLoader
from .metrics import kernel_entropies, speed_accuracy
from .provenance import describe_device, library_versions

ENTROPY_IMAGES = 1000  # test images on which a finished run's kernel attentions are measured


def _finite(value: float) -> Optional[float]:
    """JSON has no infinity: an unbounded score is stored as null."""
    return value if math.isfinite(value) else None


@dataclass
class RunLog:
    """A run's bookkeeping across its sessions: the epochs' history, seconds of training, how many
    sessions, the git state it started from, and the engine strategies it computed with."""

    history: List[Dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    sessions: int = 1
    git: Dict[str, Any] = field(default_factory=dict)
    strategies: Dict[str, str] = field(default_factory=dict)


def make_record(config: TrainConfig, model: nn.Module, train_set: Any, test_set: Any,
                test_loader: BatchLoader, log: RunLog, context: distributed.Context,
                workers: int) -> runs.RunRecord:
    """The record of a finished run: its results and history, cost, speed-accuracy scores,
    kernel-attention entropies, and where and how it was made."""
    from .complexity import count_macs, count_params  # here: complexity pulls in thop

    input_shape = (1, *test_loader.output_shape())
    params = count_params(model)
    macs = count_macs(model, input_size=input_shape)
    history, git = log.history, log.git
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
        "name": runs.run_name(config.identity()), "key": config.key(), "config": config.to_dict(),
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
        "wall_time_s": log.elapsed, "sessions": log.sessions, "seed": config.seed,
        "git_commit": git["commit"], "git_dirty": git["dirty"], "versions": library_versions(),
        "device": describe_device(context.device), "threads": torch.get_num_threads(),
        "distributed": {"world_size": context.world_size, "backend": context.backend,
                        "batch_per_device": config.batch_size,
                        "global_batch": config.batch_size * context.world_size},
        "precision": {"amp": config.amp, "channels_last": config.channels_last,
                      "compile": config.compile},
        "strategies": log.strategies,
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
