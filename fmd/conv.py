"""One dynamic-convolution core and the layers built on it.

Every dynamic layer computes, for each sample b of the batch,

    y_b = a_out,b ⊙ ( conv(a_in,b ⊙ x_b,  Σ_k π_bk (s_b ⊙ W_k)) + Σ_k π_bk β_k )

with input attention a_in (B×C_in), kernel attention π (B×K), spatial attention s (B×kh×kw),
output attention a_out (B×C_out), K kernels W_k and K optional biases β_k. A layer only says
which attentions it computes (``attend``); :func:`dynamic_conv2d` decides how to compute the rest.
"""
from __future__ import annotations

import inspect
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .attention import (Attention, AttentionTrunk, ExpertRouting, KernelAttention, SigmoidGate,
                        SoftmaxAttention, check_paper_kernel_temperature, check_temperature,
                        iter_tempered)
from .temperature import Schedule, dyconv_schedules, fmdconv_schedules, odconv_schedules

IntPair = Union[int, Tuple[int, int]]

# How the per-sample convolution is computed; "auto" picks one per call by a cost rule
# (choose_strategy), "tune" by timing every exact strategy once per shape (tune_strategy).
STRATEGIES = ("auto", "tune", "shared", "grouped", "parallel", "unfold", "batched")


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


def mix_kernels(weight: Tensor, kernel: Optional[Tensor], spatial: Optional[Tensor]) -> Tensor:
    """Per-sample kernels Σ_k π_bk (s_b ⊙ W_k): K×O×I×kh×kw → B×O×I×kh×kw."""
    K = weight.shape[0]
    if kernel is None:
        # No kernel attention: the K kernels are mixed uniformly.
        mixed = (weight.mean(0) if K > 1 else weight[0]).unsqueeze(0)
    elif kernel.shape[0] == 1 and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
        # Batch-1 inference is memory-bound: stream the bank once into a reused buffer. A fresh
        # multi-megabyte tensor per call costs more in page faults than the mix itself.
        out = _workspace(weight[0].numel(), weight)
        mixed = torch.mm(kernel, weight.reshape(K, -1), out=out).reshape(1, *weight.shape[1:])
        if spatial is not None:  # in place, for the same reason
            return mixed.mul_(spatial[:, None, None])
    else:
        mixed = torch.mm(kernel, weight.reshape(K, -1)).reshape(kernel.shape[0], *weight.shape[1:])
    if spatial is not None:
        mixed = mixed * spatial[:, None, None]
    return mixed


_WORKSPACES = threading.local()


def _workspace(numel: int, like: Tensor) -> Tensor:
    """A per-thread 1×numel buffer, reused across calls and layers of the same size."""
    cache = getattr(_WORKSPACES, "cache", None)
    if cache is None:
        cache = _WORKSPACES.cache = {}
    key = (numel, like.dtype, like.device, torch.is_inference_mode_enabled())
    if key not in cache:
        cache[key] = torch.empty(1, numel, dtype=like.dtype, device=like.device)
    return cache[key]


def mix_bias(bias: Optional[Tensor], kernel: Optional[Tensor]) -> Optional[Tensor]:
    """Per-sample bias Σ_k π_bk β_k (B×O), the uniform mean without kernel attention, or None."""
    if bias is None:
        return None
    if kernel is None:
        return bias.mean(0, keepdim=True)
    return kernel @ bias


def _scale_channels(x: Tensor, scale: Optional[Tensor]) -> Tensor:
    return x if scale is None else x * scale[:, :, None, None]


def _add_bias(y: Tensor, bias: Optional[Tensor]) -> Tensor:
    return y if bias is None else y + bias[:, :, None, None]


class Geometry:
    """Stride, padding, dilation and groups of a convolution, as ``F.conv2d`` takes them."""

    __slots__ = ("stride", "padding", "dilation", "groups")

    def __init__(self, stride: Tuple[int, int], padding: Union[str, Tuple[int, int]],
                 dilation: Tuple[int, int], groups: int) -> None:
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    def conv(self, x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
             groups: Optional[int] = None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation,
                        self.groups if groups is None else groups)


def _conv_shared(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                 geo: Geometry) -> Tensor:
    """No per-sample kernel: one ordinary convolution over the whole batch."""
    w = mix_kernels(weight, None, None)[0]
    b = mix_bias(bias, None)
    y = geo.conv(_scale_channels(x, att.input), w, None if b is None else b[0])
    return _scale_channels(y, att.output)


def _conv_grouped(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                  geo: Geometry) -> Tensor:
    """Mix a kernel per sample, then one convolution with groups = batch × groups.

    At batch size 1 this is a single ordinary convolution with the mixed kernel. Where the kernel
    is smaller than the feature map, the input and output gates are folded into it:
    (a_in ⊙ x) * W = x * (W ⊙ a_in) and a_out ⊙ (x * W + β) = x * (a_out ⊙ W) + a_out ⊙ β.
    """
    B = x.shape[0]
    per_sample = att.kernel is not None or att.spatial is not None
    x, biases, inputs, fold_output = _fold_gates(x, weight, bias, att, geo, per_sample or B == 1)
    if (B > 1 and per_sample and torch.is_grad_enabled() and not isinstance(geo.padding, str)
            and not torch.compiler.is_compiling()):
        # Training: rebuild the per-sample kernels in backward rather than keep them (B·|W| each).
        y = _add_bias(_RecomputedKernelConv.apply(x, geo, *inputs), biases)
    else:
        y = _conv_per_sample(x, _per_sample_kernels(geo.groups, B, *inputs), biases, geo)
    return y if fold_output else _scale_channels(y, att.output)


def _fold_gates(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention, geo: Geometry,
                per_sample: bool) -> Tuple[Tensor, Optional[Tensor], tuple, bool]:
    """Fold the gates into the per-sample kernels where :func:`_foldable_gates` says so.

    Returns the input (scaled by the input gate unless folded), the per-sample biases (B×O, scaled
    by the output gate if folded), the inputs of :func:`_per_sample_kernels` after ``groups`` and
    ``batch``, and whether the output gate was folded (if not, the caller scales the output).
    """
    fold_input, fold_output = _foldable_gates(x, weight, att, geo, per_sample)
    biases = mix_bias(bias, att.kernel)
    if biases is not None:
        biases = (biases * att.output if fold_output else biases).expand(x.shape[0], -1)
    inputs = (weight, att.kernel, att.spatial, att.input if fold_input else None,
              att.output if fold_output else None)
    return (x if fold_input else _scale_channels(x, att.input)), biases, inputs, fold_output


def _leaves(tensors, needs_grad) -> list:
    """Detached copies of saved tensors (None stays None) that require grad where asked."""
    return [None if t is None else t.detach().requires_grad_(need)
            for t, need in zip(tensors, needs_grad)]


def _grads_for(leaves: list, found) -> list:
    """Spread the gradients of the leaves that require grad over all leaves (None elsewhere)."""
    found = iter(found)
    return [next(found) if t is not None and t.requires_grad else None for t in leaves]


def _conv_per_sample(x: Tensor, kernels: Tensor, biases: Optional[Tensor], geo: Geometry) -> Tensor:
    """Sample b of ``x`` convolved with its own kernels: one convolution with groups = B × groups."""
    B = x.shape[0]
    y = geo.conv(x.reshape(1, -1, *x.shape[2:]), kernels,
                 None if biases is None else biases.reshape(-1), groups=B * geo.groups)
    return y.reshape(B, -1, *y.shape[2:])


def _per_sample_kernels(groups: int, batch: int, weight: Tensor, kernel: Optional[Tensor],
                        spatial: Optional[Tensor], in_gate: Optional[Tensor],
                        out_gate: Optional[Tensor]) -> Tensor:
    """The (B·O)×(I/G)×kh×kw kernels of the grouped convolution, gates folded in where given."""
    O, I = weight.shape[1:3]
    kernels = mix_kernels(weight, kernel, spatial)
    if in_gate is not None or out_gate is not None:
        scale = torch.ones(1, 1, 1, dtype=weight.dtype, device=weight.device)
        if in_gate is not None:
            scale = scale * in_gate.reshape(batch, groups, 1, I).expand(
                batch, groups, O // groups, I).reshape(batch, O, I)
        if out_gate is not None:
            scale = scale * out_gate[:, :, None]
        kernels = kernels * scale[..., None, None]
    return kernels.expand(batch, *weight.shape[1:]).reshape(-1, *weight.shape[2:])


class _RecomputedKernelConv(torch.autograd.Function):
    """The grouped convolution of :func:`_conv_grouped` that saves the inputs of the per-sample
    kernels, not the kernels: backward mixes them again (a memory-bound pass, cheap next to the
    convolution) and sends their gradient back through the mix with autograd."""

    @staticmethod
    def forward(ctx, x: Tensor, geo: Geometry, *inputs: Optional[Tensor]) -> Tensor:
        B = x.shape[0]
        with torch.no_grad():
            kernels = _per_sample_kernels(geo.groups, B, *inputs)
        ctx.geo = geo
        ctx.save_for_backward(x, *inputs)
        return _conv_per_sample(x, kernels, None, geo)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, *inputs = ctx.saved_tensors
        geo, B = ctx.geo, x.shape[0]
        leaves = _leaves(inputs, ctx.needs_input_grad[2:])
        with torch.enable_grad():
            kernels = _per_sample_kernels(geo.groups, B, *leaves)
        grad_x, grad_kernels, _ = torch.ops.aten.convolution_backward(
            grad.reshape(1, -1, *grad.shape[2:]), x.reshape(1, -1, *x.shape[2:]), kernels.detach(),
            None, geo.stride, geo.padding, geo.dilation, False, (0, 0), B * geo.groups,
            (ctx.needs_input_grad[0], True, False))
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        found = torch.autograd.grad(kernels, wanted, grad_kernels) if wanted else ()
        grads = _grads_for(leaves, found)
        return (None if grad_x is None else grad_x.reshape(x.shape), None, *grads)


# The ``batched`` strategy mixes the kernels of a chunk of samples at a time, so that the chunk's
# kernels, written by the mix and read at once by the matmul, stay in the last-level cache (32 MiB
# on the CPUs measured). ``auto`` picks it on small maps for kernels of at least 1 MiB (smaller
# per-sample matmuls run inefficiently: 4× slower than ``parallel`` for a width-16 ResNet-18) whose
# whole bank fits the chunk budget (a larger bank is read again for every chunk: 4×4, 512→512 ran
# 32× static). Measured on CIFAR ResNet-18 at batch 128, fwd+bwd, 8×8 maps, 256→256: batched 2.7×,
# parallel 4.8×, unfold 5.6× static; whole training step 2.55× → 2.19× static (ResNet-50 at batch
# 32: 2.72× → 2.11×).
BATCHED_CHUNK_BYTES = 16 * 2**20
BATCHED_MIN_KERNEL_BYTES = 2**20


def _kernel_bytes(weight: Tensor) -> int:
    return weight[0].numel() * weight.element_size()


def _batched_pays_off(weight: Tensor) -> bool:
    """Large kernels (≥ 1 MiB: the per-sample matmuls are big enough to run efficiently) whose
    whole bank fits the chunk budget (the mix reads it from the cache for every chunk)."""
    return (_kernel_bytes(weight) >= BATCHED_MIN_KERNEL_BYTES
            and _kernel_bytes(weight) * weight.shape[0] <= BATCHED_CHUNK_BYTES)


def _chunks(weight: Tensor, batch: int) -> List[slice]:
    """Slices of the batch whose mixed kernels fill at most BATCHED_CHUNK_BYTES (at least 1)."""
    size = max(1, BATCHED_CHUNK_BYTES // _kernel_bytes(weight))
    return [slice(start, min(batch, start + size)) for start in range(0, batch, size)]


def _conv_batched(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                  geo: Geometry) -> Tensor:
    """Per-sample kernels applied as a batched matmul to the im2col columns, a few samples at a time.

    The same arithmetic as one static convolution (not K times it, as ``parallel`` and ``unfold``),
    without the groups = batch convolution that is slow on small maps. The samples go through in
    chunks whose mixed kernels fit in the cache; training rebuilds them in backward.
    Only for groups = 1 and numeric padding.
    """
    x, biases, inputs, fold_output = _fold_gates(x, weight, bias, att, geo, True)
    y = _add_bias(_BatchedKernelMatmul.apply(x, geo, *inputs), biases)
    return y if fold_output else _scale_channels(y, att.output)


def _rows(t: Optional[Tensor], part: slice) -> Optional[Tensor]:
    return None if t is None else t[part]


class _BatchedKernelMatmul(torch.autograd.Function):
    """y_b = M_b · unfold(x_b) with M_b the per-sample kernel of sample b, chunk by chunk; saves
    the inputs of the kernels, and backward rebuilds each chunk's kernels and columns."""

    @staticmethod
    def forward(ctx, x: Tensor, geo: Geometry, weight: Tensor, *attentions: Optional[Tensor]
                ) -> Tensor:
        B, O = x.shape[0], weight.shape[1]
        cols = F.unfold(x, weight.shape[-2:], geo.dilation, geo.padding, geo.stride)
        y = cols.new_empty(B, O, cols.shape[-1])
        with torch.no_grad():
            for part in _chunks(weight, B):
                n = part.stop - part.start
                kernels = _per_sample_kernels(1, n, weight, *(_rows(a, part) for a in attentions))
                torch.bmm(kernels.reshape(n, O, -1), cols[part], out=y[part])
        ctx.geo = geo
        ctx.save_for_backward(x, weight, *attentions)
        return y.reshape(B, O, *_output_size(x, weight, geo))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, *attentions = ctx.saved_tensors
        geo, B, O = ctx.geo, x.shape[0], weight.shape[1]
        kernel_size = weight.shape[-2:]
        cols = F.unfold(x, kernel_size, geo.dilation, geo.padding, geo.stride)
        grad = grad.reshape(B, O, -1)
        grad_cols = torch.empty_like(cols) if ctx.needs_input_grad[0] else None
        leaves = _leaves((weight, *attentions), ctx.needs_input_grad[2:])
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        sums: list = [None] * len(wanted)
        for part in _chunks(weight, B):
            n = part.stop - part.start
            with torch.enable_grad():
                kernels = _per_sample_kernels(1, n, leaves[0], *(_rows(a, part) for a in leaves[1:]))
            flat = kernels.detach().reshape(n, O, -1)
            if grad_cols is not None:
                torch.bmm(flat.transpose(1, 2), grad[part], out=grad_cols[part])
            if wanted:
                grad_kernels = torch.bmm(grad[part], cols[part].transpose(1, 2))
                found = torch.autograd.grad(kernels, wanted, grad_kernels.reshape(kernels.shape))
                sums = [g if acc is None else acc.add_(g) for acc, g in zip(sums, found)]
        grads = _grads_for(leaves, sums)
        grad_x = None if grad_cols is None else F.fold(
            grad_cols, x.shape[-2:], kernel_size, geo.dilation, geo.padding, geo.stride)
        return (grad_x, None, *grads)


def _foldable_gates(x: Tensor, weight: Tensor, att: Attention, geo: Geometry,
                    per_sample: bool) -> Tuple[bool, bool]:
    """Whether to fold the input and the output gate into the per-sample kernels.

    Only where a kernel per sample exists already (``per_sample``), and only where the kernel is
    smaller than the feature map the gate would otherwise scale (C·H·W in, O·H_out·W_out out).
    """
    if not per_sample or (att.input is None and att.output is None):
        return False, False
    kernel_size = weight[0].numel()
    fold_input = att.input is not None and kernel_size < x[0].numel()
    fold_output = (att.output is not None
                   and kernel_size < weight.shape[1] * _output_positions(x, weight, geo))
    return fold_input, fold_output


def _stack_by_group(weight: Tensor, groups: int) -> Tensor:
    """K×O×I×kh×kw → (G·K·O/G)×I×kh×kw, so each group's K kernels sit together."""
    K, O = weight.shape[:2]
    w = weight.reshape(K, groups, O // groups, *weight.shape[2:]).transpose(0, 1)
    return w.reshape(K * O, *weight.shape[2:])


def _mix_outputs(y: Tensor, kernel: Tensor, groups: int, out_channels: int) -> Tensor:
    """B×(G·K·O/G)×H×W outputs of K kernels → B×O×H×W mixed by π (B×K)."""
    B, _, H, W = y.shape
    K = kernel.shape[1]
    y = y.reshape(B, groups, K, out_channels // groups, H * W)
    return torch.einsum("bk,bgkol->bgol", kernel, y).reshape(B, out_channels, H, W)


def _conv_parallel(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                   geo: Geometry) -> Tensor:
    """K convolutions in one call (K·O output channels), mixed by π afterwards.

    Costs K times the convolution's arithmetic but runs as one large, efficient convolution.
    Needs no spatial attention (a per-sample tap scale does not commute with the convolution).
    """
    K, O = weight.shape[:2]
    y = geo.conv(_scale_channels(x, att.input), _stack_by_group(weight, geo.groups))
    y = _mix_outputs(y, att.kernel, geo.groups, O)
    return _scale_channels(_add_bias(y, mix_bias(bias, att.kernel)), att.output)


def _conv_unfold(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                 geo: Geometry) -> Tensor:
    """im2col, spatial attention moved onto the input taps, one matmul with all K kernels.

    (s_b ⊙ W_k) · X_b = W_k · (s_b ⊙ X_b) because the taps are a contracted dimension.
    Only for groups = 1 and numeric padding.
    """
    B, C = x.shape[:2]
    K, O, _, kh, kw = weight.shape
    cols = F.unfold(_scale_channels(x, att.input), (kh, kw), geo.dilation, geo.padding, geo.stride)
    L = cols.shape[-1]
    if att.spatial is not None:
        cols = (cols.reshape(B, C, kh * kw, L) * att.spatial.reshape(B, 1, kh * kw, 1))
        cols = cols.reshape(B, C * kh * kw, L)
    y = torch.matmul(weight.reshape(K * O, C * kh * kw), cols)  # B×(K·O)×L
    y = _mix_outputs(y.reshape(B, K * O, *_output_size(x, weight, geo)), att.kernel, 1, O)
    return _scale_channels(_add_bias(y, mix_bias(bias, att.kernel)), att.output)


_IMPLEMENTATIONS: Dict[str, Callable[..., Tensor]] = {
    "shared": _conv_shared,
    "grouped": _conv_grouped,
    "parallel": _conv_parallel,
    "unfold": _conv_unfold,
    "batched": _conv_batched,
}


def applicable_strategies(att: Attention, geo: Geometry) -> Tuple[str, ...]:
    """The strategies that compute this layer's function exactly."""
    if att.kernel is None and att.spatial is None:
        return ("shared", "grouped")
    found = ["grouped"]
    if att.kernel is not None and att.spatial is None:
        found.append("parallel")
    if att.kernel is not None and geo.groups == 1 and not isinstance(geo.padding, str):
        found.append("unfold")
    if geo.groups == 1 and not isinstance(geo.padding, str):
        found.append("batched")
    return tuple(found)


# Below this many output positions per sample the K-fold convolution beats mixing a kernel per
# sample: measured on the CPU for ResNet-18 CIFAR stages, fwd+bwd at batch 128 (fmd.bench):
# 1024 and 256 positions → grouped (1.6× and 2.2× static, K-fold 4.1× and 4.7×),
# 64 and 16 positions → K-fold (4.7× and 5.0×, grouped 6.4× and 18.6×).
GROUPED_MIN_POSITIONS = 128
# Below this many output positions, a k×k (k > 1) kernel runs faster as one im2col matmul than as
# a K-fold convolution: 3×3, 512→512 on a 4×4 map, fwd+bwd at batch 128: unfold 3.5×, parallel
# 4.9× static; 256→512 stride 2 to 4×4: 3.1× and 4.4×; on 8×8 maps parallel wins (4.5× vs 5.1×).
UNFOLD_MAX_POSITIONS = 32


def choose_strategy(x: Tensor, weight: Tensor, att: Attention, geo: Geometry) -> str:
    """The fastest exact strategy for this call.

    * no per-sample kernel → ``shared``: one ordinary convolution over the batch;
    * batch 1 → ``grouped``: the mixed kernel is one ordinary convolution;
    * a mixed kernel per sample is reused at every output position, so mixing pays off on large
      maps (``grouped``), while on small maps running the K kernels as one K-fold convolution and
      mixing the outputs is faster (``parallel``); on the smallest maps, and with a spatial
      attention, one im2col matmul with all K kernels (``unfold``) is faster still; but on small
      maps, a large kernel whose bank fits in the cache runs fastest as per-sample matmuls over
      chunks of the batch (``batched``, same arithmetic as a static convolution);
    * inside a traced graph (torch.export, torch.compile) the batch size may be symbolic, so a
      strategy that does not depend on it is used.
    """
    options = applicable_strategies(att, geo)
    if "shared" in options:
        return "shared"
    batch_free = [name for name in ("parallel", "unfold") if name in options]
    if torch.compiler.is_compiling():
        return batch_free[0] if batch_free else "grouped"
    if x.shape[0] == 1:
        return "grouped"
    positions = _output_positions(x, weight, geo)
    if not batch_free or positions >= GROUPED_MIN_POSITIONS:
        return "grouped"
    if "batched" in options and _batched_pays_off(weight):
        return "batched"
    if ("unfold" in options and positions < UNFOLD_MAX_POSITIONS
            and weight.shape[-2] * weight.shape[-1] > 1):
        return "unfold"
    return batch_free[0]


_TUNED: Dict[tuple, str] = {}


def tune_strategy(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                  geo: Geometry, repeats: int = 3) -> str:
    """The strategy that ran fastest here for this shape, mode and device, timed once and cached.

    Like ``cudnn.benchmark``: each exact strategy runs ``repeats`` times (forward, and backward
    when gradients are on) on detached copies of the inputs; the fastest is remembered.
    """
    import time

    grad = torch.is_grad_enabled() and weight.requires_grad
    key = (tuple(x.shape), tuple(weight.shape), bias is not None,
           tuple(a is not None for a in att), geo.stride, geo.padding, geo.dilation, geo.groups,
           x.dtype, str(x.device), grad)
    if key in _TUNED:
        return _TUNED[key]
    options = applicable_strategies(att, geo)
    if len(options) == 1 or torch.compiler.is_compiling():
        return choose_strategy(x, weight, att, geo)
    leaf = lambda t: None if t is None else t.detach().requires_grad_(grad)  # noqa: E731
    args = (leaf(x), leaf(weight), leaf(bias), Attention(*(leaf(a) for a in att)), geo)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    timings = {}
    for name in options:
        best = float("inf")
        for _ in range(repeats + 1):  # the first run warms up
            sync()
            start = time.perf_counter()
            out = _IMPLEMENTATIONS[name](*args)
            if grad:
                out.backward(torch.ones_like(out))
            sync()
            best = min(best, time.perf_counter() - start)
        timings[name] = best
    _TUNED[key] = min(timings, key=timings.get)
    return _TUNED[key]


def _output_size(x: Tensor, weight: Tensor, geo: Geometry) -> Tuple[int, int]:
    """Height and width of the convolution's output."""
    if geo.padding == "same":  # only with stride 1, as F.conv2d requires
        return x.shape[-2], x.shape[-1]
    padding = (0, 0) if geo.padding == "valid" else geo.padding
    sizes = []
    for dim in range(2):
        extent = geo.dilation[dim] * (weight.shape[3 + dim] - 1) + 1
        sizes.append((x.shape[2 + dim] + 2 * padding[dim] - extent) // geo.stride[dim] + 1)
    return sizes[0], sizes[1]


def _output_positions(x: Tensor, weight: Tensor, geo: Geometry) -> int:
    height, width = _output_size(x, weight, geo)
    return height * width


def dynamic_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                   geo: Geometry, strategy: str = "auto") -> Tensor:
    """Compute a dynamic convolution with the given (or automatically chosen) strategy."""
    if strategy == "auto":
        strategy = choose_strategy(x, weight, att, geo)
    elif strategy == "tune":
        strategy = tune_strategy(x, weight, bias, att, geo)
    elif strategy not in applicable_strategies(att, geo):
        raise ValueError(f"strategy {strategy!r} cannot compute this layer; applicable: "
                         f"{applicable_strategies(att, geo)}")
    return _IMPLEMENTATIONS[strategy](x, weight, bias, att, geo)


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
        if value not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {value!r}")
        self._strategy = value

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

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        att = self.attend(x)
        strategy = self.strategy
        if strategy == "auto":
            strategy = choose_strategy(x, self.weight, att, self.geometry)
        elif strategy == "tune":
            strategy = tune_strategy(x, self.weight, self.bias, att, self.geometry)
        if not torch.compiler.is_compiling():
            self.last_strategy = strategy
        return dynamic_conv2d(x, self.weight, self.bias, att, self.geometry, strategy)

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
        z = self.trunk(x) if self.trunk is not None else None
        return Attention(
            input=None if self.input_head is None else self.input_head(z),
            kernel=None if self.kernel_attention is None else self.kernel_attention(x),
            output=None if self.output_head is None else self.output_head(z),
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", attentions={self.attentions}, preset={self.preset}"


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

    @property
    def schedule_fields(self) -> Tuple[str, ...]:
        """The config fields that :attr:`schedules` reads."""
        return () if self.schedules is None else tuple(inspect.signature(self.schedules).parameters)

    @property
    def run_fields(self) -> Tuple[str, ...]:
        """The config fields that change what a run of this convolution computes."""
        return tuple(dict.fromkeys((*self.options.values(), *self.schedule_fields)))

    def layer_options(self, config: Any) -> Dict[str, Any]:
        """This layer's keyword options, read from ``config``'s fields."""
        return {option: getattr(config, name) for option, name in self.options.items()}

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
             schedules=dyconv_schedules),
    ConvSpec("odconv", ODConv2d, "ODConv", "#d95f02", "D", ":",
             options={"kernel_num": "kernel_num"}, kernel_option="kernel_num",
             schedules=odconv_schedules),
    # The official FMDConv mixes K biases inside its blocks (its 45.20M parameters count them);
    # every other conv follows torchvision: no bias in front of a BatchNorm.
    ConvSpec("fmdconv", FMDConv2d, "FMDConv", "#e7298a", "v",
             options={name: name for name in _FMD_OPTIONS}, kernel_option="kernel_num",
             schedules=fmdconv_schedules, resnet_bias=True),
)}


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
