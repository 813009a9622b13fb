"""Attention branches of the dynamic convolutions, each a small module testable on its own.

Every branch reads the global average of the input feature map (``GAP(x)``, B×C) and returns
per-sample weights. Temperatures are buffers (so a ``state_dict`` round trip keeps them) and come
in two roles: ``"kernel"`` for softmax attentions over kernels and ``"gate"`` for sigmoid gates.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TEMPERATURE_ROLES = ("kernel", "gate")
TRUNK_NORMS = ("batch", "layer", "none")


class Attention(NamedTuple):
    """Per-sample attentions that a dynamic convolution applies; ``None`` means "not used"."""

    input: Optional[Tensor] = None  # B×C_in, scales the input channels
    kernel: Optional[Tensor] = None  # B×K, mixes the K kernels (and biases)
    spatial: Optional[Tensor] = None  # B×kh×kw, scales every kernel's taps
    output: Optional[Tensor] = None  # B×C_out, scales the output channels


def global_pool(x: Tensor) -> Tensor:
    """Global average pooling, B×C×H×W → B×C."""
    return x.mean(dim=(2, 3))


def check_temperature(value: float) -> float:
    """Return ``value`` as a float, or raise if it is not a positive finite number."""
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a positive finite number, got {value}")
    return value


def steps_down_to_one(start: float, step: float) -> bool:
    """Whether stepping down by ``step`` from ``start`` lands on 1 exactly (start ≡ 1 mod step)."""
    return math.isclose((start - 1) % step, 0.0, abs_tol=1e-9)


def check_paper_kernel_temperature(value: float) -> float:
    """The 'paper' preset's T_k falls by 3 per epoch to 1: refuse a start it would not land from."""
    check_temperature(value)
    if not steps_down_to_one(value, 3.0):
        raise ValueError("the 'paper' preset steps T_k down by 3 per epoch to 1, so "
                         f"kernel_temperature must be ≡ 1 (mod 3), got {value:g}")
    return float(value)


class Tempered(nn.Module):
    """Base of the branches that divide their logits by a temperature held in a buffer."""

    temperature_role = "gate"

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.register_buffer("temperature", torch.tensor(check_temperature(temperature)))

    def set_temperature(self, value: float) -> None:
        """Set the temperature in place (keeps the buffer, its device and dtype)."""
        self.temperature.fill_(check_temperature(value))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature.item():g}"


class SigmoidGate(Tempered):
    """``sigmoid(Linear(z) / T)``: input-channel, output-filter and spatial attentions."""

    def __init__(self, in_features: int, out_features: int, temperature: float = 1.0) -> None:
        super().__init__(temperature)
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.fc(z) / self.temperature)


class SoftmaxAttention(Tempered):
    """``softmax(Linear(z) / T)`` over K kernels."""

    temperature_role = "kernel"

    def __init__(self, in_features: int, kernel_num: int, temperature: float = 1.0) -> None:
        super().__init__(temperature)
        self.fc = nn.Linear(in_features, kernel_num)

    def forward(self, z: Tensor) -> Tensor:
        return F.softmax(self.fc(z) / self.temperature, dim=1)


class TrunkBatchNorm(nn.BatchNorm1d):
    """BatchNorm over B×C attention vectors that also trains at batch size 1.

    One sample has no batch variance, so at batch size 1 it normalises with the running
    statistics (as in eval mode) instead of failing as the official ODConv/FMDConv trunks do.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return super().forward(x)


def make_trunk_norm(norm: str, channels: int) -> nn.Module:
    """The normalisation of an attention trunk: ``"batch"`` (official), ``"layer"`` or ``"none"``."""
    if norm == "batch":
        return TrunkBatchNorm(channels)
    if norm == "layer":
        return nn.LayerNorm(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {TRUNK_NORMS}, got {norm!r}")


def trunk_width(in_channels: int, reduction: float, min_channels: int) -> int:
    """Hidden width of the shared trunk: ``max(int(C_in * reduction), min_channels)``."""
    if not 0 < reduction <= 1:
        raise ValueError(f"reduction must be in (0, 1], got {reduction}")
    return max(int(in_channels * reduction), min_channels)


class AttentionTrunk(nn.Module):
    """Shared trunk ``z = ReLU(Norm(FC(GAP(x))))`` of ODConv and of FMDConv's input/output heads."""

    def __init__(self, in_channels: int, reduction: float = 1 / 16, min_channels: int = 16,
                 norm: str = "batch") -> None:
        super().__init__()
        self.width = trunk_width(in_channels, reduction, min_channels)
        self.fc = nn.Linear(in_channels, self.width, bias=False)
        self.norm = make_trunk_norm(norm, self.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.from_pooled(global_pool(x))

    def from_pooled(self, pooled: Tensor) -> Tensor:
        """The trunk from ``GAP(x)`` (B×C), for a layer whose branches share one pooling."""
        return F.relu(self.norm(self.fc(pooled)))


def kernel_attention_width(in_channels: int, kernel_num: int, ratio: float) -> int:
    """Hidden width of the kernel branch: ``int(C_in * ratio) + 1``, or K on a 3-channel input.

    Both the FMDConv code (``attention2d``) and the DynamicConv code it copies special-case an
    RGB input (``in_planes == 3``) with K hidden units.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    return kernel_num if in_channels == 3 else int(in_channels * ratio) + 1


class KernelAttention(nn.Module):
    """DynamicConv's kernel attention ``softmax(FC(ReLU(FC(GAP(x)))) / T)`` over K kernels.

    The hidden width is :func:`kernel_attention_width`, as in the unofficial DynamicConv code
    (kaijieshi7/Dynamic-convolution-Pytorch) that FMDConv's official code reuses for its kernel
    branch.
    """

    def __init__(self, in_channels: int, kernel_num: int, ratio: float = 0.25,
                 temperature: float = 34.0) -> None:
        super().__init__()
        hidden = kernel_attention_width(in_channels, kernel_num, ratio)
        self.fc = nn.Linear(in_channels, hidden, bias=False)
        self.head = SoftmaxAttention(hidden, kernel_num, temperature)

    def forward(self, x: Tensor) -> Tensor:
        return self.from_pooled(global_pool(x))

    def from_pooled(self, pooled: Tensor) -> Tensor:
        """The attention from ``GAP(x)`` (B×C), for a layer whose branches share one pooling."""
        return self.head(F.relu(self.fc(pooled)))


class ExpertRouting(nn.Module):
    """CondConv's routing ``sigmoid(FC(GAP(x)))`` over the experts: independent weights, no softmax."""

    def __init__(self, in_channels: int, num_experts: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_experts)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.fc(global_pool(x)))


def iter_tempered(module: nn.Module):
    """Yield every temperature-carrying branch inside ``module``."""
    return (m for m in module.modules() if isinstance(m, Tempered))
