"""Chapter 03 (training static and dynamic convolutions): the configs, the runs and the accuracy table.

Every number is read from the run records of :mod:`fmd.train` (one JSON file per run, found through
the run cache of :mod:`fmd.runs`). Chapter 08 looks the same runs up through :func:`main_configs`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..conv import CONV_NAMES, CONVS
from ..labels import conv_label
from ..models import STEM_DOWNSAMPLING
from ..profiles import ablation_config, depth_seeds, get_profile, main_config
from ..train import TrainConfig
from .common import (CHECK, CONVERGENCE, GAIN, RISING_PP, beyond_spread, check_config, check_delta,
                     collapsed, convergence_columns, last_quarter_gain, mean_std, pm, provisional,
                     shown_finished, span, stored_records)

Record = Dict[str, Any]
Run = Tuple[int, int, str]  # (depth, seed, conv): one run of the comparison


# ---------------------------------------------------------------------------------------------
# Runs


def main_configs(profile: str, dataset: str = "", convs: Sequence[str] = CONV_NAMES, *,
                 kernel_num: int = 4, preset: str = "official", epochs: Optional[int] = None,
                 seed: int = 0, depth: int = 18) -> Dict[str, TrainConfig]:
    """The chapter-3 config of each conv (:func:`fmd.profiles.main_config`), same K for all."""
    overrides: Dict[str, Any] = {"kernel_num": kernel_num, "preset": preset, "seed": seed,
                                 "depth": depth}
    if epochs is not None:
        overrides["epochs"] = epochs
    return {conv: main_config(profile, dataset, conv=conv, **overrides) for conv in convs}


def comparison_configs(profile: str, dataset: str = "", convs: Sequence[str] = CONV_NAMES, *,
                       depths: Sequence[int] = (18,), seeds: Optional[Sequence[int]] = None,
                       kernel_num: int = 4, preset: str = "official", epochs: Optional[int] = None
                       ) -> Dict[Run, TrainConfig]:
    """The comparison: :func:`main_configs` for each depth and training seed (seeds: the
    profile's for that depth, :func:`fmd.profiles.depth_seeds`), keyed ``(depth, seed, conv)``;
    the data subset stays fixed across seeds."""
    return {(d, s, conv): config for d in depths
            for s in (depth_seeds(profile, d) if seeds is None else seeds)
            for conv, config in main_configs(profile, dataset, convs, kernel_num=kernel_num,
                                             preset=preset, epochs=epochs, seed=s, depth=d).items()}


def check_configs(configs: Mapping[Run, TrainConfig], depths: Sequence[int] = (18,),
                  also: Sequence[Tuple[int, str]] = ()) -> Dict[Tuple[int, str], TrainConfig]:
    """Issue 25's check runs: per (depth, conv) of ``depths`` (and each pair in ``also``), the
    lowest seed's config at 1.5× its epochs (:func:`fmd.chapters.common.check_config`);
    :func:`accuracy_rows` compares each with the mean of the main runs."""
    out: Dict[Tuple[int, str], TrainConfig] = {}
    for (d, _, c), config in sorted(configs.items(), key=lambda item: item[0][1]):
        if (d in depths or (d, c) in also) and (d, c) not in out:
            out[(d, c)] = check_config(config)
    return out


# The deeper comparison runs that each profile checks as ResNet-18's are checked. A ResNet-50 check
# run trains 1.5 times as long as its main run (about 40 to 100 min of training a run on the 2-core
# machine under quick, one thread), so a profile trains and reads only those listed here; any other
# deeper row reads "no check run" and is named not shown finished.
DEEP_CHECKS: Dict[str, Tuple[Tuple[int, str], ...]] = {
    "quick": ((50, "static"), (50, "condconv"), (50, "dyconv"), (50, "odconv"), (50, "fmdconv"))}


def comparison_checks(configs: Mapping[Run, TrainConfig], profile: str
                      ) -> Dict[Tuple[int, str], TrainConfig]:
    """The check runs of the comparison ``configs`` under ``profile``: every ResNet-18 conv's and
    the deeper ones of :data:`DEEP_CHECKS`."""
    return check_configs(configs, also=DEEP_CHECKS.get(profile, ()))


# The sweeps' scale (chapters 04, 05 and 08 train at fmd.profiles.ablation_config) is checked as the
# comparison is: static and FMDConv ResNet-18 at the profile's seeds, each with a check run at 1.5x
# the epochs. Under quick, the shorter sweeps tried before 35 epochs are read too (their records
# are committed; they are never trained here).
SCALE_CONVS = ("static", "fmdconv")
SCALE_TRIED = {"quick": (15, 23)}


def scale_configs(profile: str, epochs: Optional[int] = None) -> Dict[Run, TrainConfig]:
    """The sweeps' scale as a comparison of :data:`SCALE_CONVS` over the profile's seeds, keyed
    ``(depth, seed, conv)`` (``epochs``: another length than the profile's)."""
    over = {} if epochs is None else {"epochs": epochs}
    return {(18, s, c): ablation_config(profile, conv=c, seed=s, **over)
            for s in get_profile(profile).seeds for c in SCALE_CONVS}


def scale_rows(profile: str, records: Mapping[Run, Record],
               checks: Mapping[Tuple[int, str], Record]) -> List[Dict[str, Any]]:
    """:func:`check_rows` of the sweeps' scale (``records``, ``checks``: its runs), after those of
    the shorter lengths tried first (:data:`SCALE_TRIED`) whose runs and check runs are stored."""
    rows = []
    for epochs in SCALE_TRIED.get(profile, ()):
        configs = scale_configs(profile, epochs)
        mains, found = stored_records(configs, profile), stored_records(check_configs(configs), profile)
        rows += check_rows(mains, {k: r for k, r in found.items() if (k[0], k[1]) in seed_groups(mains)})
    return rows + check_rows(records, checks)


def scale_gain(profile: str) -> Optional[float]:
    """Where every network of the sweeps' scale (:func:`scale_configs`) is stored and shown finished
    by its stored check run: the largest last-quarter gain of those runs (pp), which chapters 04, 05
    and 08 take as the most a ResNet-18 run at that scale may gain and read as finished
    (:data:`fmd.chapters.common.SCALE_OK`); None otherwise."""
    configs = scale_configs(profile)
    mains, checks = stored_records(configs, profile), stored_records(check_configs(configs), profile)
    rows = check_rows(mains, checks) if len(mains) == len(configs) else []
    if len(rows) < len(SCALE_CONVS) or not all(r["finished"] for r in rows):
        return None
    return max(last_quarter_gain(r["history"]) for r in mains.values())


def scale_reading(rows: Sequence[Mapping[str, Any]], images: Optional[int], epochs: int) -> str:
    """Per length of :func:`scale_rows`, which networks its check run shows finished, and whether the
    sweeps' length (``epochs``) is the shortest at which all of :data:`SCALE_CONVS` are, in Markdown."""
    lengths = dict.fromkeys(r["main epochs"] for r in rows)
    count = f"{images:,}" if images else "all"
    lines = [f"**Reading** (every number from the table above; {count} training images):", ""]
    for length in lengths:
        group = [r for r in rows if r["main epochs"] == length]
        parts = [f"{r['conv']} {'finished' if r['finished'] else 'not shown finished'} "
                 f"(check Δ {r[CHECK]:+.2f} pp against ±{r['tolerance (pp)']:.2f})" for r in group]
        lines.append(f"* **{length} epochs**: " + "; ".join(parts) + ".")
    if not rows:
        return "No run of the sweeps' scale is stored."
    done = [e for e in lengths
            if sum(r["finished"] for r in rows if r["main epochs"] == e) == len(SCALE_CONVS)]
    if epochs not in done:
        verdict = "not every network is shown finished there."
    elif done[0] == epochs:
        verdict = "the shortest length tried at which every network is shown finished."
    else:
        verdict = f"every network is shown finished there, and already at {done[0]} epochs."
    return "\n".join(lines + ["", f"The sweeps train {epochs} epochs: {verdict}"])


# Issue 25's pilot of a longer length for the comparison's ResNet-50s (quick only; the records are
# committed, never trained here): per (depth, conv) listed, the comparison's config at the length of its
# check run, at these seeds, with a check run of its own at 1.5x that length. The static network has
# three seeds there, so its check run is read against a measured seed spread.
DEEP_TRIED: Dict[str, Dict[Tuple[int, str], Tuple[int, ...]]] = {
    "quick": {(50, "static"): (0, 1, 2), (50, "dyconv"): (0,)}}


def deep_configs(profile: str, configs: Mapping[Run, TrainConfig]) -> Dict[Run, TrainConfig]:
    """The longer length of :data:`DEEP_TRIED`: each listed (depth, conv) of the comparison
    ``configs`` at its check run (:func:`check_configs`: the lowest seed's config at 1.5x its
    epochs), at the listed seeds."""
    tried = DEEP_TRIED.get(profile, {})
    return {(d, s, c): dataclasses.replace(longer, seed=s)
            for (d, c), longer in check_configs(configs, depths=(), also=tuple(tried)).items()
            for s in tried[(d, c)]}


def deep_rows(profile: str, configs: Mapping[Run, TrainConfig], records: Mapping[Run, Record],
              checks: Mapping[Tuple[int, str], Record]) -> List[Dict[str, Any]]:
    """:func:`check_rows` of the networks :data:`DEEP_TRIED` lists: first at the comparison's length
    (``records``, ``checks``: its runs), then at the longer length where its runs and check run are
    stored; each row adds its main runs' lowest and highest final top-1 (None for one seed) and
    their mean final training top-1."""
    tried = DEEP_TRIED.get(profile, {})
    longer = deep_configs(profile, configs)
    mains = stored_records(longer, profile)
    found = stored_records(check_configs(longer, depths=(), also=tuple(tried)), profile)
    found = {k: r for k, r in found.items() if k in seed_groups(mains)}
    rows = []
    for runs, checked in (({k: r for k, r in records.items() if (k[0], k[2]) in tried},
                           {k: r for k, r in checks.items() if k in tried}), (mains, found)):
        groups = seed_groups(runs)
        for row, key in zip(check_rows(runs, checked), checked):
            finals = _final(groups[key], "test_top1")
            several = len(finals) > 1
            row.update({"lowest seed top-1 (%)": min(finals) if several else None,
                        "highest seed top-1 (%)": max(finals) if several else None,
                        "main train top-1 (%)": round(float(np.mean(
                            [r["history"][-1]["train_top1"] for r in groups[key]])), 2)})
            rows.append(row)
    return rows


def deep_reading(profile: str, configs: Mapping[Run, TrainConfig], rows: Sequence[Mapping[str, Any]]
                 ) -> str:
    """Per row of :func:`deep_rows` (``configs``: the comparison's), whether its check run shows it
    finished; per length, the networks of :data:`DEEP_TRIED` with no row there; for rows of several
    seeds, where the check run lands against them; and the lengths at which every network tried is
    shown finished, in Markdown."""
    if not rows:
        return "No run of the deeper pilot is stored."
    piloted = DEEP_TRIED.get(profile, {})
    tried = {(d, conv_label(c)) for d, c in piloted}
    images = {c.train_subset for (d, _, conv), c in configs.items() if (d, conv) in piloted}
    count = ", ".join(f"{n:,}" if n else "all" for n in sorted(images, key=lambda n: n or 0))
    lines = [f"**Reading** (every number from the table above; {count} training images):", ""]
    at: Dict[int, List[Mapping[str, Any]]] = {}
    for r in rows:
        at.setdefault(r["main epochs"], []).append(r)
    for length, group in at.items():
        for r in group:
            seeds = f"{r['seeds']} seed{'s' if r['seeds'] > 1 else ''}"
            lines.append(f"* **ResNet-{r['depth']} {r['conv']}, {length} epochs** ({seeds}): "
                         f"{'finished' if r['finished'] else 'not shown finished'} (check run at "
                         f"{r['check epochs']} epochs: Δ {r[CHECK]:+.2f} pp against "
                         f"±{r['tolerance (pp)']:.2f}).")
        missing = sorted(tried - {(r["depth"], r["conv"]) for r in group})
        if missing:
            names = ", ".join(f"ResNet-{d} {c}" for d, c in missing)
            lines.append(f"* **{length} epochs**: no run with a check run stored for {names}.")
    lines.append("")
    for r in rows:
        low, high = r["lowest seed top-1 (%)"], r["highest seed top-1 (%)"]
        if low is not None:
            check = r["check top-1 (%)"]
            where = "below all of them" if check < low else "above all of them" if check > high else \
                "within their range"
            lines.append(f"Seeds against length: the {r['seeds']} seeds of the {r['conv']} at "
                         f"{r['main epochs']} epochs end at {low:.2f}–{high:.2f} %; its check run's "
                         f"{check:.2f} % lies {where}.")
    train = [r["main train top-1 (%)"] for r in rows]
    lines.append(f"The main runs end at a mean training top-1 of {span(train, ' %')}"
                 + (": they have learnt their training images, and what more epochs change is how that "
                    "carries over to the test set." if min(train) >= 99.0 else "."))
    done = [e for e, group in at.items()
            if all(r["finished"] for r in group) and {(r["depth"], r["conv"]) for r in group} >= tried]
    lines.append("Lengths at which every network tried is shown finished: "
                 + (", ".join(f"{e} epochs" for e in done) if done else "none") + ".")
    return "\n".join(lines)


# Issue 25's recipe pilot: ResNet-18 runs on all of Fashion-MNIST's training images, one seed,
# each as overrides of PILOT_BASE (the recipe the pilot tested its candidates against, pinned here
# so that a change of the recipe leaves the pilot's runs where they are); the epoch-10 and
# ImageNet-stem runs sweep the stem and the augmentation on the static network, the others test
# the choice on FMDConv and on ODConv (the slowest to start), whose collapse after a one-epoch
# anneal made the recipe anneal over three.
PILOT_BASE: Dict[str, Any] = dict(
    dataset="fashion_mnist", transform="flip", stem="small", width=16, epochs=15, batch_size=128,
    lr=0.1, momentum=0.9, weight_decay=5e-4, lr_schedule="cosine", anneal_epochs=1.0,
    warmup_epochs=0.5, label_smoothing=0.1, temperature_clock="official", threads=1)
PILOT: Tuple[Tuple[str, Dict[str, Any]], ...] = (
    ("static", dict(stem="imagenet", transform="cifar", epochs=10)),
    ("static", dict(stem="imagenet", transform="cifar")),
    ("static", dict(stem="imagenet", transform="none")),
    ("static", dict(transform="none", epochs=10)),
    ("static", dict(transform="none")),
    ("static", dict(transform="cifar", epochs=10)),
    ("static", dict(epochs=10)),
    ("static", {}),
    ("fmdconv", dict(transform="none", epochs=10, temperature_clock="fmd")),
    ("fmdconv", {}),
    ("odconv", dict(transform="none", epochs=10, temperature_clock="fmd")),
    ("odconv", {}),
    ("odconv", dict(seed=1)),
    ("odconv", dict(epochs=23)),
    ("odconv", dict(anneal_epochs=3.0)),
)
_PILOT_FIELDS = ("stem", "transform", "epochs")  # what the pilot varies (and the anneal, the clock)


def pilot_configs() -> Dict[str, TrainConfig]:
    """The pilot's runs by label ('Static · small stem, flip, 15 epochs')."""
    from ..config import make_config

    out = {}
    for conv, overrides in PILOT:
        config = make_config("quick", conv=conv, **{**PILOT_BASE, **overrides})
        clock = ", fmd clock" if config.temperature_clock == "fmd" and config.schedules() else ""
        plural = "" if config.anneal_epochs == 1 else "s"
        anneal = f", anneal {config.anneal_epochs:g} epoch{plural}" if config.schedules() else ""
        seed = f", seed {config.seed}" if config.seed else ""
        out[f"{conv_label(conv)} · {config.stem} stem, {config.transform}, "
            f"{config.epochs} epochs{anneal}{clock}{seed}"] = config
    return out


def pilot_chosen(records: Mapping[str, Record]) -> List[str]:
    """The labels of the pilot runs whose config is the quick recipe's at the pilot's length (the
    recipe it chose; the main comparison then trains it longer, see RECIPES["quick"])."""
    from ..config import make_config

    return [label for label, r in records.items()
            if r["key"] == make_config("quick", conv=r["config"]["conv"], epochs=PILOT_BASE["epochs"]).key()]


def pilot_records() -> Dict[str, Record]:
    """The pilot's records, committed under ``data/runs/`` (whatever the profile), by label; a
    missing one is left out."""
    from .. import runs

    found = {label: runs.load_record(c.identity(), runs.RUNS_ROOT) for label, c in pilot_configs().items()}
    return {label: r for label, r in found.items() if r is not None}


def pilot_rows(records: Mapping[str, Record]) -> List[Dict[str, Any]]:
    """One row per pilot run: what it varied, its final top-1 and its convergence columns."""
    rows = []
    for r in records.values():
        c = r["config"]
        rows.append({"conv": conv_label(c["conv"]), **{f: c[f] for f in _PILOT_FIELDS},
                     "anneal epochs": c["anneal_epochs"] if c["conv"] != "static" else None,
                     "top-1 (%)": round(r["final"]["test_top1"], 2),
                     "train top-1 (%)": round(r["history"][-1]["train_top1"], 2),
                     **convergence_columns([r]), "run": r["name"]})
    return rows


def by_conv(records: Mapping[Run, Record], depth: int, seed: Optional[int] = None
            ) -> Dict[str, Record]:
    """The records of one depth by conv: one seed's (``seed``), or the first seed's."""
    seeds = sorted({s for d, s, _ in records if d == depth})
    pick = seeds[0] if seed is None else seed
    return {c: r for (d, s, c), r in records.items() if d == depth and s == pick}


def seed_groups(records: Mapping[Run, Record]) -> Dict[Tuple[int, str], List[Record]]:
    """The records grouped by (depth, conv) over their seeds, in the comparison's order."""
    groups: Dict[Tuple[int, str], List[Record]] = {}
    for (d, _, c), r in records.items():
        groups.setdefault((d, c), []).append(r)
    return groups


def key_fields(config: TrainConfig) -> List[str]:
    """The fields this conv reads beyond those every conv shares (:attr:`fmd.conv.ConvSpec.run_fields`):
    only these can make its key differ from another conv's run of the same recipe. A field added
    after runs were committed enters a key only away from its old default, so the list is the
    conv's, whatever the profile sets."""
    return list(CONVS[config.conv].run_fields)


def anneal_end(config: TrainConfig, role: str, steps: int = 20000) -> Optional[float]:
    """The first epoch from which the role's temperature stays at its final value (None: no schedule)."""
    schedule = config.schedules().get(role)
    if schedule is None:
        return None
    grid = np.linspace(0.0, config.epochs, steps + 1)
    values = np.array([schedule(e) for e in grid])
    changing = np.flatnonzero(~np.isclose(values, values[-1]))
    return 0.0 if changing.size == 0 else float(grid[changing[-1] + 1])


def run_schedules(records: Mapping[str, Mapping[str, Any]]
                  ) -> Dict[str, Dict[str, Callable[[float], float]]]:
    """Each record's temperature schedules, rebuilt from the config it stores (for the figure)."""
    return {name: TrainConfig.from_dict(r["config"]).schedules() for name, r in records.items()}


# ---------------------------------------------------------------------------------------------
# Tables


def accuracy_rows(records: Mapping[Run, Record],
                  checks: Optional[Mapping[Tuple[int, str], Record]] = None) -> List[Dict[str, Any]]:
    """One row per (depth, conv) over its seeds: top-1 and top-5 as mean ± std, the Δ of mean
    top-1 against the static network of the same depth and whether it exceeds the seed spread
    (:func:`fmd.chapters.beyond_spread`), size, MACs, median throughput, mean wall time and the
    convergence columns (:func:`fmd.chapters.common.convergence_columns`; ``checks``: the check run
    of a (depth, conv) at 1.5× the epochs, where there is one)."""
    groups = seed_groups(records)
    rows = []
    for (depth, conv), runs in groups.items():
        top1, top5 = mean_std(_final(runs, "test_top1")), mean_std(_final(runs, "test_top5"))
        base = groups.get((depth, "static"))
        static = None if base is None else mean_std(_final(base, "test_top1"))
        first = runs[0]
        rows.append({
            "depth": depth, "conv": conv_label(conv),
            "K": 1 if conv == "static" else first["config"]["kernel_num"],
            "seeds": len(runs), "top-1 (%)": round(top1[0], 2), "top-1 std (pp)": _r(top1[1]),
            "top-5 (%)": round(top5[0], 2),
            "Δ top-1 vs static (pp)": None if static is None else round(top1[0] - static[0], 2),
            "beyond seed spread": None if static is None or conv == "static" else
            beyond_spread(top1, static),
            "params": first["params"], "MACs": first["macs"],
            "train images/s": round(float(np.median([r["speed"]["train_images_per_s"] for r in runs])), 1),
            "eval ms/image": round(float(np.median([r["speed"]["eval_ms_per_image"] for r in runs])), 3),
            "wall time (min)": round(float(np.mean([r["wall_time_s"] for r in runs])) / 60, 1),
            "epochs": len(first["history"]),
            **convergence_columns(runs, (checks or {}).get((depth, conv)), with_check=checks is not None),
            "first-epoch train loss": round(float(np.mean([r["history"][0]["train_loss"] for r in runs])), 3),
            "classes": first["num_classes"], "runs": " ".join(r["name"] for r in runs),
        })
    return rows


def check_rows(records: Mapping[Run, Record], checks: Mapping[Tuple[int, str], Record]
               ) -> List[Dict[str, Any]]:
    """Each check run beside its main runs: the main runs' epochs and mean ± std top-1, the check
    run's epochs and top-1, their difference, the tolerance max(std, 0.3 pp) and whether the
    config is shown finished (:func:`fmd.chapters.common.shown_finished`)."""
    groups = seed_groups(records)
    rows = []
    for (depth, conv), check in checks.items():
        mains = groups[(depth, conv)]
        mean, std = mean_std(_final(mains, "test_top1"))
        rows.append({"depth": depth, "conv": conv_label(conv), "main epochs": len(mains[0]["history"]),
                     "seeds": len(mains), "main top-1 (%)": pm(mean, std),
                     GAIN: convergence_columns(mains)[GAIN], "check epochs": len(check["history"]),
                     "check top-1 (%)": round(check["final"]["test_top1"], 2),
                     CHECK: round(check_delta(mains, check), 2),
                     "tolerance (pp)": round(max(std or 0.0, RISING_PP), 2),
                     "finished": shown_finished(mains, check), "check run": check["name"]})
    return rows


FITS_PP = 2.0  # training top-1 this far above test top-1: the network fits beyond what carries over


def curves_reading(records: Mapping[Run, Record]) -> str:
    """The last epoch's training against test top-1 per (depth, conv), mean over seeds (the
    training top-1 is the epoch's running mean, with augmentation), and what the gap says."""
    lines = []
    for (depth, conv), runs in seed_groups(records).items():
        train = float(np.mean([r["history"][-1]["train_top1"] for r in runs]))
        test = float(np.mean(_final(runs, "test_top1")))
        lines.append((depth, conv_label(conv), train, test))
    gap = max(train - test for *_, train, test in lines)
    parts = "; ".join(f"ResNet-{d} {c} {train:.2f} / {test:.2f}%" for d, c, train, test in lines)
    verdict = (f"training accuracy runs up to {gap:.1f} pp above test accuracy: the networks fit their "
               "training images beyond what carries over to the test set, so more steps would mostly "
               "widen that gap" if gap > FITS_PP else
               f"training accuracy stays within {FITS_PP:g} pp of test accuracy: the networks are limited "
               "by the number of steps rather than by their capacity")
    return f"Last epoch, training / test top-1 (mean over seeds): {parts}. So {verdict}."


def maps_reading(record: Record) -> str:
    """What the stem leaves of the input, and what that does to the cost of the kernel mix."""
    size = record["input_size"][-1]
    first = size // STEM_DOWNSAMPLING[record["config"]["stem"]]
    return (f"At a {size}×{size} input the {record['config']['stem']} stem leaves {first}×{first} "
            f"maps for the first stage and {max(1, first // 8)}×{max(1, first // 8)} in the last, so "
            "mixing the kernels ($\\sum_k\\pi_k W_k$, the same cost per sample at any map size) "
            "weighs far more in the MACs than the few per cent chapter 02 counts at 224×224.")


def seed_rows(records: Mapping[Run, Record]) -> List[Dict[str, Any]]:
    """One row per run: depth, conv, seed, final top-1 and top-5 (what the means are made of)."""
    return [{"depth": d, "conv": conv_label(c), "seed": s, "top-1 (%)": r["final"]["test_top1"],
             "top-5 (%)": r["final"]["test_top5"], "run": r["name"]}
            for (d, s, c), r in records.items()]


def _by_depth(rows: Sequence[Mapping[str, Any]]) -> Dict[int, Tuple[Optional[Mapping[str, Any]],
                                                                     List[Mapping[str, Any]]]]:
    """Per depth of :func:`accuracy_rows`: the static row (or None) and the dynamic rows, best first."""
    out = {}
    for depth in dict.fromkeys(r["depth"] for r in rows):
        group = [r for r in rows if r["depth"] == depth]
        static = next((r for r in group if r["conv"] == conv_label("static")), None)
        out[depth] = static, sorted((r for r in group if r is not static), key=lambda r: -r["top-1 (%)"])
    return out


def _against_static(static: Mapping[str, Any], dynamic: Sequence[Mapping[str, Any]]) -> str:
    """Which dynamic rows end above, below or within static's seed spread, and which have one seed."""
    spread = [r for r in dynamic if r["top-1 std (pp)"] is not None and static["top-1 std (pp)"] is not None]
    beyond = [r for r in spread if r["beyond seed spread"]]
    gain = "Δ top-1 vs static (pp)"
    parts = [f"{what}: {', '.join(names)}" for what, names in (
        ("above static beyond the seed spread", [r["conv"] for r in beyond if r[gain] > 0]),
        ("below static beyond the seed spread", [r["conv"] for r in beyond if r[gain] < 0]),
        ("within the seed spread of static", [r["conv"] for r in spread if r not in beyond]),
        ("one seed, so no spread to weigh the differences against",
         [r["conv"] for r in dynamic if r not in spread])) if names]
    joined = "; ".join(parts)
    return f"{joined[:1].upper()}{joined[1:]}."


def _cost(static: Mapping[str, Any], dynamic: Sequence[Mapping[str, Any]]) -> str:
    """The dynamic rows' parameters, MACs and training throughput as multiples of static's."""
    speed = [r["train images/s"] / static["train images/s"] for r in dynamic]
    return (f"{span([r['params'] / static['params'] for r in dynamic], '×')} the static network's "
            f"parameters and {span([r['MACs'] / static['MACs'] for r in dynamic], '×')} its MACs per "
            f"image, and train at {span(speed, '×')} its throughput")


def comparison_reading(rows: Sequence[Mapping[str, Any]]) -> str:
    """The prose under the accuracy table, in Markdown, written from :func:`accuracy_rows`."""
    lines = ["**Reading** (every number from the table above; a difference is *beyond the seed "
             "spread* when the two mean ± std intervals do not overlap):", ""]
    for depth, (static, dynamic) in _by_depth(rows).items():
        group = [r for r in rows if r["depth"] == depth]
        seeds = span([r["seeds"] for r in group], "", 0)
        order = ", ".join(f"{r['conv']} {pm(r['top-1 (%)'], r['top-1 std (pp)'], unit='%')}"
                          for r in dynamic)
        plural = "" if seeds == "1" else "s"
        text = f"* **ResNet-{depth}** ({seeds} seed{plural} per conv): "
        if static is not None:
            text += (f"static {pm(static['top-1 (%)'], static['top-1 std (pp)'], unit='%')}; ")
        text += f"dynamic, best first: {order}."
        if static is not None and dynamic:
            text += " " + _against_static(static, dynamic)
        chance = math.log(group[0]["classes"])
        stalled = [r["conv"] for r in group if r["first-epoch train loss"] > chance]
        if stalled:
            text += (f" Mean training loss of the first epoch above ln {group[0]['classes']} = {chance:.2f} "
                     "(a uniform guess scores that: no better than one over their first epoch; the "
                     "learning curves show how they recover): "
                     f"{', '.join(stalled)}.")
        lines.append(text + _then(provisional(group, "conv")) + _then(collapsed(group, "conv")))
    return "\n".join(lines)


def _final(runs: Sequence[Record], metric: str) -> List[float]:
    return [r["final"][metric] for r in runs]


def _r(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 2)


def cost_reading(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the table says about cost, per depth, in Markdown, from :func:`accuracy_rows`:
    parameters, MACs and training throughput of each dynamic conv against the static network."""
    lines = ["**Cost** (from the table above; throughputs on the machine and threads named in the "
             "records, comparable within one machine only):", ""]
    for depth, (static, dynamic) in _by_depth(rows).items():
        if static is None or not dynamic:
            continue
        slowest = min(dynamic, key=lambda r: r["train images/s"])
        lines.append(f"* **ResNet-{depth}**: the dynamic networks hold {_cost(static, dynamic)}; the "
                     f"slowest to train is {slowest['conv']}.")
    return "\n".join(lines)


def init_configs(configs: Mapping[Run, TrainConfig], depth: int = 18, seed: int = 0
                 ) -> Dict[str, TrainConfig]:
    """One depth and seed of the comparison again with PyTorch's own initialisation (``init="torch"``),
    to see how much of each conv's result belongs to the official initialisation."""
    return {c: dataclasses.replace(config, init="torch") for (d, s, c), config in configs.items()
            if d == depth and s == seed}


def init_rows(official: Mapping[str, Record], torch_init: Mapping[str, Record],
              rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per conv: final top-1 under the official and under PyTorch's initialisation (same seed), the
    difference, the seed std of the official runs (``rows``: :func:`accuracy_rows`) for scale, and
    each run's last-quarter gain (the verdict: the larger gain's)."""
    depth = next(iter(official.values()))["config"]["depth"]
    std = {r["conv"]: r["top-1 std (pp)"] for r in rows if r["depth"] == depth}
    out = []
    for conv, r in official.items():
        if conv not in torch_init:
            continue
        a, b = r["final"]["test_top1"], torch_init[conv]["final"]["test_top1"]
        out.append({"depth": depth, "conv": conv_label(conv), "seed": r["config"]["seed"],
                    "top-1 official init (%)": a, "top-1 torch init (%)": b,
                    "torch − official (pp)": round(b - a, 2),
                    "seed std, official (pp)": std.get(conv_label(conv)),
                    **_init_convergence(r, torch_init[conv]),
                    "runs": f"{r['name']} {torch_init[conv]['name']}"})
    return out


def _init_convergence(official: Record, torch_init: Record) -> Dict[str, Any]:
    """The last-quarter gain of both runs of :func:`init_rows` and the verdict of the one that gains
    more (either still rising leaves the comparison provisional)."""
    a, b = convergence_columns([official]), convergence_columns([torch_init])
    worse = max((a, b), key=lambda c: float("inf") if c[GAIN] is None else c[GAIN])
    return {"last-quarter gain, official (pp)": a[GAIN], "last-quarter gain, torch (pp)": b[GAIN],
            CONVERGENCE: worse[CONVERGENCE]}


def init_reading(rows: Sequence[Mapping[str, Any]]) -> str:
    """Which convs the initialisation moves by more than twice their seed std, in Markdown."""
    if not rows:
        return "No run of both initialisations is stored."
    text = ", ".join(f"{r['conv']} {r['torch − official (pp)']:+.2f} pp" for r in rows)
    return (f"**Reading** (one seed per initialisation; every number from the table above): PyTorch's "
            f"initialisation against the official one: {text}. Moved by more than twice its seed std: "
            + (", ".join(_moved(rows)) or "none") + "." + _then(provisional(rows, "conv")))


def _then(sentence: str) -> str:
    """``sentence`` after a space, or nothing where it is empty."""
    return f" {sentence}" if sentence else ""


def _moved(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """The convs of :func:`init_rows` that the initialisation moves by more than twice their seed std."""
    return [r["conv"] for r in rows if r["seed std, official (pp)"] is not None
            and abs(r["torch − official (pp)"]) > 2 * r["seed std, official (pp)"]]


def summary_reading(readings: Mapping[str, Sequence[Mapping[str, Any]]],
                    init_table: Sequence[Mapping[str, Any]] = ()) -> str:
    """The chapter's findings, in Markdown, from its tables: section 5's :func:`accuracy_rows` (per
    dataset, ``readings``) and section 7's :func:`init_rows` (``init_table``)."""
    lines = ["**What this run found** (every number from the tables of sections 5 and 7):", ""]
    for dataset, rows in readings.items():
        for depth, (static, dynamic) in _by_depth(rows).items():
            if not dynamic:
                continue
            best = dynamic[0]
            epochs = span([r["epochs"] for r in rows if r["depth"] == depth], "", 0)
            text = (f"* **{dataset}, ResNet-{depth}**, {epochs} epoch{'s' * (epochs != '1')}: the best "
                    f"dynamic network is {best['conv']} at "
                    f"{pm(best['top-1 (%)'], best['top-1 std (pp)'], unit='%')}")
            if static is not None:
                text += (f", static {pm(static['top-1 (%)'], static['top-1 std (pp)'], unit='%')}. "
                         f"{_against_static(static, dynamic)} The dynamic networks hold "
                         f"{_cost(static, dynamic)}.")
            group = [r for r in rows if r["depth"] == depth]
            lines.append(text + ("" if static is not None else ".") + _then(provisional(group, "conv")))
    if init_table:
        moved = _moved(init_table)
        lines.append(f"* **Initialisation** (ResNet-{init_table[0]['depth']}, one seed): PyTorch's "
                     "initialisation instead of the official one moves "
                     + (", ".join(moved) if moved else "no network") + " by more than twice its seed std."
                     + _then(provisional(init_table, "conv")))
    return "\n".join(lines)
