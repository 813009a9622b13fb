"""fmd: dynamic convolution (FMDConv and its baselines) for image classification."""
from . import runs
from .attention import Attention
from .conv import (CONVS, CondConv2d, ConvSpec, DynamicConv2d, DynamicConv2dBase, FMDConv2d,
                   ODConv2d, conv_spec, default_schedules, make_conv)
from .engine import STRATEGIES, dynamic_conv2d
from .models import ResNet, resnet18, resnet34, resnet50, resnet101
from .temperature import Constant, LinearAnneal, StepDecay, apply_schedules, set_temperature

from .data import DATASETS, get_datasets, make_loaders

__version__ = "0.1.0"
# fmd.train stays the module (``fmd.train.train(config)``) and is imported on first use, so that
# ``python -m fmd.train`` does not find it imported already by the package (runpy warns then).
_TRAIN_NAMES = ("RECIPES", "CheckpointError", "NonFiniteLossError", "TrainConfig", "make_config")
__all__ = ["Attention", "CONVS", "CondConv2d", "ConvSpec", "DynamicConv2d", "DynamicConv2dBase",
           "FMDConv2d", "ODConv2d", "conv_spec", "default_schedules", "make_conv", "STRATEGIES",
           "dynamic_conv2d", "ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "Constant",
           "LinearAnneal", "StepDecay", "apply_schedules", "set_temperature", "DATASETS",
           "get_datasets", "make_loaders", "runs", "train", *_TRAIN_NAMES]


def __getattr__(name: str):
    if name == "train" or name in _TRAIN_NAMES:
        import importlib
        train = importlib.import_module(".train", __name__)
        return train if name == "train" else getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
