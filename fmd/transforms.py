"""Transforms of a batch: uint8 B×C×H×W in, normalised float out, every random number from the
loader's ``torch.Generator`` (so one generator state resumes the data stream exactly); and the
``transforms.v2`` pipelines of an image folder, whose images differ in size."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .datasets import TRANSFORMS


class BatchTransform:
    """Base of the batched transforms; ``generator`` supplies every random number (on the CPU)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 (or [0, 1] float) images → (x/255 − mean) / std, float32."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return self.normalize(images)

    def output_size(self, size: Tuple[int, int]) -> Tuple[int, int]:
        """Spatial size of the output for inputs of ``size``."""
        return size


class CifarTrain(BatchTransform):
    """CIFAR augmentation: zero-pad by ``pad``, random crop back to H×W, random horizontal flip."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], pad: int = 4,
                 flip: bool = True) -> None:
        super().__init__(mean, std)
        self.pad, self.flip = pad, flip

    def __call__(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        B, C, H, W = images.shape
        p = self.pad
        offsets = torch.randint(0, 2 * p + 1, (2, B), generator=generator)
        flips = torch.rand(B, generator=generator) < 0.5
        x = images
        if p > 0:
            padded = F.pad(images, (p, p, p, p))
            rows = (offsets[0][:, None] + torch.arange(H)).to(images.device)  # B×H
            cols = (offsets[1][:, None] + torch.arange(W)).to(images.device)  # B×W
            batch = torch.arange(B, device=images.device)[:, None, None, None]
            channel = torch.arange(C, device=images.device)[None, :, None, None]
            x = padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
        if self.flip:
            x = torch.where(flips.to(images.device)[:, None, None, None], x.flip(-1), x)
        return self.normalize(x)


def _resample(images: Tensor, theta: Tensor, size: int) -> Tensor:
    """Bilinear crop-and-resize of each image by a B×2×3 affine map to size×size.

    With ``align_corners=False`` this matches resizing with half-pixel centres (torchvision's
    bilinear ``Resize`` for upsampling) exactly.
    """
    x = images.float().div_(255) if images.dtype == torch.uint8 else images
    grid = F.affine_grid(theta.to(x.device, x.dtype), [x.shape[0], x.shape[1], size, size],
                         align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _crop_theta(top: Tensor, left: Tensor, height: Tensor, width: Tensor, H: int, W: int,
                flip: Optional[Tensor] = None) -> Tensor:
    """Affine maps (B×2×3) from output coordinates to the pixel box top/left/height/width."""
    sx, sy = width / W, height / H
    cx, cy = (2 * left + width) / W - 1, (2 * top + height) / H - 1
    if flip is not None:
        sx = torch.where(flip, -sx, sx)
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, cx], -1), torch.stack([zero, sy, cy], -1)], 1)


class ImageNetTrain(BatchTransform):
    """The official code's ImageNet-style training input: RandomResizedCrop(size) + flip."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], size: int = 224,
                 scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> None:
        super().__init__(mean, std)
        self.size, self.scale, self.ratio, self.flip = size, scale, ratio, flip

    def crop_boxes(self, B: int, H: int, W: int,
                   generator: Optional[torch.Generator] = None) -> Tuple[Tensor, ...]:
        """top, left, height, width per image: torchvision's RandomResizedCrop, 10 tries each."""
        tries = 10
        area = H * W * torch.empty(B, tries).uniform_(*self.scale, generator=generator)
        log_ratio = torch.empty(B, tries).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]),
                                                   generator=generator)
        aspect = torch.exp(log_ratio)
        w = torch.sqrt(area * aspect).round()
        h = torch.sqrt(area / aspect).round()
        ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)
        first = ok.int().argmax(dim=1)  # first successful try
        w = w.gather(1, first[:, None])[:, 0]
        h = h.gather(1, first[:, None])[:, 0]
        u = torch.rand(2, B, generator=generator)
        top = torch.floor(u[0] * (H - h + 1))
        left = torch.floor(u[1] * (W - w + 1))
        # No try succeeded: torchvision's fallback, the central crop with the ratio clamped.
        failed = ~ok.any(dim=1)
        if failed.any():
            in_ratio = W / H
            if in_ratio < self.ratio[0]:
                fw, fh = W, round(W / self.ratio[0])
            elif in_ratio > self.ratio[1]:
                fh, fw = H, round(H * self.ratio[1])
            else:
                fw, fh = W, H
            w[failed], h[failed] = float(fw), float(fh)
            top[failed], left[failed] = float((H - fh) // 2), float((W - fw) // 2)
        return top, left, h, w

    def __call__(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        B, _, H, W = images.shape
        top, left, h, w = self.crop_boxes(B, H, W, generator)
        flips = (torch.rand(B, generator=generator) < 0.5) if self.flip else None
        theta = _crop_theta(top, left, h, w, H, W, flips)
        return self.normalize(_resample(images, theta, self.size))

    def output_size(self, size: Tuple[int, int]) -> Tuple[int, int]:
        return (self.size, self.size)


class ImageNetTest(BatchTransform):
    """The official code's ImageNet-style test input: Resize(resize) + CenterCrop(crop)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], resize: int = 256,
                 crop: int = 224) -> None:
        super().__init__(mean, std)
        self.resize, self.crop = resize, crop

    def __call__(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        B, _, H, W = images.shape
        if H != W:
            raise ValueError(f"ImageNetTest expects square images, got {H}×{W}")
        # Resize then center-crop is one crop of the central crop/resize fraction, resized.
        side = torch.full((B,), H * self.crop / self.resize)
        offset = (H - side) / 2
        theta = _crop_theta(offset, offset, side, side, H, W)
        return self.normalize(_resample(images, theta, self.crop))

    def output_size(self, size: Tuple[int, int]) -> Tuple[int, int]:
        return (self.crop, self.crop)


def make_transforms(style: str, mean: Sequence[float],
                    std: Sequence[float]) -> Tuple[BatchTransform, BatchTransform]:
    """(train, test) transforms: ``"cifar"`` (pad-4 crop + flip | normalise), ``"flip"`` (a random
    horizontal flip alone | normalise), ``"imagenet"`` (RandomResizedCrop 224 + flip | Resize 256 +
    CenterCrop 224) or ``"none"`` (normalise only)."""
    if style == "cifar":
        return CifarTrain(mean, std), BatchTransform(mean, std)
    if style == "flip":
        return CifarTrain(mean, std, pad=0), BatchTransform(mean, std)
    if style == "imagenet":
        return ImageNetTrain(mean, std), ImageNetTest(mean, std)
    if style == "none":
        return BatchTransform(mean, std), BatchTransform(mean, std)
    raise ValueError(f"unknown transform {style!r}; choose one of {TRANSFORMS}")


def folder_transforms(style: str) -> Tuple[Callable[[Any], Tensor], Callable[[Any], Tensor]]:
    """(train, test) ``transforms.v2`` pipelines of the images of a :class:`FolderSet`, uint8 out
    (normalised on the training device by the loader): ``"imagenet"`` only, RandomResizedCrop 224 +
    flip | Resize 256 + CenterCrop 224."""
    if style != "imagenet":
        raise ValueError(f"an ImageNet-style folder takes transform 'imagenet' (its images differ "
                         f"in size), got {style!r}")
    from torchvision.transforms import v2

    return (v2.Compose([v2.ToImage(), v2.RandomResizedCrop(224, antialias=True),
                        v2.RandomHorizontalFlip()]),
            v2.Compose([v2.ToImage(), v2.Resize(256, antialias=True), v2.CenterCrop(224)]))
