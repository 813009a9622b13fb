"""Grad-CAM++ heat maps of trained models (chapter 06).

The trained models come from :func:`load_models`: a run's checkpoint where there is one, else the
half-precision weights committed beside its record (:func:`fmd.train.save_weights`), else the run
is trained again.

Heat maps come from the ``grad-cam`` package's ``GradCAMPlusPlus`` on one stage of the ResNet
(``layer4`` by default where its map is large enough; small inputs leave it at 1×1, see
:func:`pick_layer`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .conv import FMD_ATTENTIONS
from .data import config_loaders
from .train import TrainConfig, checkpoint_path, load_trained, save_weights, weights_path

PathLike = Union[str, Path]
STAGES = ("layer1", "layer2", "layer3", "layer4")
CAM_CLASSES = ("predicted", "true")
# The four models of the paper's Figure 4: one attention alone, then all three.
FIGURE4_MODELS: Dict[str, Tuple[str, ...]] = {
    "input only": ("input",),
    "kernel only": ("kernel",),
    "output only": ("output",),
    "input+kernel+output": FMD_ATTENTIONS,
}


def load_models(configs: Dict[str, TrainConfig], runs_root: PathLike) -> Dict[str, tuple]:
    """Each config's trained model (eval mode) and run record, by name. A model loaded from its
    checkpoint also gets its half-precision weights stored beside its record, so that a clone that
    has the records but no checkpoints draws the same maps without training."""
    loaded = {}
    for name, config in configs.items():
        loaded[name] = load_trained(config, runs_root)
        checkpoint = checkpoint_path(config, runs_root)
        weights = weights_path(config, runs_root)
        if checkpoint.is_file() and (not weights.is_file()
                                     or weights.stat().st_mtime < checkpoint.stat().st_mtime):
            save_weights(config, runs_root)
    return loaded


@dataclass
class ImageBatch:
    """Test images as the model sees them (``x``) and as a person sees them (``display``)."""

    x: Tensor  # B×C×H×W, normalised model input
    display: np.ndarray  # B×H×W×C in [0, 1]: the model input with the normalisation undone
    targets: Tensor  # B class indices
    classes: Tuple[str, ...]  # every class name of the dataset
    indices: List[int]  # positions in the test split
    dataset: str  # what the images are, for captions

    @property
    def names(self) -> List[str]:
        """The true class name of each image."""
        return [self.classes[t] for t in self.targets.tolist()]


def pick_images(config: TrainConfig, count: int, *, seed: int = 0,
                data_root: Optional[PathLike] = None) -> ImageBatch:
    """``count`` test images of the run's dataset, as many classes as possible, sorted by class.

    The images are drawn in a seeded random order, taking a class only once per pass, and go
    through the run's own test transform.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    _, test, _, loader = config_loaders(config, data_root)
    if count > len(test):
        raise ValueError(f"count must be at most {len(test)} (the test images), got {count}")
    targets = test.targets  # once: an image folder's is built from its file list
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen: List[int] = []
    while len(chosen) < count:
        used = set()  # classes taken in this pass over the test set
        for i in order:
            label = int(targets[i])
            if i not in chosen and label not in used:
                chosen.append(i)
                used.add(label)
                if len(chosen) == count:
                    break
    chosen.sort(key=lambda i: (int(targets[i]), i))
    x = loader.images(chosen)
    mean = torch.tensor(test.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(test.std).reshape(1, -1, 1, 1)
    display = (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return ImageBatch(x, display, targets[chosen], test.classes, chosen,
                      f"{config.dataset} test split ({count} images)")


def stage_sizes(model: nn.Module, input_size: Sequence[int]) -> Dict[str, Tuple[int, int]]:
    """Output H×W of each ResNet stage (``layer1`` … ``layer4``) for an input of ``input_size``."""
    sizes: Dict[str, Tuple[int, int]] = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda m, i, out, name=name: sizes.__setitem__(name, tuple(out.shape[-2:])))
        for name in STAGES]
    p = next(model.parameters())
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size[1:], dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(training)
    return sizes


def pick_layer(model: nn.Module, input_size: Sequence[int], min_size: int = 4) -> str:
    """The deepest stage whose output map is at least ``min_size``×``min_size``.

    Grad-CAM is usually taken at the last stage (``layer4``); with 32×32 inputs and the ImageNet
    stem that map is 1×1 and a heat map of one pixel says nothing about *where*.
    """
    sizes = stage_sizes(model, input_size)
    for name in reversed(STAGES):
        if min(sizes[name]) >= min_size:
            return name
    raise ValueError(f"no stage has an output of at least {min_size}×{min_size} "
                     f"(stage outputs: {sizes}); lower min_size")


@dataclass
class HeatMaps:
    """Grad-CAM++ of one model on a batch: maps, the class each map explains, and predictions."""

    maps: np.ndarray  # B×H×W, each map scaled to [0, 1] (grad-cam's min-max per image)
    explained: Tensor  # B class indices the maps are computed for
    predicted: Tensor  # B predicted class indices
    probabilities: Tensor  # B softmax probability of the predicted class
    layer: str  # the stage the maps are taken at


def gradcam_plusplus(model: nn.Module, x: Tensor, layer: str = "layer4", *,
                     targets: Optional[Tensor] = None, explain: str = "predicted") -> HeatMaps:
    """Grad-CAM++ maps of ``model`` on ``x`` at stage ``layer``, for the predicted or true class.

    ``explain="true"`` needs ``targets``. The maps are upsampled to the input size by grad-cam.
    """
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if explain not in CAM_CLASSES:
        raise ValueError(f"explain must be one of {CAM_CLASSES}, got {explain!r}")
    if explain == "true" and targets is None:
        raise ValueError("explain='true' needs targets")
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    confidence, predicted = probs.max(dim=1)
    explained = predicted if explain == "predicted" else targets
    with GradCAMPlusPlus(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in explained])
    return HeatMaps(maps, explained.clone(), predicted, confidence, layer)


def heat_on_object(maps: np.ndarray, display: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Per image, the share of the heat map's total on object pixels (brightness > ``threshold``).

    Meaningful where the background is dark and empty, as in Fashion-MNIST; the synthetic set's
    gratings cover the whole image, so there it is close to 1 for any map.
    """
    mask = display.mean(axis=-1) > threshold  # B×H×W
    total = maps.reshape(len(maps), -1).sum(1)
    return (maps * mask).reshape(len(maps), -1).sum(1) / np.maximum(total, 1e-12)
