"""ResNet-18/34/50/101 built with any registered convolution.

As in the official ODConv and FMDConv code, the convolutions inside the residual blocks are
dynamic; the stem, the 1×1 downsample convolutions and the classifier stay static.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Type, Union

import torch
from torch import Tensor, nn

from .conv import DynamicConv2dBase, conv_spec, make_conv

STEMS = ("imagenet", "cifar", "small")
# How many times smaller than the input each stem leaves the first stage's maps (built in ResNet).
STEM_DOWNSAMPLING = {"imagenet": 4, "cifar": 1, "small": 2}
INITS = ("official", "torch")
DEPTHS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
          50: ("bottleneck", [3, 4, 6, 3]), 101: ("bottleneck", [3, 4, 23, 3])}


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, conv: str,
                 conv_options: Dict[str, Any]) -> None:
        super().__init__()
        self.conv1 = make_conv(conv, in_planes, planes, 3, stride, 1, **conv_options)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = make_conv(conv, planes, planes, 3, 1, 1, **conv_options)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (strided) → 1×1 with a residual connection (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, conv: str,
                 conv_options: Dict[str, Any]) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = make_conv(conv, in_planes, planes, 1, **conv_options)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = make_conv(conv, planes, planes, 3, stride, 1, **conv_options)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = make_conv(conv, planes, out_planes, 1, **conv_options)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class StridedPointwise(nn.Conv2d):
    """A 1×1 convolution with a stride, computed as the same convolution at stride 1 on every
    ``stride``-th pixel: the same function, parameters and state-dict keys as ``nn.Conv2d(in, out, 1,
    stride)``, and the shortcut of every downsampling block.

    Why not ``nn.Conv2d`` itself: in torch 2.14.1 (oneDNN 3.12.0) the weight gradient of a strided 1×1
    convolution in channels_last with 2, 4 or 6 input channels writes past its buffer on an AMD EPYC
    Zen 3 host (AVX2): glibc aborts the process a step later ("corrupted size vs. prev_size"), in
    eager training with ``--channels-last`` and in compiled training (inductor turns convolutions to
    channels_last), at width 4, the tests' width. The same convolution at stride 1 does not
    (``tests/test_onednn.py`` keeps the reduction and fails on the strided form there)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        sh, sw = self.stride
        return nn.functional.conv2d(x[:, :, ::sh, ::sw], self.weight)


def _downsample(in_planes: int, out_planes: int, stride: int) -> Optional[nn.Module]:
    if stride == 1 and in_planes == out_planes:
        return None
    conv = (nn.Conv2d(in_planes, out_planes, 1, bias=False) if stride == 1
            else StridedPointwise(in_planes, out_planes, stride))
    return nn.Sequential(conv, nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """A ResNet whose block convolutions are ``conv`` (a name in ``fmd.conv.CONVS``).

    Keyword arguments beyond the backbone's own go to every block convolution, as timm does:
    ``ResNet(18, conv="fmdconv", kernel_num=4, preset="official")``.

    Static convolutions are drawn kaiming-normal on fan-out and BatchNorms start at (1, 0), as in
    the official ODConv/FMDConv ResNets; there is no zero-initialised last BN, as there.
    ``init="official"`` (the default) then draws the dynamic layers and the classifier as the
    official code does (:func:`official_init`); ``init="torch"`` keeps PyTorch's own
    initialisation of each ``nn.Linear`` and of each kernel (as ``nn.Conv2d``'s). There is no
    dropout before the classifier (theirs: ``--dropout``, 0 by default, 0.2 in ODConv's README);
    see the README, "Differences from the official code".
    """

    def __init__(self, depth: int = 18, conv: str = "static", num_classes: int = 1000,
                 stem: str = "imagenet", width: int = 64, in_channels: int = 3,
                 init: str = "official", **conv_options: Any) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth!r}")
        spec = conv_spec(conv)
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        for name, value in (("num_classes", num_classes), ("width", width),
                            ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.depth, self.conv, self.stem_kind = depth, conv, stem
        conv_options.setdefault("bias", spec.resnet_bias)
        block_kind, layers = DEPTHS[depth]
        block: Type[Union[BasicBlock, Bottleneck]] = BasicBlock if block_kind == "basic" else Bottleneck
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, 1))
        elif stem == "small":  # 3×3/2, no max-pool: 16×16 maps in the first stage from 32×32 inputs
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 2, 1, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages: List[nn.Module] = []
        in_planes = width
        for i, blocks in enumerate(layers):
            planes = width * 2 ** i
            stage = []
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(block(in_planes, planes, stride, conv, conv_options))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if init == "official":
            official_init(self)

    def features(self, x: Tensor) -> Tensor:
        """The last stage's feature map, B×C×h×w (what Grad-CAM looks at)."""
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@torch.no_grad()
def official_init(model: ResNet) -> None:
    """Draw ``model``'s dynamic layers and classifier as the official code draws them.

    FMDConv (tianyu00824/FMDConv ``modules/fmdconv.py``, ``models/fmd_resnet.py``) and ODConv
    (OSVAI/ODConv ``modules/odconv.py``): each of the K kernels kaiming-normal on fan-out (ReLU
    gain), zero biases, every attention FC (there a 1×1 convolution) kaiming-normal on fan-out with
    zero bias. DynamicConv (kaijieshi7/Dynamic-convolution-Pytorch, unofficial): each kernel
    ``kaiming_uniform_`` with a = 0 on fan-in, zero biases, its attention FCs as above. CondConv has
    no official PyTorch code; its experts and routing are drawn as FMDConv's. The classifier, for
    every conv, as in the FMDConv and ODConv ResNets: N(0, 0.01), zero bias. Attention BatchNorms
    start at (1, 0), as ``nn.BatchNorm1d`` already does. Each conv's kernel draw is its
    :attr:`fmd.conv.ConvSpec.kernel_init`.
    """
    kernel_init = conv_spec(model.conv).kernel_init
    for m in model.modules():
        if isinstance(m, DynamicConv2dBase):
            for k in range(m.kernel_num):
                kernel_init(m.weight[k])
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            for fc in m.modules():
                if isinstance(fc, nn.Linear):
                    nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
                    if fc.bias is not None:
                        nn.init.zeros_(fc.bias)
    nn.init.normal_(model.fc.weight, 0.0, 0.01)
    nn.init.zeros_(model.fc.bias)


def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18; keyword arguments as :class:`ResNet`."""
    return ResNet(18, **kwargs)


def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34; keyword arguments as :class:`ResNet`."""
    return ResNet(34, **kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50; keyword arguments as :class:`ResNet`."""
    return ResNet(50, **kwargs)


def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101; keyword arguments as :class:`ResNet`."""
    return ResNet(101, **kwargs)
