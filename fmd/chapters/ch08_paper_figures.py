"""Chapter 08 (the paper's figures and tables, regenerated from run records).

Nothing here trains but the backbone table's runs (:func:`run_backbones`). Records are looked up by
the configs the chapters that made them define (:mod:`.ch03_training`,
:mod:`.ch04_temperature_and_k`, :mod:`.ch05_attention_ablation`), so a figure is redrawn from
the same runs; a missing run is reported with the chapter that makes it.
Published numbers (:mod:`fmd.reference`) only ever appear in their own tables, labelled "published".
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

from .. import reference, runs
from ..labels import conv_label
from ..profiles import ablation_config, runs_root
from ..train import TrainConfig
from .common import (FALL_EPOCH, FALL_LOSS, WORST_FALL, check_config, convergence_columns, fall_columns,
                     provisional_bullet, run_all, stored_records)

Record = Dict[str, Any]


BACKBONE_DEPTHS = (18, 34, 50, 101)  # the official repository's table: FMDConv K = 4 on each

# The backbone runs each profile checks (a run of the same config at 1.5x the epochs). Under quick
# the ResNet-18 ones are chapter 03's checks of the sweeps' scale; the deeper ones take 20 min to
# 5 h each on the 2-core machine, so only those listed are trained and read, and the other rows
# read "no check run" and are named not shown finished.
BACKBONE_CHECKS: Dict[str, Tuple[Tuple[int, str], ...]] = {
    "quick": ((18, "static"), (18, "fmdconv"), (34, "static"), (34, "fmdconv"), (50, "static"),
              (101, "static")),
}


# ---------------------------------------------------------------------------------------------
# Records


def backbone_configs(profile: str, depths: Sequence[int] = BACKBONE_DEPTHS,
                     convs: Sequence[str] = ("static", "fmdconv"), seed: int = 0
                     ) -> Dict[Tuple[int, str], TrainConfig]:
    """The backbone table's runs: each depth with each conv (FMDConv official, K = 4) at the
    profile's ablation scale (under ``quick`` ResNet-18's are chapter 05's, the static ResNet-50
    chapter 03's)."""
    return {(d, c): ablation_config(profile, conv=c, depth=d, kernel_num=4, preset="official",
                                    seed=seed)
            for d in depths for c in convs}


def backbone_checks(configs: Mapping[Tuple[int, str], TrainConfig], profile: str
                    ) -> Dict[Tuple[int, str], TrainConfig]:
    """The check runs of the backbone ``configs`` that ``profile`` reads (:data:`BACKBONE_CHECKS`)."""
    return {k: check_config(c) for k, c in configs.items() if k in BACKBONE_CHECKS.get(profile, ())}


def run_backbones(configs: Mapping[Tuple[int, str], TrainConfig], profile: str
                  ) -> Dict[Tuple[int, str], Record]:
    """Train (or fetch) the backbone table's runs: the one place chapter 08 trains."""
    return run_all(configs, profile)


def stored(configs: Mapping[Hashable, TrainConfig], profile: str
           ) -> Tuple[Dict[Hashable, Record], List[Hashable]]:
    """The finished records of ``configs`` (never trains; :func:`fmd.chapters.common.stored_records`),
    and the names of those not run yet."""
    found = stored_records(configs, profile)
    return found, [n for n in configs if n not in found]


def report(what: str, found: Mapping[Hashable, Any], missing: Sequence[Hashable],
           chapter: str, skips: bool = True) -> bool:
    """Print what was found for one figure and which chapter makes what is missing; True if any.

    ``skips``: the figure is skipped when this set is empty (say so); False for a part of a figure.
    """
    total = len(found) + len(missing)
    print(f"{what}: {len(found)} of {total} runs found")
    if missing:
        print(f"  not run yet: {', '.join(map(str, missing))} — run notebooks/{chapter} "
              f"under this profile to make them")
    if not found and skips:
        print("  skipped: nothing to draw")
    return bool(found)


def inventory(profile: str) -> List[Dict[str, Any]]:
    """Every record under the profile's runs root, counted by dataset, recipe and conv."""
    counts: Dict[Tuple[str, str, str], int] = {}
    for r in runs.list_records(runs_root(profile)):
        c = r["config"]
        key = (c["dataset"], c["recipe"], c["conv"])
        counts[key] = counts.get(key, 0) + 1
    return [{"dataset": d, "recipe": rc, "conv": cv, "records": n}
            for (d, rc, cv), n in sorted(counts.items())]


# ---------------------------------------------------------------------------------------------
# Tables


def published_rows(archs: Sequence[str] = ("resnet18",),
                   tables: Sequence[str] = ("odconv_imagenet", "fashion_mnist", "paper_claims"),
                   ) -> List[Dict[str, Any]]:
    """Published figures for ``archs`` (fmd.reference), one row per table, arch and method."""
    rows = []
    for table in tables:
        for (arch, method), figures in reference.ALL[table].items():
            if arch not in archs:
                continue
            row: Dict[str, Any] = {"published in": table, "arch": arch, "method": method}
            for metric, p in figures.items():
                row[f"{metric} (published, {p.unit})"] = p.value
            row["source"] = "; ".join(dict.fromkeys(p.source for p in figures.values()))
            rows.append(row)
    return rows


def speed_accuracy_rows(records: Mapping[str, Record],
                        bench_tables: Mapping[str, Sequence[Mapping[str, Any]]] = {},
                        cases: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """Per chapter-3 run: top-1, cost per image and IES / RCS on both cost bases of its record.

    With benchmark tables, adds each conv's measured time ratio against static for ``cases``
    (whole-network timings of fmd.bench: another model size than the trained one, see the column).
    """
    rows = []
    for r in records.values():
        conv = r["config"]["conv"]
        macs, time = r["speed_accuracy"]["macs"], r["speed_accuracy"]["eval_time"]
        row: Dict[str, Any] = {
            "conv": conv_label(conv), "K": 1 if conv == "static" else r["config"]["kernel_num"],
            "top-1 (%)": round(r["final"]["test_top1"], 2), "params": r["params"],
            "MMACs/image": round(1e3 * macs["cost_per_image"], 3),
            "IES (MMACs)": _round(macs["ies"], 1e3), "RCS (per MMAC)": _round(macs["rcs"], 1e-3),
            "eval ms/image (record)": round(time["cost_per_image"], 4),
            "IES (ms)": _round(time["ies"]), "RCS (per ms)": _round(time["rcs"]),
        }
        for name, table in bench_tables.items():
            for case in cases:
                match = [b for b in table if b["name"] == case and b["conv"] == conv]
                if match:
                    row[f"bench time ×static: {case} ({Path(name).stem})"] = round(
                        match[0]["time_ratio"], 2)
        rows.append(row)
    return rows


def _round(value: Optional[float], scale: float = 1.0) -> Optional[float]:
    return None if value is None else round(value * scale, 4)


def full_size_params(depth: int, conv: str, kernel_num: int = 4) -> int:
    """Parameters of the full-size network (width 64, 1000 classes, RGB), as the published table
    counts them; built on the meta device, so even ResNet-101 with FMDConv allocates nothing."""
    import torch

    from ..complexity import count_params
    from ..models import ResNet

    options = {} if conv == "static" else {"kernel_num": kernel_num}
    with torch.device("meta"):
        return count_params(ResNet(depth, conv, 1000, "imagenet", 64, 3, init="torch", **options))


def backbone_rows(records: Mapping[Tuple[int, str], Record], scale_gain: Optional[float] = None,
                  checks: Optional[Mapping[Tuple[int, str], Record]] = None) -> List[Dict[str, Any]]:
    """The backbone table: per depth and conv, parameters (full-size and as trained), top-1, top-5
    and training seconds per epoch (mean of the record's epochs), the convergence columns
    (:func:`fmd.chapters.common.convergence_columns`), with the official repository's published
    FMDConv row beside ours (labelled published). ``scale_gain``: the largest gain of the runs chapter 03's
    check runs showed finished at this scale, lent to ResNet-18 only (the depth it checked);
    ``checks``: the check runs (:func:`backbone_checks`), which decide where there is one."""
    rows = []
    for (depth, conv), r in records.items():
        kernel_num = r["config"]["kernel_num"]
        epoch_s = [h["train_seconds"] for h in r["history"]]
        row: Dict[str, Any] = {
            "depth": depth, "conv": conv_label(conv),
            "params full-size (M)": round(full_size_params(depth, conv, kernel_num) / 1e6, 2),
            "params as trained (M)": round(r["params"] / 1e6, 3),
            "top-1 (%)": round(r["final"]["test_top1"], 2), "top-5 (%)": round(r["final"]["test_top5"], 2),
            "train s/epoch": round(sum(epoch_s) / len(epoch_s), 1),
            "train images/epoch": r["history"][0]["train_images"],
            **convergence_columns([r], (checks or {}).get((depth, conv)), with_check=bool(checks),
                                  scale_gain=scale_gain if depth == 18 else None),
        }
        published = reference.FMDCONV_BACKBONES.get((f"resnet{depth}", "fmdconv_4x"))
        if conv == "fmdconv" and published is not None:
            row.update({"published params (M)": published["params_m"].value,
                        "published top-1 (%)": published["top1"].value,
                        "published top-5 (%)": published["top5"].value,
                        "published s/epoch": published["epoch_s"].value})
        row["run"] = r["name"]
        rows.append(row)
    return rows


def anneal_rows(records: Mapping[str, Record]) -> List[Dict[str, Any]]:
    """One row per run of the same network annealed over different lengths (``records``: label →
    record): the anneal in epochs and in steps (the temperatures move once per step), the final
    top-1, the worst fall below a best earlier epoch, its epoch and the training loss change over it
    (:func:`fmd.chapters.common.fall_columns`)."""
    rows = []
    for label, r in records.items():
        c = r["config"]
        images = r["history"][0]["train_images"]  # the loader drops a short last batch if it has a full one
        steps_per_epoch = images // c["batch_size"] if images >= c["batch_size"] else 1
        rows.append({"run": label, "anneal epochs": c["anneal_epochs"],
                     "anneal steps": round(c["anneal_epochs"] * steps_per_epoch),
                     "top-1 (%)": round(r["final"]["test_top1"], 2),
                     **fall_columns(r["history"]), "record": r["name"]})
    return rows


def anneal_reading(rows: Sequence[Mapping[str, Any]]) -> str:
    """What :func:`anneal_rows` says, in Markdown: each anneal's steps, worst fall and final top-1."""
    parts = [f"over {r['anneal epochs']:g} epochs ({r['anneal steps']:,} steps) it "
             + (f"fell {r[WORST_FALL]:.2f} pp at epoch {r[FALL_EPOCH]} (training loss "
                f"{r[FALL_LOSS]:+.3f} over the fall)" if r[FALL_EPOCH] else
                "never fell below an earlier epoch") + f" and ended at {r['top-1 (%)']:.2f}%" for r in rows]
    return (f"**Reading** (one seed each; from the table above): annealed {'; '.join(parts)}. One "
            "pair of runs says how far test accuracy fell on the way under each anneal, not why.")


def backbone_reading(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the backbone table says, in Markdown, from :func:`backbone_rows`."""
    by = {(r["depth"], r["conv"]): r for r in rows}
    fmd, static = conv_label("fmdconv"), conv_label("static")
    depths = sorted({r["depth"] for r in rows})
    lines = ["**Reading the backbone table** (one seed per run; every number from the table above):", ""]
    counted = [d for d in depths if (d, fmd) in by and "published params (M)" in by[(d, fmd)]]
    if counted:
        same = all(abs(by[(d, fmd)]["params full-size (M)"] - by[(d, fmd)]["published params (M)"]) < 0.01
                   for d in counted)
        lines.append("* Full-size parameters of FMDConv K = 4 "
                     + ("match the published row on every depth" if same else
                        "differ from the published rows on " + ", ".join(
                            f"ResNet-{d}" for d in counted
                            if abs(by[(d, fmd)]["params full-size (M)"]
                                   - by[(d, fmd)]["published params (M)"]) >= 0.01))
                     + f" ({', '.join(str(by[(d, fmd)]['params full-size (M)']) + 'M' for d in counted)}).")
    pairs = [d for d in depths if (d, fmd) in by and (d, static) in by]
    if pairs:
        f_, s_ = ({d: by[(d, c)] for d in pairs} for c in (fmd, static))
        gaps = ", ".join(f"ResNet-{d} {f_[d]['top-1 (%)'] - s_[d]['top-1 (%)']:+.2f} pp" for d in pairs)
        timed = [d for d in pairs if s_[d]["train s/epoch"] > 0]  # a tiny run rounds to 0.0 s
        times = ", ".join(f"ResNet-{d} {f_[d]['train s/epoch'] / s_[d]['train s/epoch']:.2f}×"
                          for d in timed)
        lines.append(f"* FMDConv against the static network of the same depth, top-1: {gaps}.")
        lines.append("* Training time per epoch, FMDConv over static: "
                     + (f"{times}." if timed else "the epochs are too short to time (0.0 s)."))
    fmd_rows = [by[(d, fmd)] for d in depths if (d, fmd) in by]
    if len(fmd_rows) > 1:
        best = max(fmd_rows, key=lambda r: r["top-1 (%)"])
        text = f"* The best FMDConv backbone here is ResNet-{best['depth']} ({best['top-1 (%)']:.2f}%)"
        published = [r for r in fmd_rows if "published top-1 (%)" in r]
        if published:
            top = max(published, key=lambda r: r["published top-1 (%)"])
            text += (f"; the published table, at its own scale, puts ResNet-{top['depth']} first "
                     f"({top['published top-1 (%)']:.2f}%, published)")
        lines.append(text + ".")
    lines += provisional_bullet([{**r, "network": f"ResNet-{r['depth']} {r['conv']}"} for r in rows],
                                "network")
    return "\n".join(lines)
