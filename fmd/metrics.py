"""Accuracy and the speed-accuracy scores IES and RCS.

Convention (from the psychology literature, with "response time" replaced by a per-image cost):

* Inverse Efficiency Score, IES = mean cost of the correctly classified images / proportion correct.
  Lower is better. Its unit is the cost's unit (ms, or GMACs).
* Rate-Correct Score, RCS = number of correct images / total cost over all images.
  Higher is better. Its unit is correct images per cost unit.

The cost is either a measured time per image or a fixed per-image cost such as MACs. With one fixed
cost c for every image and accuracy p, IES = c / p and RCS = p / c, so RCS = 1 / IES; the two only
tell different stories when per-image costs differ (e.g. measured batch-1 latencies).

Also the entropy of a kernel attention π (:func:`softmax_entropy`; :func:`kernel_entropies` of
every FMDConv layer of a trained model): ln K for a uniform mix of the K kernels, 0 for one kernel.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .conv import FMDConv2d

Costs = Union[float, Sequence[float], Tensor]


def topk_correct(logits: Tensor, targets: Tensor, topk: Sequence[int] = (1, 5)) -> Tuple[Tensor, ...]:
    """Boolean B-vectors: is the target among the top-k logits, for each k."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"expected logits B×classes and targets B, got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    k_max = min(max(topk), logits.shape[1])
    ranked = logits.topk(k_max, dim=1).indices
    hits = ranked == targets[:, None]
    return tuple(hits[:, :min(k, k_max)].any(dim=1) for k in topk)


def accuracy(logits: Tensor, targets: Tensor, topk: Sequence[int] = (1, 5)) -> Tuple[float, ...]:
    """Top-k accuracies in percent."""
    return tuple(100.0 * hit.float().mean().item() for hit in topk_correct(logits, targets, topk))


def _as_costs(costs: Costs, correct: Tensor) -> Tensor:
    c = torch.as_tensor(costs, dtype=torch.float64)
    if c.dim() == 0:
        c = c.expand(correct.shape[0])
    if c.shape != correct.shape:
        raise ValueError(f"costs must be one number or one per image ({correct.shape[0]}), "
                         f"got shape {tuple(c.shape)}")
    if (c < 0).any() or not torch.isfinite(c).all():
        raise ValueError("costs must be finite and non-negative")
    return c


def _as_correct(correct: Union[Sequence[bool], Tensor]) -> Tensor:
    correct = torch.as_tensor(correct).bool().flatten()
    if correct.numel() == 0:
        raise ValueError("need at least one image")
    return correct


def inverse_efficiency_score(correct: Union[Sequence[bool], Tensor], costs: Costs) -> float:
    """IES = mean cost of correct images / proportion correct (lower is better; inf if none correct)."""
    correct = _as_correct(correct)
    c = _as_costs(costs, correct)
    if not correct.any():
        return float("inf")
    return (c[correct].mean() / correct.double().mean()).item()


def rate_correct_score(correct: Union[Sequence[bool], Tensor], costs: Costs) -> float:
    """RCS = correct images / total cost of all images (higher is better)."""
    correct = _as_correct(correct)
    c = _as_costs(costs, correct)
    total = c.sum()
    if total == 0:
        raise ValueError("the total cost is zero; RCS is undefined")
    return (correct.double().sum() / total).item()


def speed_accuracy(top1_percent: float, cost_per_image: float) -> dict:
    """IES and RCS from an accuracy and one fixed cost per image (see the module's convention)."""
    if not 0 <= top1_percent <= 100:
        raise ValueError(f"top1_percent must be in [0, 100], got {top1_percent}")
    if not cost_per_image > 0:
        raise ValueError(f"cost_per_image must be positive, got {cost_per_image}")
    p = top1_percent / 100.0
    return {"ies": cost_per_image / p if p > 0 else float("inf"), "rcs": p / cost_per_image}


def softmax_entropy(probs: Tensor) -> Tensor:
    """Entropy in nats of probability vectors along the last dimension."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


def kernel_attentions(model: nn.Module, x: Tensor, chunk: int = 256) -> Dict[str, Tensor]:
    """The kernel attention π (N×K) of every FMDConv layer for each image of ``x``, by layer name."""
    found: Dict[str, List[Tensor]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, FMDConv2d) and module.kernel_attention is not None:
            def hook(_m: nn.Module, _inputs: Any, pi: Tensor, name: str = name) -> None:
                found.setdefault(name, []).append(pi)
            # On the head: FMDConv2d.attend calls the branch through from_pooled, not as a module.
            hooks.append(module.kernel_attention.head.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for part in x.split(chunk):
                model(part)
    finally:
        for h in hooks:
            h.remove()
    return {name: torch.cat(values) for name, values in found.items()}


def kernel_entropies(model: nn.Module, x: Tensor) -> Dict[str, float]:
    """Mean entropy (nats) of each FMDConv layer's kernel attention π over the images ``x``."""
    return {name: softmax_entropy(pi).mean().item() for name, pi in kernel_attentions(model, x).items()}
