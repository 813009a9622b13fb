"""Folding a trained FMDConv's kernel attention into one kernel per layer, for deployment.

Where a trained kernel attention hardly depends on the image (chapter 04 measures its entropy),
each FMDConv layer can keep the mix its attention gives on average instead of computing it per
sample: ``W̄ = Σ_k π̄_k W_k`` and ``β̄ = Σ_k π̄_k β_k``, with ``π̄`` the mean attention over a set of
images. The folded layer keeps its input and output gates, drops the kernel branch and the K-fold
bank, and the engine computes it as one ordinary convolution per call (the ``shared`` strategy).
Exact where the attention is constant; chapter 04 measures what it costs in accuracy otherwise.
"""
from __future__ import annotations

import copy
from typing import Dict

import torch
from torch import Tensor, nn

from .metrics import kernel_attentions


def mean_kernel_attention(model: nn.Module, images: Tensor) -> Dict[str, Tensor]:
    """The mean kernel attention π̄ (K values) of every FMDConv layer over ``images``, by layer name."""
    return {name: pi.double().mean(0).float() for name, pi in kernel_attentions(model, images).items()}


def fold_kernel_attention(model: nn.Module, images: Tensor) -> nn.Module:
    """A copy of ``model`` (eval mode) whose FMDConv layers carry their mean mix over ``images``
    as their one kernel and bias, without a kernel attention; ``model`` is left as it is."""
    means = mean_kernel_attention(model.eval(), images)
    if not means:
        raise ValueError("the model has no FMDConv layer with a kernel attention to fold")
    folded = copy.deepcopy(model)
    layers = dict(folded.named_modules())
    with torch.no_grad():
        for name, pi in means.items():
            layer = layers[name]
            K = layer.kernel_num
            mixed = pi @ layer.weight.reshape(K, -1)
            layer.weight = nn.Parameter(mixed.reshape(1, *layer.weight.shape[1:]))
            if layer.bias is not None:
                layer.bias = nn.Parameter((pi @ layer.bias).unsqueeze(0))
            layer.kernel_num, layer.kernel_attention = 1, None
            layer.attentions = tuple(a for a in layer.attentions if a != "kernel")
    return folded
