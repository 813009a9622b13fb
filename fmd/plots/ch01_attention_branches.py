"""Figures of chapter 01 (the attention branches of FMDConv), one function per figure.

The diagrams are drawn from a live :class:`~fmd.conv.FMDConv2d`: every box, width, temperature and
shape is read from the layer's submodules and from one forward pass, so they follow the code.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
from torch import Tensor, nn

from . import conv_color, use_style
from ..attention import (Attention, AttentionTrunk, KernelAttention, SigmoidGate, SoftmaxAttention,
                         iter_tempered)
from ..conv import FMDConv2d
from ..metrics import softmax_entropy

# ---------------------------------------------------------------------------------------------
# What the layer is made of (read from its submodules)


def _linear(m: nn.Linear) -> str:
    return f"Linear {m.in_features}→{m.out_features}" + ("" if m.bias is not None else " (no bias)")


def _norm(m: nn.Module) -> Optional[str]:
    if isinstance(m, nn.Identity):
        return None
    if isinstance(m, nn.BatchNorm1d):
        return f"BatchNorm1d({m.num_features})"
    if isinstance(m, nn.LayerNorm):
        return f"LayerNorm({m.normalized_shape[0]})"
    return type(m).__name__


def branch_steps(branch: nn.Module) -> List[str]:
    """The operations of one attention branch, in order, read from its submodules."""
    if isinstance(branch, AttentionTrunk):
        return [s for s in ("GAP", _linear(branch.fc), _norm(branch.norm), "ReLU") if s]
    if isinstance(branch, KernelAttention):
        return ["GAP", _linear(branch.fc), "ReLU", _linear(branch.head.fc),
                f"softmax(·/T_k), T_k={branch.head.temperature.item():g}"]
    if isinstance(branch, SoftmaxAttention):
        return [_linear(branch.fc), f"softmax(·/T), T={branch.temperature.item():g}"]
    if isinstance(branch, SigmoidGate):
        return [_linear(branch.fc), f"sigmoid(·/T_io), T_io={branch.temperature.item():g}"]
    raise TypeError(f"branch must be an attention module, got {type(branch).__name__}")


def describe_fmdconv(layer: FMDConv2d) -> Dict[str, object]:
    """The structure of an FMDConv layer: widths, K, temperatures and each branch's steps."""
    if not isinstance(layer, FMDConv2d):
        raise TypeError(f"layer must be an FMDConv2d, got {type(layer).__name__}")
    info: Dict[str, object] = {
        "in_channels": layer.in_channels, "out_channels": layer.out_channels,
        "kernel_size": layer.kernel_size, "stride": layer.stride, "K": layer.kernel_num,
        "kernel_bank": tuple(layer.weight.shape),
        "bias_bank": None if layer.bias is None else tuple(layer.bias.shape),
        "attentions": layer.attentions, "preset": layer.preset,
    }
    if layer.trunk is not None:
        info["trunk_width"] = layer.trunk.width
        info["trunk"] = branch_steps(layer.trunk)
    for name in ("input_head", "output_head"):
        head = getattr(layer, name)
        if head is not None:
            info[name] = branch_steps(head)
    if layer.kernel_attention is not None:
        info["kernel_hidden"] = layer.kernel_attention.fc.out_features
        info["kernel_branch"] = branch_steps(layer.kernel_attention)
    return info


# ---------------------------------------------------------------------------------------------
# Temperature figures


def temperature_softmax_figure(logits: Tensor, temperatures: Sequence[float],
                               scales: Sequence[float] = (1.0, 3.0, 10.0)) -> plt.Figure:
    """Kernel-attention weights (logits z) and entropies (logits s·z) as the temperature varies."""
    use_style()
    temps = torch.as_tensor(list(temperatures), dtype=torch.float64)
    z = torch.as_tensor(logits, dtype=torch.float64)
    K = z.numel()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    probs = torch.softmax(z[None, :] / temps[:, None], dim=1)  # T×K
    colors = plt.cm.viridis(np.linspace(0.05, 0.85, K))
    for k in range(K):
        left.plot(temps, probs[:, k], color=colors[k], lw=2, label=f"$π_{k + 1}$ (logit {z[k]:g})")
    left.axhline(1 / K, color="0.4", ls="--", lw=1, label=f"uniform 1/K = {1 / K:g}")
    left.set(xlabel="kernel temperature $T_k$ (dimensionless)", ylabel="attention weight $π_k$",
             title="softmax($z/T_k$) for fixed logits $z$", ylim=(0, 1))
    left.legend(fontsize=8, loc="upper right")
    shades = plt.cm.RdPu(np.linspace(0.45, 0.95, len(scales)))
    for scale, color in zip(scales, shades):
        p = torch.softmax(scale * z[None, :] / temps[:, None], dim=1)
        right.plot(temps, softmax_entropy(p), color=color, lw=2, label=f"logits {scale:g}·z")
    right.axhline(math.log(K), color="0.4", ls="--", lw=1, label=f"maximum ln K = {math.log(K):.3f}")
    right.set(xlabel="kernel temperature $T_k$ (dimensionless)", ylabel="entropy of π (nats)",
              title="how evenly the K kernels are mixed", ylim=(0, math.log(K) * 1.08))
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def temperature_training_figure(schedules: Mapping[str, Mapping[str, object]], logits: Tensor,
                                epochs: float, scales: Sequence[float] = (1.0, 10.0),
                                steps_per_epoch: int = 50) -> plt.Figure:
    """Temperatures and kernel-softmax entropy (fixed logits) over training, one line per preset."""
    use_style()
    t = np.linspace(0.0, epochs, int(epochs * steps_per_epoch) + 1)
    z = torch.as_tensor(logits, dtype=torch.float64)
    K = z.numel()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.9))
    styles = {"official": "-", "paper": "--"}
    for role, color, name in (("kernel", conv_color("fmdconv"), "$T_k$ (kernel softmax)"),
                              ("gate", conv_color("odconv"), "$T_{io}$ (sigmoid gates)")):
        groups: List[Tuple[List[str], object]] = []  # presets sharing one schedule are drawn once
        for preset, roles in schedules.items():
            if role in roles:
                match = [g for g in groups if g[1] == roles[role]]
                if match:
                    match[0][0].append(preset)
                else:
                    groups.append(([preset], roles[role]))
        for presets, schedule in groups:
            left.plot(t, [schedule(e) for e in t], color=color, ls=styles.get(presets[0], ":"),
                      lw=2, label=f"{' = '.join(presets)}: {name}")
    for preset, roles in schedules.items():
        if "kernel" in roles:
            temps = torch.tensor([roles["kernel"](e) for e in t], dtype=torch.float64)
            for scale, color in zip(scales, plt.cm.RdPu(np.linspace(0.55, 0.95, len(scales)))):
                ent = softmax_entropy(torch.softmax(scale * z[None, :] / temps[:, None], dim=1))
                right.plot(t, ent, color=color, ls=styles.get(preset, ":"), lw=2,
                           label=f"{preset}, logits {scale:g}·z")
    right.axhline(math.log(K), color="0.4", ls=":", lw=1, label=f"maximum ln K = {math.log(K):.3f}")
    left.set(xlabel="training progress (epochs)", ylabel="temperature (dimensionless)",
             title="FMDConv temperature schedules", ylim=(0, 40))
    left.legend(fontsize=8, loc="center right", framealpha=0.95)
    right.set(xlabel="training progress (epochs)", ylabel="entropy of π (nats)",
              title="kernel-attention entropy for fixed logits", ylim=(0, math.log(K) * 1.08))
    right.legend(fontsize=8, loc="center right", framealpha=0.95)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Attentions on a real batch


def batch_attentions_figure(images: Optional[Tensor], labels: Optional[Sequence[str]],
                            attentions: Mapping[str, Attention]) -> plt.Figure:
    """Heatmaps (sample × channel or kernel) of the three attentions, one row per temperature setting."""
    use_style()
    settings = list(attentions)
    first = attentions[settings[0]]
    kinds = [(k, t, x) for k, t, x in (
        ("input", "input attention $a_{in}$", "input channel $c$"),
        ("kernel", "kernel attention $π$", "kernel $k$"),
        ("output", "output attention $a_{out}$", "output filter $o$")) if getattr(first, k) is not None]
    B = getattr(first, kinds[0][0]).shape[0]
    widths = [0.7] + [0.9 if kind == "kernel" else 3.0 for kind, _, _ in kinds]
    fig, axes = plt.subplots(len(settings), len(widths), squeeze=False,
                             figsize=(11.5, len(settings) * (0.28 * B + 1.3)),
                             gridspec_kw={"width_ratios": widths, "hspace": 0.55, "wspace": 0.08})
    image = None
    for row, setting in enumerate(settings):
        ax_img = axes[row, 0]
        if images is not None:
            strip = torch.cat([img[0] for img in images[:B]], dim=0).numpy()  # (B·32)×32
            ax_img.imshow(strip, cmap="gray_r", aspect="auto", extent=(0, 1, B - 0.5, -0.5))
            ax_img.set_yticks(range(B), labels if labels is not None else range(B), fontsize=7)
        else:
            ax_img.text(0.5, 0.5, "random\ninput", ha="center", va="center",
                        transform=ax_img.transAxes, fontsize=8)
            ax_img.set_yticks(range(B))
        ax_img.set_xticks([])
        ax_img.grid(False)
        ax_img.set_title(setting, fontsize=9, loc="left", x=-1.2, fontweight="bold")
        for ax, (kind, title, xlabel) in zip(axes[row, 1:], kinds):
            values = getattr(attentions[setting], kind).detach().numpy()
            image = ax.imshow(values, cmap="magma", vmin=0, vmax=1, aspect="auto",
                              interpolation="nearest")
            ax.set_title(f"{title}\nrange {values.min():.2f}–{values.max():.2f}", fontsize=8.5)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_yticks([])
            ax.grid(False)
            if kind == "kernel":
                ax.set_xticks(range(values.shape[1]), [str(k + 1) for k in range(values.shape[1])])
    fig.colorbar(image, ax=axes[:, 1:].ravel().tolist(), fraction=0.02, pad=0.01,
                 label="attention value (0–1)")
    fig.suptitle("FMDConv attentions of one layer, rows = samples of the batch", fontweight="bold",
                 fontsize=11, y=1.0)
    return fig


# ---------------------------------------------------------------------------------------------
# Diagrams drawn from the layer


def _box(ax, xy: Tuple[float, float], w: float, h: float, text: str, color: str,
         fontsize: float = 8.0, alpha: float = 0.18) -> None:
    style = "round,pad=0.02,rounding_size=0.6"
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle=style, facecolor=color, alpha=alpha, lw=0))
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle=style, facecolor="none", edgecolor=color, lw=1.3))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start: Tuple[float, float], end: Tuple[float, float], color: str = "0.25",
           connection: str = "arc3,rad=0") -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, color=color,
                                 lw=1.2, connectionstyle=connection, shrinkA=1, shrinkB=1))


def _wrap(step: str) -> str:
    return step.replace(" (", "\n(").replace(", ", "\n").replace("BatchNorm1d(", "BatchNorm1d\n(")


def _chain(ax, steps: Sequence[str], x0: float, y: float, width: float, color: str,
           h: float = 6.0, gap: float = 2.4) -> Tuple[float, float]:
    """Draw ``steps`` as boxes left to right from x0 at height y; returns the last box's centre x."""
    w = (width - gap * (len(steps) - 1)) / len(steps)
    x = x0
    for i, step in enumerate(steps):
        _box(ax, (x, y), w, h, _wrap(step), color, fontsize=7.5)
        if i:
            _arrow(ax, (x - gap, y + h / 2), (x, y + h / 2))
        x += w + gap
    return x - gap - w / 2, y + h / 2


def _dims(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


def block_diagram(layer: FMDConv2d, input_shape: Sequence[int]) -> plt.Figure:
    """The FMDConv block diagram (the paper's Figure 2), every box read from ``layer``."""
    use_style()
    info = describe_fmdconv(layer)
    training = layer.training
    layer.eval()
    with torch.no_grad():
        y_shape = tuple(layer(torch.zeros(*input_shape)).shape)
    layer.train(training)
    B, C = input_shape[:2]
    K, (kh, kw) = layer.kernel_num, layer.kernel_size
    c_gate, c_kernel, c_main = conv_color("odconv"), conv_color("fmdconv"), "#377eb8"
    fig, ax = plt.subplots(figsize=(13, 7.2))
    ax.set(xlim=(0, 130), ylim=(0, 72))
    ax.axis("off")
    ax.text(1, 70, f"FMDConv2d({C}, {info['out_channels']}, kernel {kh}×{kw}, stride "
            f"{layer.stride[0]}), K = {K}, attentions = {', '.join(info['attentions']) or 'none'}, "
            f"preset = {info['preset']}", fontsize=10.5, fontweight="bold", va="top")

    # Main path (middle row): x → ⊙ a_in → conv with the mixed kernel → ⊙ a_out → y.
    ym = 30.0
    _box(ax, (1, ym - 5), 15, 10, f"input x\n{_dims(input_shape)}\nB×C_in×H×W", c_main)
    # Each ⊙ sits under the last box of its gate head (see the head positions below).
    mul_in, mul_out = (75.6, ym), (110.1, ym)
    conv_text = (f"conv {kh}×{kw} with the mixed kernel\nW̃_b = Σ_k π_bk W_k\n"
                 f"{info['out_channels']}×{info['in_channels'] // layer.groups}×{kh}×{kw}")
    if info["bias_bank"] is not None:
        conv_text += "\n+ bias Σ_k π_bk β_k"
    _box(ax, (81, ym - 7), 24, 14, conv_text, c_kernel, fontsize=7.5)
    _box(ax, (115, ym - 5), 14, 10, f"output y\n{_dims(y_shape)}\nB×C_out×H'×W'", c_main)
    for centre, name in ((mul_in, "input_head"), (mul_out, "output_head")):
        on = name in info
        ax.add_patch(plt.Circle(centre, 2.2, facecolor="white", edgecolor=c_gate if on else "0.7",
                                lw=1.4, zorder=3))
        ax.text(*centre, "⊙" if on else "1", ha="center", va="center", fontsize=12 if on else 8,
                color=c_gate if on else "0.6", zorder=4)
    _arrow(ax, (16, ym), (mul_in[0] - 2.2, ym))
    _arrow(ax, (mul_in[0] + 2.2, ym), (81, ym))
    _arrow(ax, (105, ym), (mul_out[0] - 2.2, ym))
    _arrow(ax, (mul_out[0] + 2.2, ym), (115, ym))

    # Gate trunk (top row) and its two heads, each ending above its ⊙.
    if "trunk" in info:
        yt = 50.0
        _arrow(ax, (8.5, ym + 5), (8.5, yt), color="0.35")
        trunk_end, trunk_mid = _chain(ax, info["trunk"], 2, yt, 50, c_gate)
        ax.text(2, yt + 7.5, f"shared trunk z, width max(int(C_in/16), 16) = {info['trunk_width']}",
                fontsize=8.5, color=c_gate, fontweight="bold")
        heads = {"input_head": (56.0, 58.0, 28.0, mul_in, f"a_in: B×C_in = {B}×{C}"),
                 "output_head": (84.0, 40.0, 34.0, mul_out,
                                 f"a_out: B×C_out = {B}×{info['out_channels']}")}
        for name, (x0, y0, width, target, text) in heads.items():
            if name not in info:
                continue
            end_x, mid_y = _chain(ax, info[name], x0, y0, width, c_gate)
            _arrow(ax, (trunk_end + 5, trunk_mid), (x0, mid_y), color=c_gate,
                   connection="arc3,rad=-0.15" if name == "input_head" else "arc3,rad=0.15")
            _arrow(ax, (target[0], y0), (target[0], target[1] + 2.2), color=c_gate)
            ax.text(target[0] + 1, (y0 + target[1]) / 2 + (3 if name == "output_head" else 6), text,
                    fontsize=8, color=c_gate, va="center")
        ax.text(56, 66, "gate heads: sigmoid, one temperature T_io", fontsize=8.5, color=c_gate,
                fontweight="bold")

    # Kernel branch (bottom row), a separate path from x, and the kernel bank.
    if "kernel_branch" in info:
        yk = 5.0
        _arrow(ax, (8.5, ym - 5), (8.5, yk + 6), color="0.35")
        end_x, _ = _chain(ax, info["kernel_branch"], 2, yk, 82, c_kernel)
        ax.text(2, yk + 7.5, f"kernel attention (separate branch), hidden int(C_in·0.25)+1 = "
                f"{info['kernel_hidden']}", fontsize=8.5, color=c_kernel, fontweight="bold")
        _arrow(ax, (end_x, yk + 6), (88, ym - 7), color=c_kernel)
        ax.text(end_x + 2.5, yk + 10, f"π: B×K = {B}×{K}", fontsize=8, color=c_kernel, ha="left")
    bank = f"kernel bank W\n{_dims(info['kernel_bank'])}\n(K×C_out×C_in×kh×kw)"
    if info["bias_bank"] is not None:
        bank += f"\nbias bank β: {_dims(info['bias_bank'])}"
    _box(ax, (106, 4), 23, 13, bank, c_kernel, fontsize=7.5, alpha=0.08)
    _arrow(ax, (112, 17), (100, ym - 7), color=c_kernel)
    return fig


def framework_diagram(layer: FMDConv2d, x: Tensor, sample: int = 0) -> plt.Figure:
    """The FMDConv framework (the paper's Figure 1) for one sample, with its real attention values."""
    use_style()
    training = layer.training
    layer.eval()
    with torch.no_grad():
        att = layer.attend(x)
        y = layer(x)
    layer.train(training)
    B, C, H, W = x.shape
    _, Co, Ho, Wo = y.shape
    K, (kh, kw) = layer.kernel_num, layer.kernel_size
    c_gate, c_kernel = conv_color("odconv"), conv_color("fmdconv")
    cmap = plt.cm.magma
    fig, ax = plt.subplots(figsize=(10, 5.2))
    ax.set(xlim=(0, 100), ylim=(0, 52))
    ax.axis("off")

    def feature_stack(x0: float, text: str) -> None:
        for i in range(4):
            ax.add_patch(Rectangle((x0 + 1.1 * i, 7 + 1.1 * i), 8, 12, facecolor="#c6dbef",
                                   edgecolor="#377eb8", lw=1))
        ax.text(x0 + 5.5, 5, text, ha="center", va="top", fontsize=8)

    def strip(x0: float, values: Optional[Tensor], text: str) -> None:
        if values is None:
            ax.text(x0 + 1.5, 15, "off", ha="center", fontsize=8, color="0.5")
            return
        v = values.detach().numpy()
        h = 16.0 / len(v)
        for i, value in enumerate(v):
            ax.add_patch(Rectangle((x0, 5 + i * h), 3, h, facecolor=cmap(float(value)), lw=0))
        ax.add_patch(Rectangle((x0, 5), 3, 16, facecolor="none", edgecolor=c_gate, lw=1.2))
        ax.text(x0 + 1.5, 22, text, ha="center", va="bottom", fontsize=8, color=c_gate)
        ax.text(x0 + 1.5, 4, f"{v.min():.2f}–{v.max():.2f}", ha="center", va="top", fontsize=7,
                color=c_gate)

    def symbol(xc: float, s: str) -> None:
        ax.text(xc, 13, s, fontsize=16, ha="center", va="center")

    feature_stack(2, f"x_b: {C}×{H}×{W}")
    symbol(17.5, "⊙")
    strip(21, None if att.input is None else att.input[sample], f"a_in ({C})")
    symbol(29, "∗")
    # The mixed kernel and, above it, the bank it is mixed from.
    wx = 33.0
    ax.add_patch(Rectangle((wx, 8), 10, 10, facecolor="#fde0ef", edgecolor=c_kernel, lw=1.5))
    ax.text(wx + 5, 13, "W̃_b", ha="center", va="center", fontsize=11)
    ax.text(wx + 5, 5, f"{Co}×{C // layer.groups}×{kh}×{kw}", ha="center", va="top", fontsize=7.5)
    pis = att.kernel[sample] if att.kernel is not None else torch.full((K,), 1.0 / K)
    span = 9.5 * K
    for k in range(K):
        x0 = wx + 5 - span / 2 + 9.5 * k + 1.25
        ax.add_patch(Rectangle((x0, 32), 7, 7, facecolor=cmap(float(pis[k])), edgecolor=c_kernel,
                               lw=1.2))
        ax.text(x0 + 3.5, 35.5, f"W_{k + 1}", ha="center", va="center", fontsize=8,
                color="white" if float(pis[k]) < 0.6 else "black")
        ax.text(x0 + 3.5, 30.5, f"π={float(pis[k]):.3f}", ha="center", va="top", fontsize=7.5,
                color=c_kernel)
        _arrow(ax, (x0 + 3.5, 27.5), (wx + 5, 18.5), color=c_kernel)
    ax.text(wx + 5, 41, "K kernels weighted by π = softmax(·/T_k)"
            + ("" if att.kernel is not None else " (off: uniform mean)") + ", summed",
            ha="center", fontsize=8.5, color=c_kernel)
    symbol(wx + 16, "⊙")
    strip(wx + 20, None if att.output is None else att.output[sample], f"a_out ({Co})")
    symbol(wx + 29, "=")
    feature_stack(wx + 34, f"y_b: {Co}×{Ho}×{Wo}")
    ax.text(1, 50, "y_b = a_out,b ⊙ ( (a_in,b ⊙ x_b) ∗ Σ_k π_bk W_k + Σ_k π_bk β_k )",
            fontsize=10.5, fontweight="bold", va="top")
    ax.text(1, 46, f"sample b = {sample} of a batch of {B}; colours = attention values (0–1); "
            f"temperatures now T_io = {_temperature(layer, 'gate')}, T_k = "
            f"{_temperature(layer, 'kernel')}; untrained weights", fontsize=8.5, color="0.3", va="top")
    return fig


def _temperature(layer: nn.Module, role: str) -> str:
    values = sorted({round(m.temperature.item(), 4) for m in iter_tempered(layer)
                     if m.temperature_role == role})
    return ", ".join(f"{v:g}" for v in values) or "—"
