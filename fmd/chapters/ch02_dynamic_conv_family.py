"""Chapter 02 (the dynamic-convolution family side by side): the configs compared and the tables.

Everything here is read from layer and model objects or counted by :mod:`fmd.complexity`; published
numbers come from :mod:`fmd.reference` and stay in their own columns, each with its source.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .. import reference
from ..attention import iter_tempered
from ..complexity import count_macs, count_params, flop_counter_macs, stride_on_1x1_macs
from ..conv import (CONVS, default_schedules, DynamicConv2d, DynamicConv2dBase, FMDConv2d, ODConv2d,
                    make_conv)
from ..models import ResNet


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
    counts = [("condconv", condconv_experts), ("dyconv", kernel_num), ("odconv", 1),
              ("odconv", kernel_num), ("fmdconv", kernel_num)]
    return {"static": ("static", {}),
            **{f"{conv}_{k}x": (conv, CONVS[conv].kernel_options(k)) for conv, k in counts}}


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
