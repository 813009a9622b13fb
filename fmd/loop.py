"""One epoch of SGD and one evaluation pass: the LR schedule, the model a config describes, the
device, autocast and memory format of the inputs."""
from __future__ import annotations

import math
import time
from typing import Any, Dict, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed
from .config import TrainConfig
from .conv import DynamicConv2dBase
from .data import BatchLoader
from .metrics import topk_correct
from .models import ResNet
from .precision import autocast, sync
from .temperature import apply_schedules


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


def training_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """The loss SGD follows: cross-entropy, with ``label_smoothing`` (evaluation reports plain)."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


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


def set_strategies(model: nn.Module, strategies: Union[str, Mapping[str, str]]) -> None:
    """Set how each dynamic layer computes: one strategy for all, or layer name → strategy."""
    for name, layer in model.named_modules():
        if isinstance(layer, DynamicConv2dBase):
            chosen = strategies if isinstance(strategies, str) else strategies.get(name)
            if chosen is not None:
                layer.strategy = chosen


def used_strategies(model: nn.Module) -> Dict[str, str]:
    """Layer name → the strategy each dynamic layer's last forward computed with ("tune" and
    "auto" resolved); layers not run yet, or run inside a compiled graph, are left out."""
    return {name: layer.last_strategy for name, layer in model.named_modules()
            if isinstance(layer, DynamicConv2dBase) and layer.last_strategy is not None}


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


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
    sync(device)
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
    sync(device)
    seconds = context.max(time.perf_counter() - start)
    loss_sum, top1, top5, seen = context.sum([loss_sum, top1, top5, seen])
    seen = int(seen)
    return {"loss": loss_sum / seen, "top1": 100.0 * top1 / seen, "top5": 100.0 * top5 / seen,
            "images": seen, "seconds": seconds, "images_per_s": seen / seconds}


def train_epoch(model: nn.Module, loader: BatchLoader, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, schedules: Dict[str, Any],
                epoch: int, *, progress: bool = False, desc: str = "", amp: str = "none",
                channels_last: bool = False, scaler: Optional[torch.amp.GradScaler] = None,
                label_smoothing: float = 0.0, temperature_clock: str = "official",
                context: distributed.Context = distributed.SINGLE) -> Dict[str, Any]:
    """One epoch of SGD; temperatures follow ``schedules`` per iteration on ``temperature_clock``
    (:data:`fmd.temperature.TEMPERATURE_CLOCKS`). Raises on a NaN loss.

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
    sync(device)
    start = time.perf_counter()
    for i, (images, targets) in enumerate(bar):
        temperatures = apply_schedules(model, schedules, epoch + i / iters,
                                       ahead=1 / iters if temperature_clock == "official" else 0.0)
        with autocast(amp, device):
            logits = model(_inputs(images, channels_last))
            loss = training_loss(logits, targets, label_smoothing)
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
    sync(device)
    seconds = context.max(time.perf_counter() - start)
    correct = int(context.sum([correct])[0])
    bar.close()
    return {"loss": loss_sum / seen, "top1": 100.0 * correct / seen, "images": seen,
            "seconds": seconds, "images_per_s": seen / seconds, "temperatures": temperatures,
            "lr": optimizer.param_groups[0]["lr"]}
