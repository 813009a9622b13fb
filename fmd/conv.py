"""The dynamic convolution layers, drop-in replacements for ``nn.Conv2d``, and their registry.

Each layer holds a bank of K kernels and computes its attentions (:meth:`DynamicConv2dBase.attend`);
the engine (:mod:`fmd.engine`) computes the per-sample convolution from them. :data:`CONVS` holds
everything the repository knows about each convolution, by name.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .attention import (Attention, AttentionTrunk, ExpertRouting, KernelAttention, SigmoidGate,
                        SoftmaxAttention, check_paper_kernel_temperature, check_temperature,
                        global_pool, iter_tempered)
from .engine import Geometry, check_strategy, resolve_strategy, run_strategy
from .temperature import Schedule, dyconv_schedules, fmdconv_schedules, odconv_schedules

IntPair = Union[int, Tuple[int, int]]


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_conv_args(in_channels: int, out_channels: int, groups: int) -> None:
    """Raise a clear error for channel counts that ``nn.Conv2d`` would also refuse."""
    _positive_int("in_channels", in_channels)
    _positive_int("out_channels", out_channels)
    _positive_int("groups", groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                         f"must both be divisible by groups ({groups})")


class DynamicConv2dBase(nn.Module):
    """A bank of K kernels (and optional K biases) aggregated per sample by attentions.

    Takes ``nn.Conv2d``'s positional arguments; subclasses add their attention branches and
    implement :meth:`attend`. ``strategy`` forces how the convolution is computed ("auto" picks
    per call); ``last_strategy`` shows what the last forward used.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: Union[str, IntPair] = 0, dilation: IntPair = 1, groups: int = 1,
                 bias: bool = True, *, kernel_num: int = 4, strategy: str = "auto") -> None:
        super().__init__()
        check_conv_args(in_channels, out_channels, groups)
        _positive_int("kernel_num", kernel_num)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair(kernel_size)
        for name, value in (("kernel_size", self.kernel_size), ("stride", _pair(stride)),
                            ("dilation", _pair(dilation))):
            for v in value:
                _positive_int(name, v)
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid' or integers, got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1 (as nn.Conv2d), got stride "
                                 f"{self.stride}; give the padding as integers instead")
            self.padding: Union[str, Tuple[int, int]] = padding
        else:
            self.padding = _pair(padding)
        self.kernel_num = kernel_num
        self.strategy = strategy  # validated by the property setter
        self.last_strategy: Optional[str] = None
        self.weight = nn.Parameter(torch.empty(kernel_num, out_channels, in_channels // groups,
                                               *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(kernel_num, out_channels)) if bias else None
        self.reset_parameters()

    @property
    def strategy(self) -> str:
        return self._strategy

    @strategy.setter
    def strategy(self, value: str) -> None:
        self._strategy = check_strategy(value)

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.stride, self.padding, self.dilation, self.groups)

    def reset_parameters(self) -> None:
        """Initialise every kernel and bias separately, exactly as ``nn.Conv2d`` does its own."""
        fan_in = self.weight[0].shape[1] * self.kernel_size[0] * self.kernel_size[1]
        for k in range(self.kernel_num):
            nn.init.kaiming_uniform_(self.weight[k], a=math.sqrt(5))
            if self.bias is not None:
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(self.bias[k], -bound, bound)

    def attend(self, x: Tensor) -> Attention:  # pragma: no cover - abstract
        """Compute this layer's attentions for the input batch."""
        raise NotImplementedError

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error for a non-4-D input or a wrong number of channels."""
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects a 4-D input B×C×H×W, "
                             f"got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, "
                             f"got {x.shape[1]} (input shape {tuple(x.shape)})")
        if x.dtype != self.weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(f"{type(self).__name__} holds {self.weight.dtype} weights but got a "
                             f"{x.dtype} input — convert one to the other (e.g. layer.to({x.dtype}) "
                             f"or x.to({self.weight.dtype}))")

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        att, geo = self.attend(x), self.geometry
        strategy = resolve_strategy(self.strategy, x, self.weight, self.bias, att, geo)
        if not torch.compiler.is_compiling():
            self.last_strategy = strategy
        return run_strategy(strategy, x, self.weight, self.bias, att, geo)

    def set_temperature(self, kernel: Optional[float] = None, gate: Optional[float] = None) -> None:
        """Set the temperatures of this layer's softmax (kernel) and sigmoid (gate) attentions."""
        for branch in iter_tempered(self):
            value = kernel if branch.temperature_role == "kernel" else gate
            if value is not None:
                branch.set_temperature(value)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        s += f", bias={self.bias is not None}, kernel_num={self.kernel_num}, strategy={self.strategy}"
        if self.last_strategy is not None:
            s += f" (last: {self.last_strategy})"
        return s


class CondConv2d(DynamicConv2dBase):
    """CondConv (Yang et al., 2019): sigmoid routing over ``num_experts`` kernels, no softmax."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: Union[str, IntPair] = 0, dilation: IntPair = 1, groups: int = 1,
                 bias: bool = True, *, num_experts: int = 8, strategy: str = "auto") -> None:
        _positive_int("num_experts", num_experts)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, kernel_num=num_experts, strategy=strategy)
        self.routing = ExpertRouting(in_channels, num_experts)

    def attend(self, x: Tensor) -> Attention:
        return Attention(kernel=self.routing(x))


class DynamicConv2d(DynamicConv2dBase):
    """DynamicConv (Chen et al., 2020): softmax(FC(ReLU(FC(GAP(x))))/T) over K kernels.

    ``temperature`` is where training starts; the paper anneals it 30 → 1 over the first 10 epochs
    (:mod:`fmd.temperature`); a widely used unofficial implementation steps it 34 → 1 by 3 per
    epoch (:class:`fmd.temperature.StepDecay`).

    The authors published no PyTorch code; beside kaijieshi7/Dynamic-convolution-Pytorch @ 4befa50
    (``dynamic_conv.py``, ``dynamic_models/dy_resnet.py``) this layer differs in (README, "Differences
    from the official code"): a layer built on its own draws its kernels as ``nn.Conv2d``'s (there
    ``kaiming_uniform_`` with a = 0, √6 ≈ 2.4× wider), biases U(±1/√fan_in) (there zero) and
    attention FCs as ``nn.Linear``'s (there kaiming-normal on fan-out, zero bias) — inside a
    :class:`fmd.models.ResNet` (``init="official"``, the default) they are drawn as there — and the
    default schedule (there T = 34 at build, lowered by 3 after each epoch's training, before its
    evaluation).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: Union[str, IntPair] = 0, dilation: IntPair = 1, groups: int = 1,
                 bias: bool = True, *, kernel_num: int = 4, ratio: float = 0.25,
                 temperature: float = 30.0, strategy: str = "auto") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, kernel_num=kernel_num, strategy=strategy)
        self.kernel_attention = KernelAttention(in_channels, kernel_num, ratio, temperature)

    def attend(self, x: Tensor) -> Attention:
        return Attention(kernel=self.kernel_attention(x))


class ODConv2d(DynamicConv2dBase):
    """ODConv (Li et al., 2022): one trunk, four heads over one temperature.

    Input-channel, output-filter and spatial (k×k) sigmoid attentions and a kernel softmax over K,
    all on ``z = ReLU(BN(FC(GAP(x))))`` of width ``max(int(C_in·reduction), min_channels)``. As in
    the official code, the filter head is skipped for depth-wise convolutions, the spatial head for
    1×1 kernels and the kernel head for K = 1. No bias (the official layer has none).

    Differences from the official code (OSVAI/ODConv @ 0901cc1, ``modules/odconv.py``; README,
    "Differences from the official code"), each of which changes a run from its first step:

    * initialisation, for a layer built on its own: kernels as ``nn.Conv2d``'s (kaiming-uniform,
      a = √5, on fan-in) and the trunk and heads as ``nn.Linear``'s; the official layer draws each
      kernel and every attention FC kaiming-normal on fan-out (ReLU gain) with zero head biases,
      so its kernel softmax starts less uniform (at T = 30). Inside a :class:`fmd.models.ResNet`
      (``init="official"``, the default, :func:`fmd.models.official_init`) they are drawn as there;
    * temperature timing, only under ``temperature_clock="fmd"`` (the quick records trained
      before the official clock): :func:`fmd.loop.train_epoch` sets step i's T at progress
      ``epoch + i/iters``, one iteration behind the official ``main.py``'s
      ``get_temperature(i + 1, …)``; the default clock, ``"official"``, sets what it sets;
    * a layer built on its own divides by ``temperature`` (30); the official ``Attention`` starts
      at 1.0 until the training script sets 30 before the first step;
    * the trunk's BatchNorm trains at batch size 1 (:class:`fmd.attention.TrunkBatchNorm`); the
      official one raises.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: Union[str, IntPair] = 0, dilation: IntPair = 1, groups: int = 1,
                 bias: bool = False, *, kernel_num: int = 4, reduction: float = 1 / 16,
                 min_channels: int = 16, norm: str = "batch", temperature: float = 30.0,
                 strategy: str = "auto") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, kernel_num=kernel_num, strategy=strategy)
        check_temperature(temperature)
        self.trunk = AttentionTrunk(in_channels, reduction, min_channels, norm)
        width = self.trunk.width
        self.input_head = SigmoidGate(width, in_channels, temperature)
        depthwise = in_channels == groups == out_channels
        self.output_head = None if depthwise else SigmoidGate(width, out_channels, temperature)
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.spatial_head = SigmoidGate(width, taps, temperature) if taps > 1 else None
        self.kernel_head = SoftmaxAttention(width, kernel_num, temperature) if kernel_num > 1 else None

    def attend(self, x: Tensor) -> Attention:
        z = self.trunk(x)
        apply = lambda head: None if head is None else head(z)  # noqa: E731
        spatial = apply(self.spatial_head)
        if spatial is not None:
            spatial = spatial.reshape(-1, *self.kernel_size)
        return Attention(input=apply(self.input_head), kernel=apply(self.kernel_head),
                         spatial=spatial, output=apply(self.output_head))


FMD_ATTENTIONS = ("input", "kernel", "output")
FMD_PRESETS = ("official", "paper")


class FMDConv2d(DynamicConv2dBase):
    """FMDConv (Zhang et al., 2025): input, kernel and output attention.

    * input attention ``sigmoid(head_in(z)/T_io)`` scales the input map before the convolution;
    * output attention ``sigmoid(head_out(z)/T_io)`` scales the output after it (and its bias);
    * both share the trunk ``z = ReLU(BN(FC(GAP(x))))`` of width ``max(int(C_in/16), 16)``;
    * the kernel attention is a separate DynamicConv-style branch
      ``softmax(FC(ReLU(FC(GAP(x))))/T_k)`` of hidden width ``int(C_in·ratio)+1``, mixing K kernels
      and K biases.

    ``preset`` picks the temperature schedule that :mod:`fmd.temperature` applies in training:

    * ``"official"`` — what the official code does: T_k stays at ``kernel_temperature`` (34) for the
      whole run, and only T_io anneals ``gate_temperature`` (30) → 1 over the first epochs;
    * ``"paper"`` — what the paper's text describes: a temperature-degraded kernel attention, T_k
      falling by 3 per epoch from ``kernel_temperature`` (≡ 1 mod 3) to 1; T_io as above.

    ``attentions`` switches branches off for ablations; without kernel attention the K kernels are
    mixed uniformly (one effective kernel, computed as one ordinary convolution).

    Differences from the official code (tianyu00824/FMDConv @ b1c6d77: ``modules/fmdconv.py``,
    ``models/fmd_resnet.py``, ``main.py``, ``utils/misc.py``; README, "Differences from the
    official code"). Outputs with the same weights and temperatures match; training from scratch
    differs from its first step in:

    * initialisation, for a layer built on its own: the K kernels and K biases as ``nn.Conv2d``'s
      (kaiming-uniform, a = √5, on fan-in; biases U(±1/√fan_in)) and every attention FC as
      ``nn.Linear``'s; the official layer draws each kernel and every attention FC kaiming-normal
      on fan-out (ReLU gain) with zero biases. Its kernel-attention FCs start wider (std
      √(2/hidden) and √(2/K) against 1/√(3·C_in) and 1/√(3·hidden) here: 0.34 and 0.71 against
      0.072 and 0.14 for C_in = 64, K = 4), so at the fixed T_k = 34 its kernel softmax starts
      less uniform. Inside a :class:`fmd.models.ResNet` (``init="official"``, the default,
      :func:`fmd.models.official_init`) they are drawn as there;
    * temperature timing, only under ``temperature_clock="fmd"`` (the quick records trained
      before the official clock): :func:`fmd.loop.train_epoch` sets step i's T_io at progress
      ``epoch + i/iters``, one iteration behind the official ``main.py``'s
      ``get_temperature(i + 1, …)``; the default clock, ``"official"``, sets what it sets;
    * a layer built on its own divides its gates by ``gate_temperature`` (30); the official
      ``Attention`` starts at 1.0 until the training script sets 30 before the first step;
    * ``preset="official"`` accepts any positive T_k; the official ``attention2d`` asserts
      T_k ≡ 1 (mod 3);
    * the trunk's BatchNorm trains at batch size 1 (:class:`fmd.attention.TrunkBatchNorm`); the
      official one raises.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: Union[str, IntPair] = 0, dilation: IntPair = 1, groups: int = 1,
                 bias: bool = True, *, kernel_num: int = 4, reduction: float = 1 / 16,
                 min_channels: int = 16, ratio: float = 0.25, norm: str = "batch",
                 attentions: Tuple[str, ...] = FMD_ATTENTIONS, kernel_temperature: float = 34.0,
                 gate_temperature: float = 30.0, preset: str = "official",
                 strategy: str = "auto") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, kernel_num=kernel_num, strategy=strategy)
        unknown = set(attentions) - set(FMD_ATTENTIONS)
        if unknown or isinstance(attentions, str):
            raise ValueError(f"attentions must be a subset of {FMD_ATTENTIONS}, got {attentions!r}")
        if preset not in FMD_PRESETS:
            raise ValueError(f"preset must be one of {FMD_PRESETS}, got {preset!r}")
        check_temperature(kernel_temperature)
        check_temperature(gate_temperature)
        if preset == "paper":
            check_paper_kernel_temperature(kernel_temperature)
        self.attentions = tuple(a for a in FMD_ATTENTIONS if a in attentions)
        self.preset = preset
        uses_trunk = "input" in attentions or "output" in attentions
        self.trunk = AttentionTrunk(in_channels, reduction, min_channels, norm) if uses_trunk else None
        width = self.trunk.width if uses_trunk else 0
        self.input_head = (SigmoidGate(width, in_channels, gate_temperature)
                           if "input" in attentions else None)
        depthwise = in_channels == groups == out_channels  # as the official code: no filter head
        self.output_head = (SigmoidGate(width, out_channels, gate_temperature)
                            if "output" in attentions and not depthwise else None)
        self.kernel_attention = (KernelAttention(in_channels, kernel_num, ratio, kernel_temperature)
                                 if "kernel" in attentions else None)

    def attend(self, x: Tensor) -> Attention:
        # Both branches read GAP(x): pooled once (its backward is a pass over the whole input map).
        pooled = global_pool(x) if self.trunk is not None or self.kernel_attention is not None else None
        z = self.trunk.from_pooled(pooled) if self.trunk is not None else None
        return Attention(
            input=None if self.input_head is None else self.input_head(z),
            kernel=None if self.kernel_attention is None else self.kernel_attention.from_pooled(pooled),
            output=None if self.output_head is None else self.output_head(z),
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", attentions={self.attentions}, preset={self.preset}"


def fan_out_normal(kernel: Tensor) -> None:
    """Kaiming-normal on fan-out with ReLU's gain: how the official FMDConv and ODConv draw a kernel."""
    nn.init.kaiming_normal_(kernel, mode="fan_out", nonlinearity="relu")


@dataclass(frozen=True)
class ConvSpec:
    """Everything the repository knows about one convolution, in one place.

    ``options`` maps each of the layer's keyword options to the :class:`fmd.train.TrainConfig`
    field it is set from; ``schedules`` returns the reference temperature schedule per role, taking
    config fields by name. The fields of both enter a run's key (:attr:`run_fields`), the others
    do not: a static baseline is shared by every FMDConv ablation instead of being trained again.
    """

    name: str
    layer: Callable[..., nn.Module]
    label: str  # display name in figures and tables
    color: str
    marker: str
    linestyle: str = "-"
    options: Mapping[str, str] = field(default_factory=dict)
    schedules: Optional[Callable[..., Dict[str, Schedule]]] = None
    resnet_bias: bool = False  # whether a ResNet's block convolutions carry a bias
    kernel_option: Optional[str] = None  # the option that counts its kernels (None: one kernel)
    # How fmd.models.official_init draws each of its kernels, as the code the conv comes from does.
    kernel_init: Callable[[Tensor], Any] = fan_out_normal

    @property
    def schedule_fields(self) -> Tuple[str, ...]:
        """The config fields that :attr:`schedules` reads."""
        return () if self.schedules is None else tuple(inspect.signature(self.schedules).parameters)

    @property
    def run_fields(self) -> Tuple[str, ...]:
        """The config fields that change what a run of this convolution computes: its options,
        what its schedules read, and (for a conv with schedules) when a step reads them."""
        clock = ("temperature_clock",) if self.schedules is not None else ()
        return tuple(dict.fromkeys((*self.options.values(), *self.schedule_fields, *clock)))

    def layer_options(self, config: Any) -> Dict[str, Any]:
        """This layer's keyword options, read from ``config``'s fields."""
        return {option: getattr(config, name) for option, name in self.options.items()}

    def kernel_options(self, count: int) -> Dict[str, int]:
        """The layer options that give it ``count`` kernels ({} for a conv of one kernel)."""
        return {} if self.kernel_option is None else {self.kernel_option: count}

    def kernel_count(self, options: Mapping[str, Any]) -> int:
        """How many kernels a layer built with ``options`` holds."""
        if self.kernel_option is None:
            return 1
        default = inspect.signature(self.layer).parameters[self.kernel_option].default
        return options.get(self.kernel_option, default)


_FMD_OPTIONS = ("kernel_num", "preset", "kernel_temperature", "gate_temperature", "attentions")

# The registry: adding a convolution is one entry here (and its class above).
CONVS: Dict[str, ConvSpec] = {spec.name: spec for spec in (
    ConvSpec("static", nn.Conv2d, "Static", "#4d4d4d", "o"),
    ConvSpec("condconv", CondConv2d, "CondConv", "#1b9e77", "s",
             options={"num_experts": "kernel_num"}, kernel_option="num_experts"),
    ConvSpec("dyconv", DynamicConv2d, "DynamicConv", "#7570b3", "^", "--",
             options={"kernel_num": "kernel_num"}, kernel_option="kernel_num",
             schedules=dyconv_schedules, kernel_init=nn.init.kaiming_uniform_),  # a = 0, fan-in
    ConvSpec("odconv", ODConv2d, "ODConv", "#d95f02", "D", ":",
             options={"kernel_num": "kernel_num"}, kernel_option="kernel_num",
             schedules=odconv_schedules),
    # The official FMDConv mixes K biases inside its blocks (its 45.20M parameters count them);
    # every other conv follows torchvision: no bias in front of a BatchNorm.
    ConvSpec("fmdconv", FMDConv2d, "FMDConv", "#e7298a", "v",
             options={name: name for name in _FMD_OPTIONS}, kernel_option="kernel_num",
             schedules=fmdconv_schedules, resnet_bias=True),
)}
CONV_NAMES: Tuple[str, ...] = tuple(CONVS)  # "static" first
DYNAMIC_CONV_NAMES: Tuple[str, ...] = tuple(n for n in CONVS if n != "static")


def conv_spec(name: str) -> ConvSpec:
    """The registry entry of a convolution, or a clear error naming the registered ones."""
    if name not in CONVS:
        raise ValueError(f"unknown conv {name!r}; choose one of {tuple(CONVS)}")
    return CONVS[name]


def default_schedules(conv: str, **fields: Any) -> Dict[str, Schedule]:
    """The reference temperature schedule of ``conv`` per role (``{}``: no temperature).

    ``fields`` are config fields by name (``preset``, ``kernel_temperature``, ``gate_temperature``,
    ``anneal_epochs``); each conv reads those its schedule needs (see :mod:`fmd.temperature`).
    """
    spec = conv_spec(conv)
    known = {name for s in CONVS.values() for name in s.schedule_fields}
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"unknown schedule field(s) {sorted(unknown)}; accepted: {sorted(known)}")
    if spec.schedules is None:
        return {}
    return spec.schedules(**{k: v for k, v in fields.items() if k in spec.schedule_fields})


def make_conv(name: str, in_channels: int, out_channels: int, kernel_size: IntPair,
              stride: IntPair = 1, padding: Union[str, IntPair] = 0, dilation: IntPair = 1,
              groups: int = 1, bias: Optional[bool] = None, **options) -> nn.Module:
    """Build a registered convolution by name with ``nn.Conv2d``'s arguments plus its own options.

    ``bias=None`` keeps the layer's own default (a bias everywhere except ODConv, as upstream).
    """
    spec = conv_spec(name)
    if spec.layer is nn.Conv2d:
        if options:
            raise ValueError(f"the static conv takes no options, got {sorted(options)}")
        check_conv_args(in_channels, out_channels, groups)
    if bias is not None:
        options["bias"] = bias
    return spec.layer(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                      **options)
