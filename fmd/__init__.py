"""fmd: dynamic convolution (FMDConv and its baselines) for image classification."""
from . import runs
from .attention import Attention
from .conv import (CONV_REGISTRY, STRATEGIES, CondConv2d, DynamicConv2d, DynamicConv2dBase,
                   FMDConv2d, ODConv2d, dynamic_conv2d, make_conv)
from .models import ResNet, resnet18, resnet34, resnet50, resnet101
from .temperature import (Constant, LinearAnneal, StepDecay, apply_schedules, default_schedules,
                          set_temperature)

from .data import DATASETS, get_datasets, make_loaders
# fmd.train stays the module (``fmd.train.train(config)``), so only its names are re-exported.
from .train import RECIPES, CheckpointError, NonFiniteLossError, TrainConfig, make_config

__version__ = "0.1.0"
