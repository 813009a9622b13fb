"""Parameters and MACs (wall-clock speed: :mod:`fmd.timing`).

MAC convention (per image, batch 1, at a stated input size): multiply-accumulates of convolutions
and matrix products only. Elementwise work (BatchNorm, ReLU, pooling, sigmoid/softmax, scaling a map
by an attention) is free, as in ``torch.utils.flop_counter`` (which reports FLOPs = 2 × MACs) and in
the usual 1.814G for ResNet-18. For a dynamic layer with K kernels of shape O×(I/g)×kh×kw and an
output map Ho×Wo the rule is::

    conv        = O · (I/g) · kh · kw · Ho · Wo        (one convolution with the mixed kernel)
    aggregation = K · O · (I/g) · kh · kw  (+ K · O)   (Σ_k π_k W_k and the bias mix; 0 when no
                                                        per-sample kernel is mixed)
    attention   = Σ over the branch's linear layers of in_features · out_features

thop does the counting (with these rules for our layers); :func:`flop_counter_macs` cross-checks it
against PyTorch's own counter.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .conv import DynamicConv2dBase
from .models import Bottleneck, ResNet

def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as temperatures and BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def dynamic_layer_macs(layer: DynamicConv2dBase, input_shape: Sequence[int],
                       output_shape: Sequence[int]) -> Dict[str, int]:
    """MACs per image of one dynamic layer, split into conv, aggregation and attention."""
    kernel_numel = layer.weight[0].numel()
    conv = kernel_numel * output_shape[-2] * output_shape[-1]
    attention = sum(m.in_features * m.out_features for m in layer.modules()
                    if isinstance(m, nn.Linear))
    att = layer.attend(torch.zeros(1, *input_shape[1:], dtype=layer.weight.dtype,
                                   device=layer.weight.device))
    aggregation = 0
    if att.kernel is not None:
        aggregation = layer.kernel_num * kernel_numel
        if layer.bias is not None:
            aggregation += layer.kernel_num * layer.out_channels
    return {"conv": conv, "aggregation": aggregation, "attention": attention}


def layer_macs(model: nn.Module, input_size: Sequence[int]) -> List[Dict[str, Any]]:
    """Per-layer MACs (conv / aggregation / attention) of every conv and linear layer, in order."""
    rows: List[Dict[str, Any]] = []
    hooks = []

    def record(name: str):
        def hook(module: nn.Module, inputs, output: Tensor) -> None:
            row = {"layer": name, "type": type(module).__name__,
                   "output": "×".join(map(str, output.shape[1:]))}
            if isinstance(module, DynamicConv2dBase):
                row.update(dynamic_layer_macs(module, inputs[0].shape, output.shape))
            elif isinstance(module, nn.Conv2d):
                row.update(conv=module.weight.numel() * output.shape[-2] * output.shape[-1],
                           aggregation=0, attention=0)
            else:
                row.update(conv=module.in_features * module.out_features, aggregation=0,
                           attention=0)
            rows.append(row)
        return hook

    for name, module in model.named_modules():
        inside_dynamic = any(name.startswith(d + ".") for d, m in model.named_modules()
                             if isinstance(m, DynamicConv2dBase))
        if inside_dynamic:
            continue  # a dynamic layer's own linears are its "attention" part
        if isinstance(module, (DynamicConv2dBase, nn.Conv2d)) or (
                isinstance(module, nn.Linear)):
            hooks.append(module.register_forward_hook(record(name)))
    p = next(model.parameters())
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(*input_size, dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(training)
    for row in rows:
        row["total"] = row["conv"] + row["aggregation"] + row["attention"]
    return rows


def stride_on_1x1_macs(model: ResNet, input_size: Sequence[int]) -> int:
    """MACs if each strided bottleneck put its stride on the first 1×1 conv (ResNet v1) instead.

    Our Bottleneck (like torchvision's, "v1.5") strides in the 3×3 conv; the original ResNet (v1)
    strides in the 1×1 conv before it, which then runs on a 4× smaller map.
    """
    rows = {r["layer"]: r for r in layer_macs(model, input_size)}
    total = sum(r["total"] for r in rows.values())
    for name, block in model.named_modules():
        if isinstance(block, Bottleneck) and block.conv2.stride != (1, 1):
            first, second = rows[f"{name}.conv1"], rows[f"{name}.conv2"]
            h1, w1 = (int(v) for v in first["output"].split("×")[1:])
            h2, w2 = (int(v) for v in second["output"].split("×")[1:])
            total -= first["conv"] - first["conv"] * (h2 * w2) // (h1 * w1)
    return total


def _thop_dynamic_rule(module: DynamicConv2dBase, inputs, output: Tensor) -> None:
    parts = dynamic_layer_macs(module, inputs[0].shape, output.shape)
    module.total_ops += torch.DoubleTensor([float(sum(parts.values()))])


def _thop_free(module: nn.Module, inputs, output) -> None:
    module.total_ops += torch.DoubleTensor([0.0])


def _dynamic_types(model: nn.Module) -> set:
    return {type(m) for m in model.modules() if isinstance(m, DynamicConv2dBase)}


def _example(model: nn.Module, input_size: Sequence[int]) -> Tensor:
    if len(input_size) != 4 or input_size[0] != 1:
        raise ValueError(f"input_size must be (1, C, H, W) (MACs are per image), got {tuple(input_size)}")
    p = next(model.parameters())
    return torch.randn(*input_size, dtype=p.dtype, device=p.device)


def count_macs(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> int:
    """MACs per image at ``input_size`` = (1, C, H, W), counted by thop with our layer rules."""
    from thop import profile  # imported here: thop prints on import of some versions

    from thop.vision.basic_hooks import count_convNd

    custom = {t: _thop_dynamic_rule for t in _dynamic_types(model)}
    # thop looks rules up by exact type: a subclass of nn.Conv2d (fmd.models.StridedPointwise) gets
    # nn.Conv2d's rule, which counts from the output's size.
    for conv in {type(m) for m in model.modules() if isinstance(m, nn.Conv2d)} - {nn.Conv2d}:
        custom.setdefault(conv, count_convNd)
    for free in (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.ReLU, nn.MaxPool2d,
                 nn.AdaptiveAvgPool2d, nn.Identity):
        custom[free] = _thop_free
    # thop hooks add buffers to every module; profile a throwaway copy so the model stays clean.
    macs, _ = profile(_copy(model), inputs=(_example(model, input_size),), custom_ops=custom,
                      verbose=False)
    return int(round(macs))


def _copy(model: nn.Module) -> nn.Module:
    import copy
    return copy.deepcopy(model).eval()


def flop_counter_macs(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> int:
    """MACs per image as PyTorch's FlopCounterMode sees one eval forward (its FLOPs / 2)."""
    m = _copy(model)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(_example(model, input_size))
    return counter.get_total_flops() // 2
