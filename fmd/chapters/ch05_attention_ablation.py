"""Chapter 05 (which of FMDConv's attentions pay for their cost: the paper's Figure 3).

The ablation scores each combination of FMDConv's three attentions by accuracy and by IES and RCS
(:mod:`fmd.metrics`). Every number comes from a run record (:mod:`fmd.runs`) or from a batch-1
latency measured in the notebook run. Chapters 06 and 08 take their runs from
:func:`default_configs`.
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import profiles
from ..conv import FMD_ATTENTIONS, FMDConv2d
from ..metrics import speed_accuracy
from ..train import TrainConfig
from .common import beyond_spread, convergence_columns, mean_std, pm, provisional_bullet, run_all, span

Record = Dict[str, Any]

# The ablation: the static baseline, FMDConv with every attention off, then every non-empty subset
# of (input, kernel, output), in the order the figures list them.
ATTENTION_SETS: Dict[str, Optional[Tuple[str, ...]]] = {
    "static": None,
    "none": (),
    "input": ("input",),
    "kernel": ("kernel",),
    "output": ("output",),
    "input+kernel": ("input", "kernel"),
    "input+output": ("input", "output"),
    "kernel+output": ("kernel", "output"),
    "input+kernel+output": FMD_ATTENTIONS,
}


# The chapter's FMDConv knobs at their defaults: the profile's default FMDConv ablation run.
DEFAULTS: Dict[str, Any] = {"kernel_num": 4, "preset": "official", "kernel_temperature": 34.0,
                            "gate_temperature": 30.0}


def default_configs(profile: str, sets: Optional[Sequence[str]] = None,
                    **overrides: Any) -> Dict[str, TrainConfig]:
    """The chapter's runs: :func:`ablation_configs` at :data:`DEFAULTS` (``overrides`` win)."""
    return ablation_configs(profile, sets, **{**DEFAULTS, **overrides})


def ablation_configs(profile: str, sets: Optional[Sequence[str]] = None,
                     **overrides: Any) -> Dict[str, TrainConfig]:
    """The training config of each attention set (``fmd.profiles.ablation_config``).

    ``overrides`` go to every config (``None`` values are left out, so ``epochs=None`` keeps the
    profile's); the static baseline ignores FMDConv's knobs, so its run key does not see them.
    """
    names = list(ATTENTION_SETS) if sets is None else list(sets)
    unknown = [n for n in names if n not in ATTENTION_SETS]
    if unknown:
        raise ValueError(f"unknown attention set(s) {unknown}; choose from {tuple(ATTENTION_SETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    configs = {}
    for name in names:
        attentions = ATTENTION_SETS[name]
        if attentions is None:
            configs[name] = profiles.ablation_config(profile, conv="static", **given)
        else:
            configs[name] = profiles.ablation_config(profile, conv="fmdconv",
                                                     attentions=attentions, **given)
    return configs


def branch_rows(configs: Mapping[str, TrainConfig], channels: int = 16) -> List[Dict[str, Any]]:
    """Per set: the branches one of its block convolutions has, and how it mixes its K kernels."""
    rows = []
    for name, config in configs.items():
        row: Dict[str, Any] = {"set": name, "conv": config.conv,
                               "attentions": "—" if config.conv == "static"
                               else ", ".join(config.attentions) or "(none)"}
        options = config.conv_options()
        if config.conv == "static":
            row.update({"branches": "—", "kernels": 1, "kernel mix": "—"})
        else:
            layer = FMDConv2d(channels, channels, 3, 1, 1, **options)
            row["branches"] = ", ".join(n for n in ("trunk", "input_head", "output_head",
                                                    "kernel_attention")
                                        if getattr(layer, n) is not None) or "—"
            row["kernels"] = layer.kernel_num
            row["kernel mix"] = ("softmax per sample" if layer.kernel_attention is not None
                                 else "uniform mean")
        rows.append(row)
    return rows


def run_ablation(configs: Mapping[str, TrainConfig], profile: str, *,
                 progress: bool = False) -> Dict[str, Dict[str, Any]]:
    """Train (or fetch from the run cache) every config; returns the records by set name."""
    return run_all(configs, profile, progress=progress)


def seed_configs(configs_by_seed: Mapping[int, Mapping[str, TrainConfig]]
                 ) -> Dict[Tuple[int, str], TrainConfig]:
    """Every run of the chapter keyed (seed, set), for one :func:`run_ablation` over all seeds."""
    return {(seed, name): c for seed, configs in configs_by_seed.items() for name, c in configs.items()}


def by_set(records: Mapping[Tuple[int, str], Record]) -> Dict[str, List[Record]]:
    """The records of :func:`seed_configs`' runs grouped by set over their seeds."""
    groups: Dict[str, List[Record]] = {}
    for (_, name), r in records.items():
        groups.setdefault(name, []).append(r)
    return groups


def ablation_rows(configs: Mapping[str, TrainConfig],
                  records: Mapping[str, Sequence[Record]],
                  latencies: Mapping[str, Mapping[str, float]], scale_gain: Optional[float] = None
                  ) -> List[Dict[str, Any]]:
    """One row per set: accuracy (mean and std over its seeds' records, ``records[name]``, as
    :func:`by_set` groups them), params, MACs, latency, IES/RCS on both cost bases from the mean
    top-1, and the convergence columns (:func:`fmd.chapters.common.convergence_columns`; ``scale_gain``:
    the largest gain of the runs chapter 03's check runs showed finished at this scale)."""
    rows = []
    for name, config in configs.items():
        runs = records[name]
        r = runs[0]
        top1, std = mean_std([x["final"]["test_top1"] for x in runs])
        mmacs = r["macs"] / 1e6  # millions: the quick profile's networks are small
        ms = latencies[name]["median_ms"]
        by_macs, by_time = speed_accuracy(top1, mmacs), speed_accuracy(top1, ms)
        rows.append({
            "set": name, "conv": config.conv,
            "attentions": "—" if config.conv == "static" else "+".join(config.attentions) or "none",
            "seeds": len(runs), "top1 %": top1, "top1 std": std,
            "top5 %": mean_std([x["final"]["test_top5"] for x in runs])[0], "params": r["params"],
            "MMACs": round(r["macs"] / 1e6, 3),
            "latency ms (b=1)": ms, "latency min round ms": latencies[name]["min_round_ms"],
            "latency max round ms": latencies[name]["max_round_ms"],
            "eval ms/image (record, b=%d)" % r["speed"]["eval_batch_size"]:
                r["speed"]["eval_ms_per_image"],
            "IES MMACs": by_macs["ies"], "RCS per MMAC": by_macs["rcs"],
            "IES ms": by_time["ies"], "RCS per ms": by_time["rcs"],
            "train s": statistics.fmean(x["wall_time_s"] for x in runs),
            **convergence_columns(runs, scale_gain=scale_gain),
            "run": " ".join(x["name"] for x in runs),
        })
    return rows


# ---------------------------------------------------------------------------------------------
# Readings: the prose under the figures, written from the rows so that it cannot contradict them


def _fmd_rows(rows: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    return [r for r in rows if r["conv"] != "static"]


def accuracy_reading(rows: Sequence[Mapping[str, Any]]) -> str:
    """What panel (a) shows, in Markdown, from :func:`ablation_rows`: a difference counts only
    beyond the seed spread (the two mean ± std intervals do not overlap)."""
    static = next((r for r in rows if r["conv"] == "static"), None)
    fmd = _fmd_rows(rows)
    if not fmd:
        return "No FMDConv set was run."
    acc = {r["set"]: (r["top1 %"], r["top1 std"]) for r in rows}
    best, worst = max(fmd, key=lambda r: r["top1 %"]), min(fmd, key=lambda r: r["top1 %"])
    seeds = span([r["seeds"] for r in rows], "", 0)
    lines = [f"**Reading (a)** (mean ± std over {seeds} seed(s) per set; *beyond the spread*: the two "
             "mean ± std intervals do not overlap; every number is read from the table above):", ""]
    finished = provisional_bullet(rows, "set")
    if any(std is None for _, std in acc.values()):
        lines.append("* One seed per set: there is no spread to weigh the differences against, so "
                     "the table ranks nothing.")
        return "\n".join(lines + finished)
    if static is not None:
        above = [r["set"] for r in fmd if r["top1 %"] > static["top1 %"]
                 and beyond_spread(acc[r["set"]], acc["static"])]
        below = [r["set"] for r in fmd if r["top1 %"] < static["top1 %"]
                 and beyond_spread(acc[r["set"]], acc["static"])]
        lines.append(f"* The static network reaches {pm(*acc['static'], unit='%')}. FMDConv sets above "
                     f"it beyond the spread: {', '.join(above) or 'none'}; below it beyond the spread: "
                     f"{', '.join(below) or 'none'}; the others are within the spread.")
    gap = best["top1 %"] - worst["top1 %"]
    lines.append(f"* The best FMDConv set is *{best['set']}* ({pm(*acc[best['set']], unit='%')}); the "
                 f"worst is *{worst['set']}* ({pm(*acc[worst['set']], unit='%')}), {gap:.2f} pp below, "
                 + ("beyond the seed spread." if beyond_spread(acc[best["set"]], acc[worst["set"]])
                    else "within the seed spread: these runs do not rank them."))
    apart = [r["set"] for r in fmd if r is not best and not beyond_spread(acc[r["set"]], acc[best["set"]])]
    lines.append("* Sets that the seeds cannot tell apart from the best: "
                 + (", ".join(apart) if apart else "none") + ".")
    return "\n".join(lines + finished)


def cost_reading(rows: Sequence[Mapping[str, Any]]) -> str:
    """What panels (b) and (c) show on each cost basis, in Markdown, from :func:`ablation_rows`."""
    static = next((r for r in rows if r["conv"] == "static"), None)
    fmd = _fmd_rows(rows)
    with_kernel = [r for r in fmd if "kernel" in r["attentions"]]
    without = [r for r in fmd if "kernel" not in r["attentions"]]
    lines = ["**Reading (b) and (c)** (from the table above):", ""]
    basis = []
    if static is not None:
        basis.append(f"the static network costs {static['MMACs']:.3f} MMACs and "
                     f"{static['latency ms (b=1)']:.2f} ms (RCS {static['RCS per MMAC']:.3f} per MMAC, "
                     f"{static['RCS per ms']:.3f} per ms)")
    for name, group in (("without the kernel attention", without), ("with it", with_kernel)):
        if group:
            basis.append(f"the FMDConv sets {name} {span([r['MMACs'] for r in group], ' MMACs', 3)} and "
                         f"{span([r['latency ms (b=1)'] for r in group], ' ms')} "
                         f"(RCS {span([r['RCS per MMAC'] for r in group], '', 3)} per MMAC, "
                         f"{span([r['RCS per ms'] for r in group], '', 3)} per ms)")
    lines.append("* On one image at batch 1: " + "; ".join(basis) + ".")
    if static is not None and fmd:
        ratios = [r["latency ms (b=1)"] / static["latency ms (b=1)"] for r in fmd]
        lines.append(f"* Every FMDConv set takes {span(ratios, '×')} the static network's latency; "
                     f"in MACs the ratio is {span([r['MMACs'] / static['MMACs'] for r in fmd], '×')}.")
    if with_kernel and without:
        overlap = (min(r["latency ms (b=1)"] for r in with_kernel)
                   <= max(r["latency ms (b=1)"] for r in without))
        lines.append("* The latencies of the two groups " + ("overlap" if overlap else "do not overlap")
                     + "; neighbouring sets closer than the error bars (the spread of the rounds) "
                       "should not be ranked.")
    return "\n".join(lines)
