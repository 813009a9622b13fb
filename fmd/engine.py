"""The dynamic-convolution engine: the per-sample convolution, computed one of several ways.

Every dynamic layer computes, for each sample b of the batch,

    y_b = a_out,b ⊙ ( conv(a_in,b ⊙ x_b,  Σ_k π_bk (s_b ⊙ W_k)) + Σ_k π_bk β_k )

with input attention a_in (B×C_in), kernel attention π (B×K), spatial attention s (B×kh×kw),
output attention a_out (B×C_out), K kernels W_k and K optional biases β_k. The layers
(:mod:`fmd.conv`) compute the attentions; :func:`dynamic_conv2d` computes the rest with one of
these exact strategies:

* ``shared`` — no per-sample kernel (no kernel or spatial attention): one ordinary convolution;
* ``grouped`` — mix a kernel per sample, then one convolution with groups = batch (the official
  code's computation; at batch 1 one ordinary convolution);
* ``kfold_conv`` — the K kernels as one K-fold convolution, the K outputs mixed by π;
* ``kfold_im2col`` — im2col and one matrix product with all K kernels (a spatial attention moves
  onto the input taps);
* ``sample_im2col`` — im2col and a matrix product with each sample's mixed kernel, over chunks
  of the batch whose kernels fit in the cache;
* ``kfold_matrix`` — on a map smaller than the kernel, each of the K convolutions written as the
  dense matrix of its linear map (only the taps that land inside the map), one matrix product.

``auto`` picks one per call by a cost rule (:func:`choose_strategy`), ``tune`` by timing every
exact strategy once per shape (:func:`tune_strategy`).
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import Attention

STRATEGIES = ("auto", "tune", "shared", "grouped", "kfold_conv", "kfold_im2col", "sample_im2col",
              "kfold_matrix")
# Names used before the strategies were named after what they compute; refused with the new name.
RENAMED = {"parallel": "kfold_conv", "unfold": "kfold_im2col", "batched": "sample_im2col"}


def mix_kernels(weight: Tensor, kernel: Optional[Tensor], spatial: Optional[Tensor]) -> Tensor:
    """Per-sample kernels Σ_k π_bk (s_b ⊙ W_k): K×O×I×kh×kw → B×O×I×kh×kw, a new tensor."""
    return _mix(weight, kernel, spatial, reuse=False)


def mix_kernels_reusing(weight: Tensor, kernel: Optional[Tensor], spatial: Optional[Tensor]) -> Tensor:
    """:func:`mix_kernels` as the batch-1 inference path computes it: into a per-thread buffer
    that the next such call overwrites (what the benchmark's breakdown times)."""
    return _mix(weight, kernel, spatial, reuse=True)


def _mix(weight: Tensor, kernel: Optional[Tensor], spatial: Optional[Tensor], reuse: bool) -> Tensor:
    """:func:`mix_kernels`; with ``reuse``, a batch-1 inference mix goes into a per-thread buffer
    that the next such mix overwrites: only for a caller that consumes the kernels at once."""
    K = weight.shape[0]
    if kernel is None:
        # No kernel attention: the K kernels are mixed uniformly.
        mixed = (weight.mean(0) if K > 1 else weight[0]).unsqueeze(0)
    elif (reuse and kernel.shape[0] == 1 and not torch.is_grad_enabled()
          and not torch.compiler.is_compiling()):
        # Batch-1 inference is memory-bound: stream the bank once into a reused buffer. A fresh
        # multi-megabyte tensor per call costs more in page faults than the mix itself.
        # Under autocast (which skips out= calls) the mix stays in the bank's dtype: casting the
        # bank to bf16 first would read it once more; the convolution casts the mixed kernel.
        out = _workspace(weight[0].numel(), weight)
        mixed = torch.mm(kernel.to(weight.dtype), weight.reshape(K, -1), out=out)
        mixed = mixed.reshape(1, *weight.shape[1:])
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


class KernelRecipe(NamedTuple):
    """What the per-sample kernels are made of: the bank, the attentions that mix and scale it,
    and the gates folded into them (``None``: not used or not folded)."""

    weight: Tensor  # K×O×(I/G)×kh×kw
    kernel: Optional[Tensor] = None  # B×K
    spatial: Optional[Tensor] = None  # B×kh×kw
    in_gate: Optional[Tensor] = None  # B×I, folded input gate
    out_gate: Optional[Tensor] = None  # B×O, folded output gate

    def rows(self, part: slice) -> "KernelRecipe":
        """The recipe of the samples in ``part`` (the bank is shared)."""
        return KernelRecipe(self.weight, *(None if t is None else t[part] for t in self[1:]))


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
    x, biases, recipe, fold_output = _fold_gates(x, weight, bias, att, geo, per_sample or B == 1)
    if (B > 1 and per_sample and torch.is_grad_enabled() and not isinstance(geo.padding, str)
            and not torch.compiler.is_compiling()
            and B * _kernel_bytes(weight) > RECOMPUTE_MIN_KERNEL_BYTES):
        # Training with large per-sample kernels: rebuild them in backward rather than keep them.
        y = _add_bias(_RecomputedKernelConv.apply(x, geo, *recipe), biases)
    else:
        kernels = _per_sample_kernels(geo.groups, B, recipe, reuse=True)
        y = _conv_per_sample(x, kernels, biases, geo)
    return y if fold_output else _scale_channels(y, att.output)


def _fold_gates(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention, geo: Geometry,
                per_sample: bool) -> Tuple[Tensor, Optional[Tensor], KernelRecipe, bool]:
    """Fold the gates into the per-sample kernels where :func:`_foldable_gates` says so.

    Returns the input (scaled by the input gate unless folded), the per-sample biases (B×O, scaled
    by the output gate if folded), the recipe of the per-sample kernels, and whether the output
    gate was folded (if not, the caller scales the output).
    """
    fold_input, fold_output = _foldable_gates(x, weight, att, geo, per_sample)
    biases = mix_bias(bias, att.kernel)
    if biases is not None:
        biases = (biases * att.output if fold_output else biases).expand(x.shape[0], -1)
    recipe = KernelRecipe(weight, att.kernel, att.spatial, att.input if fold_input else None,
                          att.output if fold_output else None)
    return (x if fold_input else _scale_channels(x, att.input)), biases, recipe, fold_output


def _leaves(tensors, needs_grad) -> list:
    """Detached copies of saved tensors (None stays None) that require grad where asked."""
    return [None if t is None else t.detach().requires_grad_(need)
            for t, need in zip(tensors, needs_grad)]


def _grads_for(leaves: list, found) -> list:
    """Spread the gradients of the leaves that require grad over all leaves (None elsewhere)."""
    found = iter(found)
    return [next(found) if t is not None and t.requires_grad else None for t in leaves]


def _without_autocast(x: Tensor):
    """Autocast switched off on ``x``'s device (nothing where autocast does not exist).

    The hand-written passes below run under it, backward too: a backward may run inside an
    autocast region (``tune`` times each strategy's backward inside the network's autocast
    forward; a user may call backward there), where the mix and the products would come out in
    bf16 and meet the fp32 tensors saved for backward.
    """
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


def _in_bank_dtype(x: Tensor, recipe: Sequence[Optional[Tensor]]) -> Tuple[Tensor, list]:
    """``x`` and the recipe in the dtype of the kernel bank (recipe[0]). Under autocast the
    hand-written backward passes below compute in the bank's dtype (fp32 under bf16 autocast):
    autocast does not reach their ``out=`` products and explicit backward calls. Autograd casts
    the gradients they return back to each input's dtype."""
    dtype = recipe[0].dtype
    return x.to(dtype), [None if t is None else t.to(dtype) for t in recipe]


def _conv_per_sample(x: Tensor, kernels: Tensor, biases: Optional[Tensor], geo: Geometry) -> Tensor:
    """Sample b of ``x`` convolved with its own kernels: one convolution with groups = B × groups."""
    B = x.shape[0]
    y = geo.conv(x.reshape(1, -1, *x.shape[2:]), kernels,
                 None if biases is None else biases.reshape(-1), groups=B * geo.groups)
    return y.reshape(B, -1, *y.shape[2:])


def _per_sample_kernels(groups: int, batch: int, recipe: KernelRecipe, reuse: bool = False) -> Tensor:
    """The (B·O)×(I/G)×kh×kw kernels of the grouped convolution, gates folded in where given
    (``reuse``: see :func:`_mix`)."""
    weight, kernel, spatial, in_gate, out_gate = recipe
    O, I = weight.shape[1:3]
    kernels = _mix(weight, kernel, spatial, reuse)
    if in_gate is not None or out_gate is not None:
        scale = torch.ones(1, 1, 1, dtype=weight.dtype, device=weight.device)
        if in_gate is not None:
            scale = scale * in_gate.reshape(batch, groups, 1, I).expand(
                batch, groups, O // groups, I).reshape(batch, O, I)
        if out_gate is not None:
            scale = scale * out_gate[:, :, None]
        kernels = kernels * scale[..., None, None]
    return kernels.expand(batch, *weight.shape[1:]).reshape(-1, *weight.shape[2:])


# Below this many bytes of per-sample kernels (B·|W|) training keeps them for backward, as autograd
# does, instead of rebuilding them there: the rebuild's extra mix and hand-written backward cost
# more than they save on small kernels. Measured on the CPU, fwd+bwd at batch 128, the gates
# folded, against a static convolution: 16→16 on 16×16 maps 1.57× rebuilt, 1.05× kept (1.2 MB of
# kernels); 32→32 on 8×8 3.41× and 2.88×; 64→64 on 32×32 1.48× and 1.27× (19 MB); 128→128 on
# 16×16 2.58× and 2.36× (75 MB). The budget bounds what a layer keeps for backward.
RECOMPUTE_MIN_KERNEL_BYTES = 64 * 2**20


class _RecomputedKernelConv(torch.autograd.Function):
    """The grouped convolution of :func:`_conv_grouped` that saves the inputs of the per-sample
    kernels, not the kernels: backward mixes them again (a memory-bound pass, cheap next to the
    convolution) and sends their gradient back through the mix with autograd."""

    @staticmethod
    def forward(ctx, x: Tensor, geo: Geometry, *recipe: Optional[Tensor]) -> Tensor:
        # The recipe comes as separate tensors: autograd tracks only tensors passed to apply.
        B = x.shape[0]
        x, recipe = _in_bank_dtype(x, recipe)
        with torch.no_grad(), _without_autocast(x):
            kernels = _per_sample_kernels(geo.groups, B, KernelRecipe(*recipe))
            ctx.geo = geo
            ctx.save_for_backward(x, *recipe)
            return _conv_per_sample(x, kernels, None, geo)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, *recipe = ctx.saved_tensors
        geo, B = ctx.geo, x.shape[0]
        leaves = _leaves(recipe, ctx.needs_input_grad[2:])
        with _without_autocast(x):
            with torch.enable_grad():
                kernels = _per_sample_kernels(geo.groups, B, KernelRecipe(*leaves))
            grad_x, grad_kernels, _ = torch.ops.aten.convolution_backward(
                grad.reshape(1, -1, *grad.shape[2:]), x.reshape(1, -1, *x.shape[2:]),
                kernels.detach(), None, geo.stride, geo.padding, geo.dilation, False, (0, 0),
                B * geo.groups, (ctx.needs_input_grad[0], True, False))
            wanted = [t for t in leaves if t is not None and t.requires_grad]
            found = torch.autograd.grad(kernels, wanted, grad_kernels) if wanted else ()
        grads = _grads_for(leaves, found)
        return (None if grad_x is None else grad_x.reshape(x.shape), None, *grads)


# The ``sample_im2col`` strategy mixes the kernels of a chunk of samples at a time, so that the chunk's
# kernels, written by the mix and read at once by the matmul, stay in the last-level cache (32 MiB
# on the CPUs measured). ``auto`` picks it on small maps for kernels of at least 1 MiB (smaller
# per-sample matmuls run inefficiently: 4× slower than ``kfold_conv`` for a width-16 ResNet-18) whose
# whole bank fits the chunk budget (a larger bank is read again for every chunk: 4×4, 512→512 ran
# 32× static). Measured on CIFAR ResNet-18 at batch 128, fwd+bwd, 8×8 maps, 256→256: sample_im2col 2.7×,
# kfold_conv 4.8×, kfold_im2col 5.6× static; whole training step 2.55× → 2.19× static (ResNet-50 at batch
# 32: 2.72× → 2.11×).
SAMPLE_IM2COL_CHUNK_BYTES = 16 * 2**20
SAMPLE_IM2COL_MIN_KERNEL_BYTES = 2**20


def _kernel_bytes(weight: Tensor) -> int:
    return weight[0].numel() * weight.element_size()


def _sample_im2col_pays_off(weight: Tensor) -> bool:
    """Large kernels (≥ 1 MiB: the per-sample matmuls are big enough to run efficiently) whose
    whole bank fits the chunk budget (the mix reads it from the cache for every chunk)."""
    return (_kernel_bytes(weight) >= SAMPLE_IM2COL_MIN_KERNEL_BYTES
            and _kernel_bytes(weight) * weight.shape[0] <= SAMPLE_IM2COL_CHUNK_BYTES)


def _chunks(weight: Tensor, batch: int) -> List[slice]:
    """Slices of the batch whose mixed kernels fill at most SAMPLE_IM2COL_CHUNK_BYTES (at least 1)."""
    size = max(1, SAMPLE_IM2COL_CHUNK_BYTES // _kernel_bytes(weight))
    return [slice(start, min(batch, start + size)) for start in range(0, batch, size)]


def _conv_sample_im2col(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                        geo: Geometry) -> Tensor:
    """Per-sample kernels applied as a batched matmul to the im2col columns, a few samples at a time.

    The same arithmetic as one static convolution (not K times it, as the K-fold strategies),
    without the groups = batch convolution that is slow on small maps. The samples go through in
    chunks whose mixed kernels fit in the cache; training rebuilds them in backward.
    Only for groups = 1 and numeric padding.
    """
    x, biases, recipe, fold_output = _fold_gates(x, weight, bias, att, geo, True)
    y = _add_bias(_SampleIm2colMatmul.apply(x, geo, *recipe), biases)
    return y if fold_output else _scale_channels(y, att.output)


class _SampleIm2colMatmul(torch.autograd.Function):
    """y_b = M_b · unfold(x_b) with M_b the per-sample kernel of sample b, chunk by chunk; saves
    the inputs of the kernels, and backward rebuilds each chunk's kernels and columns."""

    @staticmethod
    def forward(ctx, x: Tensor, geo: Geometry, *recipe: Optional[Tensor]) -> Tensor:
        x, recipe = _in_bank_dtype(x, recipe)
        weight = recipe[0]
        B, O = x.shape[0], weight.shape[1]
        cols = F.unfold(x, weight.shape[-2:], geo.dilation, geo.padding, geo.stride)
        y = cols.new_empty(B, O, cols.shape[-1])
        with torch.no_grad(), _without_autocast(x):
            for part in _chunks(weight, B):
                n = part.stop - part.start
                kernels = _per_sample_kernels(1, n, KernelRecipe(*recipe).rows(part), reuse=True)
                torch.bmm(kernels.reshape(n, O, -1), cols[part], out=y[part])
        ctx.geo = geo
        ctx.save_for_backward(x, *recipe)
        return y.reshape(B, O, *_output_size(x, weight, geo))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, *recipe = ctx.saved_tensors
        weight = recipe[0]
        geo, B, O = ctx.geo, x.shape[0], weight.shape[1]
        kernel_size = weight.shape[-2:]
        cols = F.unfold(x, kernel_size, geo.dilation, geo.padding, geo.stride)
        grad = grad.reshape(B, O, -1)
        grad_cols = torch.empty_like(cols) if ctx.needs_input_grad[0] else None
        leaves = KernelRecipe(*_leaves(recipe, ctx.needs_input_grad[2:]))
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        sums: list = [None] * len(wanted)
        with _without_autocast(x):
            for part in _chunks(weight, B):
                n = part.stop - part.start
                with torch.enable_grad():
                    kernels = _per_sample_kernels(1, n, leaves.rows(part))
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
                   and kernel_size < weight.shape[1] * output_positions(x, weight, geo))
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


def _conv_kfold(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                geo: Geometry) -> Tensor:
    """K convolutions in one call (K·O output channels), mixed by π afterwards.

    Costs K times the convolution's arithmetic but runs as one large, efficient convolution.
    Needs no spatial attention (a per-sample tap scale does not commute with the convolution).
    """
    K, O = weight.shape[:2]
    y = geo.conv(_scale_channels(x, att.input), _stack_by_group(weight, geo.groups))
    y = _mix_outputs(y, att.kernel, geo.groups, O)
    return _scale_channels(_add_bias(y, mix_bias(bias, att.kernel)), att.output)


def _conv_kfold_im2col(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                       geo: Geometry) -> Tensor:
    """im2col, spatial attention moved onto the input taps, one matmul with all K kernels.

    (s_b ⊙ W_k) · X_b = W_k · (s_b ⊙ X_b) because the taps are a contracted dimension.
    Only for groups = 1 and numeric padding. One ``mm`` over (C·kh·kw, B·L) instead of the batched
    product measured no faster for forward + backward where this strategy is chosen (Intel Xeon,
    one thread, batch 128, K = 4: 6.10× → 6.23× static at 64→64 on 4×4, 4.24× → 4.64× at 128→128
    on 2×2); it was faster only at 32→32 on 8×8 (9.31× → 7.33×), where ``grouped`` (about 2.3×)
    beats both.
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


_TAP_READS: Dict[tuple, tuple] = {}


def _tap_reads(x: Tensor, weight: Tensor, geo: Geometry
               ) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...], int]:
    """(taps, output positions, input positions) of every tap of this call's convolution that
    lands inside the map, and the number of output positions (0 where the geometry has no
    output); remembered per geometry (a dict: torch.compile traces through it)."""
    (H, W), (kh, kw) = x.shape[-2:], weight.shape[-2:]
    key = ((H, W), (kh, kw), geo.stride, geo.padding, geo.dilation)
    if key in _TAP_READS:
        return _TAP_READS[key]
    Ho, Wo = _output_size(x, weight, geo)
    if Ho < 1 or Wo < 1:
        Ho = Wo = 0
    (sy, sx), (py, px), (dy, dx) = geo.stride, geo.padding, geo.dilation
    reads = [(i * kw + j, oy * Wo + ox, iy * W + ix)
             for i in range(kh) for j in range(kw) for oy in range(Ho) for ox in range(Wo)
             for iy in [oy * sy - py + i * dy] for ix in [ox * sx - px + j * dx]
             if 0 <= iy < H and 0 <= ix < W]
    taps, positions, inputs = (tuple(column) for column in zip(*reads)) if reads else ((), (), ())
    _TAP_READS[key] = (taps, positions, inputs, Ho * Wo)
    return _TAP_READS[key]


def tap_selection(x: Tensor, weight: Tensor, geo: Geometry) -> Tensor:
    """The 0/1 tensor S (kh·kw × L × H·W) with S[t, l, q] = 1 where tap t of output position l reads
    input position q: im2col without the taps that fall in the padding. Built from constants, so
    a traced graph (torch.compile, ONNX export) holds it as one."""
    H, W = x.shape[-2:]
    kh, kw = weight.shape[-2:]
    taps, positions, reads, L = _tap_reads(x, weight, geo)
    selection = torch.zeros(kh * kw, L, H * W, dtype=weight.dtype, device=x.device)
    index = torch.tensor([taps, positions, reads], dtype=torch.long, device=x.device)
    return selection.index_put_((index[0], index[1], index[2]), selection.new_ones(()))


def _conv_kfold_matrix(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                       geo: Geometry) -> Tensor:
    """Each kernel as the dense matrix of its convolution over the whole map, one matrix product.

    M_k[(o, l), (c, q)] = W_k[o, c, tap(l, q)] where tap t of output position l reads input
    position q, and 0 elsewhere: on an H×W map with H·W < kh·kw this is fewer products than im2col
    (2×2 maps, 3×3 kernels: 16 against 36 per output and input channel; 1×1: 1 against 9), and
    it runs as one large matrix product, where a static convolution of that size runs far below
    its peak (``fmd.bench --breakdown``, quick shapes, Intel Xeon, one thread, batch 128, K = 4,
    forward + backward with the attentions: FMDConv 128→128 on 2×2 2.9× static against 4.0× with
    ``kfold_im2col``). Building the matrices is a cost per call, which small batches do not repay
    (:data:`MATRIX_MIN_BATCH`). A spatial attention scales each (l, q) pair by its tap: it moves onto
    a per-position copy of the input, and the product is batched over output positions. Where
    ``kfold_im2col`` applies (a kernel attention, groups = 1, numeric padding) and
    :func:`matrix_applies`.
    """
    B, C, H, W = x.shape
    K, O, _, kh, kw = weight.shape
    size = _output_size(x, weight, geo)
    select = tap_selection(x, weight, geo)  # kh·kw × L × H·W
    L = select.shape[1]
    matrix = torch.einsum("jct,tlq->jlcq", weight.reshape(K * O, C, kh * kw), select)
    x = _scale_channels(x, att.input).reshape(B, C, H * W)
    if att.spatial is None:
        y = torch.mm(x.reshape(B, C * H * W), matrix.reshape(K * O * L, C * H * W).t())
    else:
        scale = torch.einsum("bt,tlq->blq", att.spatial.reshape(B, kh * kw).to(select.dtype), select)
        x = (x.unsqueeze(1) * scale.unsqueeze(2)).reshape(B, L, C * H * W)
        y = torch.einsum("blz,jlz->bjl", x, matrix.reshape(K * O, L, C * H * W))
    y = _mix_outputs(y.reshape(B, K * O, *size), att.kernel, 1, O)
    return _scale_channels(_add_bias(y, mix_bias(bias, att.kernel)), att.output)


_IMPLEMENTATIONS: Dict[str, Callable[..., Tensor]] = {
    "shared": _conv_shared,
    "grouped": _conv_grouped,
    "kfold_conv": _conv_kfold,
    "kfold_im2col": _conv_kfold_im2col,
    "sample_im2col": _conv_sample_im2col,
    "kfold_matrix": _conv_kfold_matrix,
}


def applicable_strategies(att: Attention, geo: Geometry, x: Optional[Tensor] = None,
                          weight: Optional[Tensor] = None) -> Tuple[str, ...]:
    """The strategies that compute this layer's function exactly; given the call's input and kernel
    bank, also ``kfold_matrix`` where :func:`matrix_applies`."""
    if att.kernel is None and att.spatial is None:
        return ("shared", "grouped")
    found = ["grouped"]
    if att.kernel is not None and att.spatial is None:
        found.append("kfold_conv")
    if att.kernel is not None and geo.groups == 1 and not isinstance(geo.padding, str):
        found.append("kfold_im2col")
    if geo.groups == 1 and not isinstance(geo.padding, str):
        found.append("sample_im2col")
    if ("kfold_im2col" in found and x is not None and weight is not None
            and matrix_applies(x, weight, geo)):
        found.append("kfold_matrix")
    return tuple(found)


# kfold_matrix builds K matrices of (O·L)×(C·H·W): at most this many bytes of them (a 7×7 kernel on a
# 6×6 map would build 47 times its bank), and ``auto`` takes it only from MATRIX_MIN_BATCH samples
# up and for matrices of at most MATRIX_AUTO_BYTES. Measured on the CPU (Intel Xeon, one thread,
# FMDConv, forward + backward, kfold_matrix against kfold_im2col): 128→128 on 2×2 (4 MiB of
# matrices) at batch 16, 32, 64, 128: 7.8 / 9.6 / 8.9 / 12.3 ms against 3.6 / 5.6 / 9.5 / 18.2 ms;
# 64→64 on 2×2: 2.5 / 2.7 / 3.2 / 4.1 against 1.9 / 2.7 / 4.1 / 6.6; 128→128 on 1×1 faster from
# batch 16 (1.8 against 2.2 ms); 256→256 on 2×2 (16 MiB) only at batch 128 (50.8 against 57.0 ms).
MATRIX_MAX_BYTES = 16 * 2**20
MATRIX_AUTO_BYTES = 4 * 2**20
MATRIX_MIN_BATCH = 64


def matrix_bytes(x: Tensor, weight: Tensor, geo: Geometry) -> int:
    """The bytes of kfold_matrix's K matrices: K·O·L × C·H·W entries of the bank's dtype."""
    L = _tap_reads(x, weight, geo)[3]
    K, O, C = weight.shape[:3]
    return K * O * L * C * x.shape[-2] * x.shape[-1] * weight.element_size()


def matrix_applies(x: Tensor, weight: Tensor, geo: Geometry) -> bool:
    """Whether ``kfold_matrix`` applies: a map smaller than the kernel (H·W < kh·kw), where it
    multiplies fewer numbers per sample than im2col, with at least one tap inside the map and
    matrices of at most :data:`MATRIX_MAX_BYTES`. Not inside a traced graph: its tap tables fix
    the map size, which a graph may keep symbolic (there ``kfold_im2col`` computes the layer)."""
    if torch.compiler.is_compiling() or isinstance(geo.padding, str):
        return False
    if x.shape[-2] * x.shape[-1] >= weight.shape[-2] * weight.shape[-1]:
        return False
    return bool(_tap_reads(x, weight, geo)[0]) and matrix_bytes(x, weight, geo) <= MATRIX_MAX_BYTES


# Below this many output positions per sample the K-fold convolution beats mixing a kernel per
# sample: measured on the CPU for ResNet-18 CIFAR stages, fwd+bwd at batch 128 (fmd.bench):
# 1024 and 256 positions → grouped (1.6× and 2.2× static, K-fold 4.1× and 4.7×),
# 64 and 16 positions → K-fold (4.7× and 5.0×, grouped 6.4× and 18.6×).
GROUPED_MIN_POSITIONS = 128
# Below this many output positions, a k×k (k > 1) kernel runs faster as one im2col matmul than as
# a K-fold convolution: 3×3, 512→512 on a 4×4 map, fwd+bwd at batch 128: kfold_im2col 3.5×,
# kfold_conv 4.9× static; 256→512 stride 2 to 4×4: 3.1× and 4.4×; on 8×8 maps kfold_conv wins
# (4.5× vs 5.1×).
KFOLD_IM2COL_MAX_POSITIONS = 32
# The thresholds above were measured on CPUs only ("meta" carries shapes, as the CPU would see
# them). No GPU has been measured, so on CUDA (and any other device) ``auto`` takes the official
# code's computation, ``grouped`` (groups = batch), at every size: the conservative rule, which
# computes what the reference computes. ``strategy="tune"`` times every strategy on the device itself (cached
# per device and shape); ``python -m fmd.bench --device cuda`` times ``auto`` beside ``grouped``.
MEASURED_DEVICE_TYPES = ("cpu", "meta")


def symbolic_shape(x: Tensor) -> bool:
    """Whether a traced graph leaves any size of ``x`` symbolic (a dynamic batch, say)."""
    return torch.compiler.is_compiling() and any(isinstance(d, torch.SymInt) for d in x.shape)


def batch_free_strategy(options: Sequence[str]) -> str:
    """Among ``options`` (:func:`applicable_strategies`), what a traced graph whose batch is symbolic
    computes: one that does not depend on the batch (``grouped`` only where nothing else applies)."""
    return next((name for name in ("shared", "kfold_conv", "kfold_im2col") if name in options),
                "grouped")


def choose_strategy(x: Tensor, weight: Tensor, att: Attention, geo: Geometry) -> str:
    """The fastest exact strategy for this call.

    * no per-sample kernel → ``shared``: one ordinary convolution over the batch;
    * batch 1 → ``grouped``: the mixed kernel is one ordinary convolution;
    * a mixed kernel per sample is reused at every output position, so mixing pays off on large
      maps (``grouped``), while on small maps running the K kernels as one K-fold convolution and
      mixing the outputs is faster (``kfold_conv``); on the smallest maps, and with a spatial
      attention, one im2col matmul with all K kernels (``kfold_im2col``) is faster still, and on a
      map smaller than the kernel (2×2 and 1×1 for 3×3), from :data:`MATRIX_MIN_BATCH` samples, the
      K kernels as dense matrices over the map (``kfold_matrix``: quick recipe, Intel Xeon, one
      thread, forward + backward at batch 128, FMDConv 128→128 on 2×2 2.9× static against 4.0×
      ``kfold_im2col``, on 1×1 1.6–1.8× against 3.8–4.3×; ODConv on 1×1 1.7–1.9× against
      4.4–4.6×); but on small
      maps, a large kernel whose bank fits in the cache runs fastest as per-sample matmuls over
      chunks of the batch (``sample_im2col``, same arithmetic as a static convolution);
    * inside a traced graph (torch.compile, torch.export, ONNX export) the same choice wherever
      the graph knows the shape (dynamo specialises batch 1, and every size not marked dynamic),
      but ``kfold_im2col`` for ``kfold_matrix`` (:func:`matrix_applies`); where the batch or a map
      size is symbolic, a strategy that does not depend on it;
    * on any device but the CPU, ``grouped`` (:data:`MEASURED_DEVICE_TYPES`).
    """
    options = applicable_strategies(att, geo, x, weight)
    if "shared" in options or symbolic_shape(x):
        return batch_free_strategy(options)
    batch_free = [name for name in ("kfold_conv", "kfold_im2col") if name in options]
    if x.shape[0] == 1 or x.device.type not in MEASURED_DEVICE_TYPES:
        return "grouped"
    positions = output_positions(x, weight, geo)
    if not batch_free or positions >= GROUPED_MIN_POSITIONS:
        return "grouped"
    if ("kfold_matrix" in options and x.shape[0] >= MATRIX_MIN_BATCH
            and matrix_bytes(x, weight, geo) <= MATRIX_AUTO_BYTES):
        return "kfold_matrix"
    if "sample_im2col" in options and _sample_im2col_pays_off(weight):
        return "sample_im2col"
    if ("kfold_im2col" in options and positions < KFOLD_IM2COL_MAX_POSITIONS
            and weight.shape[-2] * weight.shape[-1] > 1):
        return "kfold_im2col"
    return batch_free[0]


_TUNED: Dict[tuple, str] = {}


def tune_strategy(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                  geo: Geometry, repeats: int = 3) -> str:
    """The strategy that ran fastest here for this shape, mode and device, timed once and cached.

    Like ``cudnn.benchmark``: each exact strategy runs ``repeats`` times (forward, and backward
    when gradients are on) on detached copies of the inputs; the fastest is remembered.
    """

    grad = torch.is_grad_enabled() and weight.requires_grad
    key = (tuple(x.shape), tuple(weight.shape), bias is not None,
           tuple(a is not None for a in att), geo.stride, geo.padding, geo.dilation, geo.groups,
           x.dtype, str(x.device), grad)
    if key in _TUNED:
        return _TUNED[key]
    options = applicable_strategies(att, geo, x, weight)
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


def output_positions(x: Tensor, weight: Tensor, geo: Geometry) -> int:
    height, width = _output_size(x, weight, geo)
    return height * width


def check_strategy(name: str) -> str:
    """Return ``name`` if it is a strategy; a clear error otherwise, naming a renamed one's new name."""
    if name in RENAMED:
        raise ValueError(f"strategy {name!r} was renamed {RENAMED[name]!r}; choose one of {STRATEGIES}")
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    return name


def resolve_strategy(strategy: str, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                     att: Attention, geo: Geometry) -> str:
    """The exact strategy that computes this call: ``auto`` and ``tune`` resolved, a forced one
    checked against :func:`applicable_strategies`."""
    if check_strategy(strategy) == "auto":
        return choose_strategy(x, weight, att, geo)
    if strategy == "tune":
        return tune_strategy(x, weight, bias, att, geo)
    options = applicable_strategies(att, geo, x, weight)
    if strategy not in options:
        raise ValueError(f"strategy {strategy!r} cannot compute this layer; applicable: {options}")
    return strategy


def run_strategy(strategy: str, x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                 geo: Geometry) -> Tensor:
    """Compute the dynamic convolution with an exact strategy that :func:`resolve_strategy` gave."""
    return _IMPLEMENTATIONS[strategy](x, weight, bias, att, geo)


def dynamic_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], att: Attention,
                   geo: Geometry, strategy: str = "auto") -> Tensor:
    """Compute a dynamic convolution with the given (or automatically chosen) strategy."""
    return run_strategy(resolve_strategy(strategy, x, weight, bias, att, geo), x, weight, bias,
                        att, geo)
