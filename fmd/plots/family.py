"""Figures of chapter 02 (the dynamic-convolution family side by side) and the tables behind them.

Everything here is read from layer and model objects or counted by :mod:`fmd.complexity`; published
numbers come from :mod:`fmd.reference` and stay in their own columns, each with its source.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from . import conv_color, label, use_style
from .. import reference
from ..attention import iter_tempered
from ..complexity import count_macs, count_params, dynamic_layer_macs, flop_counter_macs
from ..conv import (CONVS, default_schedules, DynamicConv2d, DynamicConv2dBase, FMDConv2d, ODConv2d,
                    make_conv)
from ..models import Bottleneck, ResNet

Config = Tuple[str, Dict[str, Any]]  # (registered conv name, conv_options)

# The two input settings of the chapter: (stem, input size, classes).
SETTINGS: Dict[str, Tuple[str, int, int]] = {
    "imagenet_224": ("imagenet", 224, 1000),
    "cifar_32": ("cifar", 32, 100),
}
# Published method names (fmd.reference) → the name of our configuration.
PUBLISHED_METHODS = {"baseline": "static", "odconv_1x": "odconv_1x", "odconv_4x": "odconv_4x",
                     "fmdconv": "fmdconv_4x", "fmdconv_code": "fmdconv_4x",
                     "fmdconv_4x": "fmdconv_4x"}


def family_configs(kernel_num: int = 4, condconv_experts: int = 8) -> Dict[str, Config]:
    """The convolutions compared: static, CondConv, DynamicConv, ODConv 1× and K×, FMDConv."""
    return {
        "static": ("static", {}),
        f"condconv_{condconv_experts}x": ("condconv", {"num_experts": condconv_experts}),
        f"dyconv_{kernel_num}x": ("dyconv", {"kernel_num": kernel_num}),
        "odconv_1x": ("odconv", {"kernel_num": 1}),
        f"odconv_{kernel_num}x": ("odconv", {"kernel_num": kernel_num}),
        f"fmdconv_{kernel_num}x": ("fmdconv", {"kernel_num": kernel_num}),
    }


# ---------------------------------------------------------------------------------------------
# What each layer attends to


def _schedule_text(schedule: object) -> str:
    fields = getattr(schedule, "__dataclass_fields__", {})
    args = ", ".join(f"{k}={getattr(schedule, k):g}" for k in fields)
    return f"{type(schedule).__name__}({args})"


def attention_rows(configs: Mapping[str, Config], channels: int = 64, kernel_size: int = 3,
                   batch: int = 2, size: int = 8, seed: int = 0) -> List[Dict[str, Any]]:
    """One row per conv: which attentions it computes (shape or —), softmax or not, temperatures."""
    torch.manual_seed(seed)
    x = torch.randn(batch, channels, size, size)
    rows = []
    for name, (conv, options) in configs.items():
        layer = make_conv(conv, channels, channels, kernel_size, 1, kernel_size // 2, bias=False,
                          **options)
        row: Dict[str, Any] = {"conv": name, "K": CONVS[conv].kernel_count(options)}
        if isinstance(layer, DynamicConv2dBase):
            layer.eval()
            with torch.no_grad():
                att = layer.attend(x)
            for kind in ("input", "kernel", "spatial", "output"):
                value = getattr(att, kind)
                row[kind] = "—" if value is None else "×".join(map(str, value.shape))
            row["kernel weights sum to 1"] = ("—" if att.kernel is None else
                                              bool(torch.allclose(att.kernel.sum(1),
                                                                  torch.ones(batch))))
            roles: Dict[str, List[float]] = {}
            for branch in iter_tempered(layer):
                roles.setdefault(branch.temperature_role, []).append(branch.temperature.item())
            row["temperatures at init"] = "; ".join(
                f"{role} ×{len(v)} = {'/'.join(f'{t:g}' for t in sorted(set(v)))}"
                for role, v in sorted(roles.items())) or "none"
            schedules = default_schedules(conv)
            row["schedule (default_schedules)"] = "; ".join(
                f"{role}: {_schedule_text(s)}" for role, s in schedules.items()) or "none"
            weights = layer.weight.numel() + (0 if layer.bias is None else layer.bias.numel())
            row["layer params"] = count_params(layer)
            row["attention params"] = count_params(layer) - weights
        else:
            row.update({k: "—" for k in ("input", "kernel", "spatial", "output")})
            row.update({"kernel weights sum to 1": "—", "temperatures at init": "none",
                        "schedule (default_schedules)": "none",
                        "layer params": count_params(layer), "attention params": 0})
        rows.append(row)
    return rows


def code_default_rows() -> List[Dict[str, Any]]:
    """Hyper-parameters read in public code (fmd.reference.CODE_DEFAULTS) beside our defaults."""

    def default(cls: type, name: str) -> Any:
        return inspect.signature(cls).parameters[name].default

    ours = {
        ("odconv", "temp_init"): ("ODConv2d(temperature=…)", default(ODConv2d, "temperature")),
        ("odconv", "temp_epoch"): ("default_schedules('odconv') epochs",
                                   default_schedules("odconv")["gate"].epochs),
        ("odconv", "reduction"): ("ODConv2d(reduction=…)", default(ODConv2d, "reduction")),
        ("odconv", "min_channel"): ("ODConv2d(min_channels=…)", default(ODConv2d, "min_channels")),
        ("dyconv_unofficial", "temperature"): ("DynamicConv2d(temperature=…)",
                                               default(DynamicConv2d, "temperature")),
        ("dyconv_unofficial", "temperature_step"): ("default_schedules('dyconv')",
                                                    _schedule_text(default_schedules("dyconv")["kernel"])),
        ("dyconv_unofficial", "ratio"): ("DynamicConv2d(ratio=…)", default(DynamicConv2d, "ratio")),
        ("fmdconv_code", "kernel_temperature"): ("FMDConv2d(kernel_temperature=…)",
                                                 default(FMDConv2d, "kernel_temperature")),
        ("fmdconv_code", "ratio"): ("FMDConv2d(ratio=…)", default(FMDConv2d, "ratio")),
    }
    rows = []
    for (_, method), figures in reference.CODE_DEFAULTS.items():
        for metric, published in figures.items():
            where, value = ours.get((method, metric), ("—", "—"))
            rows.append({"code": method, "setting": metric,
                         "published (code default)": published.printed or f"{published.value:g}",
                         "ours": value if isinstance(value, str) else f"{value:g}",
                         "ours from": where, "source": published.source})
    return rows


# ---------------------------------------------------------------------------------------------
# Parameters and MACs


def build(arch: str, config: Config, setting: str, device: str = "meta") -> ResNet:
    """A ResNet (``arch`` "resnet18"/"resnet50") with one conv config and input setting."""
    conv, options = config
    stem, _, classes = SETTINGS[setting]
    with torch.device(device):
        return ResNet(int(arch.removeprefix("resnet")), conv=conv, num_classes=classes, stem=stem,
                      **options)


def complexity_rows(configs: Mapping[str, Config], archs: Sequence[str] = ("resnet18", "resnet50"),
                    settings: Sequence[str] = tuple(SETTINGS), device: str = "meta",
                    cross_check: bool = True) -> List[Dict[str, Any]]:
    """Params and MACs (thop rules) per arch × setting × conv, with torch's flop counter beside."""
    rows = []
    for arch in archs:
        for setting in settings:
            _, size, classes = SETTINGS[setting]
            base: Optional[Dict[str, Any]] = None
            for name, config in configs.items():
                model = build(arch, config, setting, device)
                shape = (1, 3, size, size)
                row = {"arch": arch, "setting": setting, "input": f"3×{size}×{size}",
                       "classes": classes, "conv": name, "params": count_params(model),
                       "macs": count_macs(model, shape)}
                if cross_check:
                    row["flop_counter_macs"] = flop_counter_macs(model, shape)
                    row["counters agree"] = row["flop_counter_macs"] == row["macs"]
                base = base or row
                row["params_m"] = round(row["params"] / 1e6, 2)
                row["gmacs"] = round(row["macs"] / 1e9, 3)
                row["params ×static"] = round(row["params"] / base["params"], 2)
                row["MACs +% over static"] = round(100 * (row["macs"] / base["macs"] - 1), 2)
                rows.append(row)
    return rows


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


def published_rows(ours: Sequence[Mapping[str, Any]], configs: Mapping[str, Config],
                   setting: str = "imagenet_224") -> List[Dict[str, Any]]:
    """Published params/MACs (every fmd.reference table) beside ours for the same arch and conv.

    Adds our MACs with each bottleneck's stride moved onto its first 1×1 convolution
    (:func:`stride_on_1x1_macs`, the original ResNet's placement; no change for basic blocks).
    """
    mine = {(r["arch"], r["conv"]): r for r in ours if r["setting"] == setting}
    archs = {arch for arch, _ in mine}
    _, size, _ = SETTINGS[setting]
    rows = []
    for entries in reference.ALL.values():
        for (arch, method), figures in entries.items():
            config = PUBLISHED_METHODS.get(method)
            if arch not in archs or config is None or (arch, config) not in mine:
                continue
            if not {"params_m", "macs_g"} & set(figures):
                continue
            r = mine[(arch, config)]
            row: Dict[str, Any] = {"arch": arch, "published method": method, "our conv": config}
            if "params_m" in figures:
                row["params M (published)"] = figures["params_m"].value
                row["params M (ours)"] = r["params_m"]
                row["Δ params M"] = round(r["params_m"] - figures["params_m"].value, 2)
            if "macs_g" in figures:
                row["GMACs (published)"] = figures["macs_g"].value
                row["GMACs (ours)"] = r["gmacs"]
                row["Δ GMACs"] = round(r["gmacs"] - figures["macs_g"].value, 3)
                v1 = stride_on_1x1_macs(build(arch, configs[config], setting), (1, 3, size, size))
                row["GMACs (ours, stride on 1×1)"] = round(v1 / 1e9, 3)
            row["source"] = "; ".join(dict.fromkeys(p.source for p in figures.values()))
            rows.append(row)
    return rows


def lookup(rows: Sequence[Mapping[str, Any]], **match: Any) -> Mapping[str, Any]:
    """The one row whose fields equal ``match``; a clear error if there is none or several."""
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise KeyError(f"{len(found)} rows match {match}")
    return found[0]


def table_text(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    """Rows as an aligned plain-text table (what the notebooks print)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return str(v)
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Figures

def _display(name: str, configs: Mapping[str, Config]) -> str:
    conv = configs[name][0]
    return label(conv) + (f" {name.split('_')[-1]}" if "_" in name else "")


def params_macs_figure(rows: Sequence[Mapping[str, Any]], configs: Mapping[str, Config],
                       published: Sequence[Mapping[str, Any]] = ()) -> plt.Figure:
    """Grouped bars of parameters (M) and MACs (G) per conv, arch and input setting."""
    use_style()
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    names = list(configs)
    fig, axes = plt.subplots(2, len(settings), figsize=(5.6 * len(settings), 7.4), squeeze=False)
    width = 0.8 / len(names)
    metrics = (("params_m", "params M (published)", "parameters (millions)", "{:.1f}"),
               ("gmacs", "GMACs (published)", "MACs per image (billions)", "{:.2f}"))
    for col, setting in enumerate(settings):
        _, size, classes = SETTINGS[setting]
        for row_i, (key, pub_key, unit, fmt) in enumerate(metrics):
            ax = axes[row_i, col]
            for i, name in enumerate(names):
                values = [next(r[key] for r in rows if r["setting"] == setting and r["arch"] == a
                               and r["conv"] == name) for a in archs]
                xs = np.arange(len(archs)) + (i - (len(names) - 1) / 2) * width
                bars = ax.bar(xs, values, width * 0.95, color=conv_color(configs[name][0]),
                              alpha=0.55 if name == "odconv_1x" else 1.0,
                              label=_display(name, configs), edgecolor="white", lw=0.5)
                for j, (bar, v) in enumerate(zip(bars, values)):
                    match = [p[pub_key] for p in published if p["arch"] == archs[j]
                             and p["our conv"] == name and p.get(pub_key) is not None]
                    top, marked = v, bool(match) and setting == "imagenet_224"
                    if marked:
                        ax.scatter([xs[j]], match[:1], marker="D", s=30, facecolor="white",
                                   edgecolor="black", lw=1.2, zorder=5,
                                   label="published (fmd.reference)")
                        top = max(v, match[0])
                    ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, top),
                                xytext=(0, 7 if marked else 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=6.5, rotation=90)
            ax.set_xticks(range(len(archs)), [a.replace("resnet", "ResNet-") for a in archs])
            ax.set_ylabel(unit)
            ax.margins(y=0.2)
            if row_i == 0:
                stem = {"imagenet": "ImageNet", "cifar": "CIFAR"}[SETTINGS[setting][0]]
                ax.set_title(f"{stem}-style stem, {size}×{size} "
                             f"input, {classes} classes", fontsize=10)
    unique: Dict[str, Any] = {}
    for ax in axes.ravel():
        for handle, text in zip(*ax.get_legend_handles_labels()):
            unique.setdefault(text, handle)
    fig.suptitle("Parameters and MACs per image of the dynamic-convolution family (ours: bars)",
                 fontweight="bold", fontsize=11, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.legend(unique.values(), unique.keys(), loc="upper center", ncol=4, fontsize=8.5,
               frameon=False, bbox_to_anchor=(0.5, 0.965))
    return fig


def layer_macs_figure(per_conv: Mapping[str, Sequence[Mapping[str, Any]]],
                      configs: Mapping[str, Config], focus: str) -> plt.Figure:
    """Per dynamic layer: ``focus``'s MACs split into conv / aggregation / attention, and every
    conv's overhead (aggregation + attention) as a percentage of the layer's convolution."""
    use_style()
    from matplotlib.ticker import FuncFormatter

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1.2]})
    dynamic = {r["layer"] for r in per_conv[focus] if r["type"] not in ("Conv2d", "Linear")}
    layers = [r["layer"] for r in per_conv[focus] if r["layer"] in dynamic]
    short = [n.replace("layer", "L").replace(".conv", ".c") for n in layers]
    xs = np.arange(len(layers))
    rows = {r["layer"]: r for r in per_conv[focus]}
    parts = {k: np.array([rows[n][k] for n in layers]) / 1e6
             for k in ("conv", "aggregation", "attention")}
    conv = configs[focus][0]
    left.bar(xs, parts["conv"], color="#9ecae1", label="convolution with the mixed kernel")
    left.bar(xs, parts["aggregation"], bottom=parts["conv"], color=conv_color(conv),
             label="aggregation Σ π_k W_k (+ biases)")
    left.bar(xs, parts["attention"], bottom=parts["conv"] + parts["aggregation"], color="0.15",
             label="attention branches (linear layers)")
    left.set_xticks(xs, short, rotation=90, fontsize=8)
    left.set(ylabel="MACs per image (millions)", xlabel="dynamic layer (stage.block.conv)",
             title=f"{_display(focus, configs)}: where each layer's MACs go")
    left.legend(fontsize=8, loc="lower right", framealpha=0.95)
    markers = dict(zip(configs, "xosD^v<>"))
    order = [n for n in per_conv if n != focus] + [focus]  # the focus drawn last, on top
    for name in order:
        rows = {r["layer"]: r for r in per_conv[name]}
        overhead = [100 * (rows[n]["aggregation"] + rows[n]["attention"]) / rows[n]["conv"]
                    for n in layers]
        right.plot(xs, overhead, marker=markers[name], color=conv_color(configs[name][0]),
                   lw=2.4 if name == focus else 1.4, ms=6 if name == focus else 4,
                   ls="--" if name == focus else "-", alpha=0.55 if name == "odconv_1x" else 1.0,
                   label=_display(name, configs))
    right.set_yscale("log")
    right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    right.set_xticks(xs, short, rotation=90, fontsize=8)
    right.set(ylabel="(aggregation + attention) / convolution", xlabel="dynamic layer (stage.block.conv)",
              title="overhead of each dynamic layer over its convolution")
    handles, labels_ = right.get_legend_handles_labels()
    right.legend(handles[::-1], labels_[::-1], fontsize=8, loc="upper left", framealpha=0.95)
    fig.tight_layout()
    return fig
