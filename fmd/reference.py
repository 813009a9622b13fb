"""Published figures, each with its source — nothing in this module is our measurement.

Every published number the repository shows next to its own results lives here, so that a
figure can always be traced back to where it was read. Each one is a :class:`Published` holding
the value, its unit, the source (repository + path + commit, or URL, and the table), a note,
and ``printed``: the cell exactly as the source prints it.

Tables are dicts keyed by ``(arch, method)`` whose values map a metric name to a
:class:`Published`; :func:`table` flattens one into rows for a notebook.

Not here, because no readable source was found while collecting these: the CondConv (8×),
DyConv (4×) and DCD rows of the ODConv paper's ImageNet tables (the OSVAI/ODConv README lists
only the baselines and ODConv), and any table of the FMDConv paper (only its abstract was read).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Mapping, Tuple


@dataclass(frozen=True)
class Published:
    """One published figure: value in ``unit``, where it was read, and the cell as printed."""

    value: float
    unit: str
    source: str
    note: str = ""
    printed: str = ""


Key = Tuple[str, str]
Entries = Mapping[Key, Mapping[str, Published]]

_SCALE = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}


def _parse(printed: str, to: str = "") -> float:
    """Number in a printed cell ("300.8M", "70.25") expressed in the prefix ``to`` ("G")."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]?)", printed.strip())
    if match is None:
        raise ValueError(f"cannot parse {printed!r}")
    return round(float(match[1]) * _SCALE[match[2]] / _SCALE[to], 12)


# --------------------------------------------------------------------------------------------
# ODConv official README (OSVAI/ODConv). Same numbers at commits 09212d76… and edf8ebe1….
# "The models released here show slightly different (mostly better) accuracies compared to the
# original models reported in our paper." — so these are the released models, not paper numbers.
# ResNets: 100 epochs; MobileNetV2: 150 epochs; ODConv r = 1/16. "Madds" = multiply-adds (MACs).
# --------------------------------------------------------------------------------------------
_ODCONV_README = ("OSVAI/ODConv README.md @ 09212d76f29f705827339b47e8a4c0823550dd3b, table "
                  "'Results comparison on the ImageNet validation set with the {}'")
_ODCONV_RESNET = _ODCONV_README.format("ResNet18, ResNet50 and ResNet101 backbones trained for "
                                       "100 epochs")
_ODCONV_MBV2 = _ODCONV_README.format("MobileNetV2 (1.0×, 0.75×, 0.5×) backbones trained for "
                                     "150 epochs")

# (arch, method, Params, Madds, Top-1 Acc(%), Top-5 Acc(%)) — cells exactly as printed.
_ODCONV_ROWS = [
    (_ODCONV_RESNET, "resnet18", "baseline", "11.69M", "1.814G", "70.25", "89.38"),
    (_ODCONV_RESNET, "resnet18", "odconv_1x", "11.94M", "1.838G", "73.05", "91.05"),
    (_ODCONV_RESNET, "resnet18", "odconv_4x", "44.90M", "1.916G", "74.19", "91.47"),
    (_ODCONV_RESNET, "resnet50", "baseline", "25.56M", "3.858G", "76.23", "92.97"),
    (_ODCONV_RESNET, "resnet50", "odconv_1x", "28.64M", "3.916G", "77.87", "93.77"),
    (_ODCONV_RESNET, "resnet50", "odconv_4x", "90.67M", "4.080G", "78.50", "93.99"),
    (_ODCONV_RESNET, "resnet101", "baseline", "44.55M", "7.570G", "77.44", "93.68"),
    (_ODCONV_RESNET, "resnet101", "odconv_1x", "50.82M", "7.675G", "78.84", "94.27"),
    (_ODCONV_RESNET, "resnet101", "odconv_2x", "90.44M", "7.802G", "79.15", "94.34"),
    (_ODCONV_MBV2, "mobilenetv2_100", "baseline", "3.50M", "300.8M", "71.65", "90.22"),
    (_ODCONV_MBV2, "mobilenetv2_100", "odconv_1x", "4.94M", "311.8M", "74.74", "91.95"),
    (_ODCONV_MBV2, "mobilenetv2_100", "odconv_4x", "11.51M", "327.1M", "75.29", "92.18"),
    (_ODCONV_MBV2, "mobilenetv2_075", "baseline", "2.64M", "209.1M", "69.18", "88.82"),
    (_ODCONV_MBV2, "mobilenetv2_075", "odconv_1x", "3.51M", "217.1M", "72.71", "90.85"),
    (_ODCONV_MBV2, "mobilenetv2_075", "odconv_4x", "7.50M", "226.3M", "74.01", "91.37"),
    (_ODCONV_MBV2, "mobilenetv2_050", "baseline", "1.97M", "97.1M", "64.30", "85.21"),
    (_ODCONV_MBV2, "mobilenetv2_050", "odconv_1x", "2.43M", "101.8M", "68.06", "87.67"),
    (_ODCONV_MBV2, "mobilenetv2_050", "odconv_4x", "4.44M", "106.4M", "70.23", "88.86"),
]

ODCONV_IMAGENET: Dict[Key, Dict[str, Published]] = {
    (arch, method): {
        "params_m": Published(_parse(params, "M"), "M params", src, printed=params),
        "macs_g": Published(_parse(madds, "G"), "GMACs", src, "README column 'Madds'", madds),
        "top1": Published(_parse(top1), "%", src, printed=top1),
        "top5": Published(_parse(top5), "%", src, printed=top5),
    }
    for src, arch, method, params, madds, top1, top5 in _ODCONV_ROWS
}

# --------------------------------------------------------------------------------------------
# Abstract-level claims of the papers (only abstracts could be read).
# --------------------------------------------------------------------------------------------
_FMD = ("FMDConv, Zhang et al., arXiv:2503.17530v1 abstract (https://arxiv.org/html/2503.17530v1; "
        "also Knowledge-Based Systems 317, 113393)")
_OD = ("ODConv, Li et al., ICLR 2022 abstract (https://ar5iv.labs.arxiv.org/html/2209.07947)")
_DY_ARXIV = ("DynamicConv, Chen et al., abstract as on "
             "http://paperswithcode.com/paper/dynamic-convolution-attention-over (arXiv:1912.03458)")
_DY_CVPR = ("DynamicConv, Chen et al., CVPR 2020 abstract on https://www.microsoft.com/en-us/research/"
            "publication/dynamic-convolution-attention-over-convolution-kernels/")
_COND = "CondConv, Yang et al., arXiv:1904.04971 abstract (read at https://arcxiv.org/abs/1904.04971)"

PAPER_CLAIMS: Dict[Key, Dict[str, Published]] = {
    ("resnet18", "fmdconv"): {"cost_reduction_pct": Published(
        49.8, "%", _FMD, "'reduces the computational cost by up to 49.8% on ResNet-18 ... compared "
        "to prior multi-attention dynamic convolution methods while maintaining competitive "
        "accuracy'", "49.8%")},
    ("resnet50", "fmdconv"): {"cost_reduction_pct": Published(
        42.2, "%", _FMD, "same sentence, ResNet-50", "42.2%")},
    ("mobilenetv2", "odconv"): {
        "top1_gain_min": Published(3.77, "% points", _OD, "absolute ImageNet top-1 gains over the "
                                   "MobileNetV2 family, low end of the range", "3.77%"),
        "top1_gain_max": Published(5.71, "% points", _OD, "high end of the range", "5.71%")},
    ("resnet", "odconv"): {
        "top1_gain_min": Published(1.86, "% points", _OD, "absolute ImageNet top-1 gains over the "
                                   "ResNet family, low end of the range", "1.86%"),
        "top1_gain_max": Published(3.72, "% points", _OD, "high end of the range", "3.72%")},
    ("mobilenetv3_small", "dyconv"): {
        "top1_gain": Published(2.9, "% points", _DY_ARXIV, "ImageNet top-1 boost; the CVPR abstract "
                               "says 2.3% (see top1_gain_cvpr)", "2.9%"),
        "top1_gain_cvpr": Published(2.3, "% points", _DY_CVPR, "", "2.3%"),
        "extra_flops_pct": Published(4.0, "%", _DY_ARXIV, "'with only 4% additional FLOPs'", "4%")},
    ("efficientnet_b0", "condconv"): {
        "top1": Published(78.3, "%", _COND, "ImageNet", "78.3%"),
        "macs_g": Published(0.413, "GMACs", _COND, "'413M multiply-adds'", "413M")},
}

# Papers with Code "Results from the Paper" for DynamicConv (metric labels are PwC's: "GFLOPs").
_DY_PWC = ("Papers with Code, 'Results from the Paper', "
           "http://paperswithcode.com/paper/dynamic-convolution-attention-over")
_DY_ROWS = [  # (arch, Top 1 Accuracy, Number of params, GFLOPs) as printed
    ("mobilenetv2_100", "74.4%", "11.1M", "0,626"),
    ("mobilenetv2_075", "72.8%", "7M", "0.435"),
    ("mobilenetv2_050", "69.4%", "4M", "0.203"),
    ("mobilenetv2_035", "64.9%", "2.8M", "0.124"),
    ("mobilenetv3_small", "69.7%", "4.8M", "0.137"),
    ("resnet10", "67.7%", "18.6M", "1.82"),
]
DYCONV_IMAGENET: Dict[Key, Dict[str, Published]] = {
    (arch, "dyconv"): {
        "top1": Published(_parse(top1.rstrip("%")), "%", _DY_PWC, printed=top1),
        "params_m": Published(_parse(params, "M"), "M params", _DY_PWC, printed=params),
        "flops_g": Published(_parse(flops.replace(",", ".")), "GFLOPs", _DY_PWC,
                             "PwC label; decimal comma as printed" if "," in flops else "", flops),
    }
    for arch, top1, params, flops in _DY_ROWS
}

# --------------------------------------------------------------------------------------------
# Fashion-MNIST benchmark table (submitted, not verified by the maintainers).
# --------------------------------------------------------------------------------------------
_FMNIST = ("zalandoresearch/fashion-mnist README.md @ 02cf0676df9403f820db28474248ba7d7d1060bb, "
           "'Benchmark' table of submitted results ('we haven't yet tested these results')")
FASHION_MNIST: Dict[Key, Dict[str, Published]] = {
    ("resnet18", "baseline"): {"top1": Published(
        94.9, "%", _FMNIST, "submitter Kyriakos Efthymiadis (github.com/kefth/fashion-mnist); "
        "preprocessing: normalization, random horizontal/vertical flip, random translation, random "
        "rotation; the same row gives MNIST 0.979", "0.949")},
}

# --------------------------------------------------------------------------------------------
# Hyper-parameters read in public code (defaults, not results).
# --------------------------------------------------------------------------------------------
_OD_MAIN = "OSVAI/ODConv main.py @ 60a469197241dbfa2d795145102abe0dc2750d83 (argparse default)"
_OD_MOD = "OSVAI/ODConv modules/odconv.py @ acb771c496d78a63d31cbbdc9174e6b4a16d5be1"
_KS = ("kaijieshi7/Dynamic-convolution-Pytorch dynamic_conv.py @ "
       "93422dbea1f3183327c5cea069a4f05822efe703 — an UNOFFICIAL DynamicConv implementation "
       "(its README: '非官方实现代码')")
_FMD_CODE = ("tianyu00824/FMDConv modules/fmdconv.py @ c33566fdf15379fbd9a780efc41bc18795c4ee65 "
             "(apparently the first author's repository; not linked from any text read)")
CODE_DEFAULTS: Dict[Key, Dict[str, Published]] = {
    ("any", "odconv"): {
        "temp_init": Published(30.0, "", _OD_MAIN, "all four attentions are divided by T; "
                               "utils/misc.py get_temperature: T = 1 + max(0, (30-1)(N-i)/N), "
                               "updated every iteration during the first temp_epoch epochs", "30.0"),
        "temp_epoch": Published(10.0, "epochs", _OD_MAIN, "", "10"),
        "reduction": Published(0.0625, "", _OD_MAIN, "trunk width max(int(C_in*r), min_channel)",
                               "0.0625"),
        "min_channel": Published(16.0, "channels", _OD_MOD, "Attention(min_channel=16)", "16")},
    ("any", "dyconv_unofficial"): {
        "temperature": Published(34.0, "", _KS, "asserted ≡ 1 (mod 3); softmax(z / T)", "34"),
        "temperature_step": Published(3.0, "per call", _KS, "update_temperature() lowers T by 3 "
                                      "until 1; its main.py calls it once per epoch", "3"),
        "ratio": Published(0.25, "", _KS, "hidden = int(C_in*ratio)+1 (older commit 12a21c05: "
                           "int(C_in*ratio)); K hidden units when C_in == 3", "0.25")},
    ("any", "fmdconv_code"): {
        "kernel_temperature": Published(34.0, "", _FMD_CODE, "kernel softmax temperature; "
                                        "update_temperature() only reaches the sigmoid input/"
                                        "output gates (ODConv schedule 30 → 1 over 10 epochs), so "
                                        "the kernel temperature stays 34", "34"),
        "ratio": Published(0.25, "", _FMD_CODE, "kernel-attention hidden = int(C_in*ratio)+1; "
                           "K hidden units when C_in == 3", "0.25")},
}

# --------------------------------------------------------------------------------------------
# FMDConv official repository history (tianyu00824/FMDConv), later deleted from it: cite the commit.
# --------------------------------------------------------------------------------------------
_FMD_TABLE = ("tianyu00824/FMDConv README.md @ 3d01c53 (removed in 3fab372): four LaTeX table rows, "
              "columns read as Params, Top-1, Top-5, time per epoch (s), epochs; dataset not stated "
              "(most likely CIFAR-100); params are FMDConv K=4 with a 1000-class head")
_FMD_ROWS = [  # (arch, Params, Top-1, Top-5, time per epoch in s) as printed; 100 epochs each
    ("resnet18", "45.20M", "76.16", "93.82", "118"),
    ("resnet34", "86.15M", "71.66", "91.61", "203.89"),
    ("resnet50", "95.41M", "73.69", "92.75", "342.15"),
    ("resnet101", "179.58M", "75.69", "93.71", "644.07"),
]
FMDCONV_BACKBONES: Dict[Key, Dict[str, Published]] = {
    (arch, "fmdconv_4x"): {
        "params_m": Published(_parse(params, "M"), "M params", _FMD_TABLE, printed=params),
        "top1": Published(_parse(top1), "%", _FMD_TABLE, printed=top1),
        "top5": Published(_parse(top5), "%", _FMD_TABLE, printed=top5),
        "epoch_s": Published(_parse(seconds), "s per epoch", _FMD_TABLE, "100 epochs", seconds),
    }
    for arch, params, top1, top5, seconds in _FMD_ROWS
}
_FMD_LOG = ("tianyu00824/FMDConv fmdresult @ f32b054: FMDConv ResNet-18 ImageNet training log "
            "(4 GPUs × 100 images per step, 3203 iterations per epoch), the 'Batch:' column")
_OD_LOG = ("tianyu00824/FMDConv Baseline @ a155e08: od_resnet18 --kernel_num 4 (most likely ODConv "
           "4×) ImageNet training log, same setup, the 'Batch:' column")
_FMD_NOTES = ("tianyu00824/FMDConv README.md @ e7b5a93: developer notes, same setup as the table, "
              "time per epoch")
OFFICIAL_TRAINING_TIME: Dict[Key, Dict[str, Published]] = {
    ("resnet18", "fmdconv_4x"): {
        "imagenet_s_per_iter_low": Published(0.19, "s per iteration", _FMD_LOG, "epochs 74–100",
                                             "0.19"),
        "imagenet_s_per_iter_high": Published(0.20, "s per iteration", _FMD_LOG, "epochs 74–100",
                                              "0.20"),
        "epoch_s_k4_low": Published(126.00, "s per epoch", _FMD_NOTES, "K=4, first series", "126.00"),
        "epoch_s_k4_high": Published(130.48, "s per epoch", _FMD_NOTES, "K=4, second series",
                                     "130.48")},
    ("resnet18", "odconv_4x"): {
        "imagenet_s_per_iter": Published(0.40, "s per iteration", _OD_LOG, "epochs 74–100", "0.40"),
        "epoch_s": Published(247.59, "s per epoch", _FMD_NOTES, "'Omni' K=4", "247.59")},
}

ALL: Dict[str, Entries] = {
    "odconv_imagenet": ODCONV_IMAGENET,
    "dyconv_imagenet": DYCONV_IMAGENET,
    "paper_claims": PAPER_CLAIMS,
    "fashion_mnist": FASHION_MNIST,
    "code_defaults": CODE_DEFAULTS,
    "fmdconv_backbones": FMDCONV_BACKBONES,
    "official_training_time": OFFICIAL_TRAINING_TIME,
}


def get(entries: Entries, arch: str, method: str, metric: str) -> Published:
    """The published figure for ``(arch, method)`` and ``metric``; KeyError if none was found."""
    return entries[(arch, method)][metric]
