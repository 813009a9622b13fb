"""What every chapter uses, whichever chapter it is: runs trained or fetched under a profile, the
text of a temperature schedule, batch-1 latencies timed in interleaved rounds, and the seed
statistics and number formats the readings are written with, and whether a run is shown to have
finished learning (its last-quarter gain, its check run). A chapter imports these from here,
never from another chapter."""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import nn

from ..profiles import get_profile, runs_root
from ..timing import inference_step, interleaved_times, sync_for
from ..train import Name, TrainConfig, build_model, train_all

Record = Dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Runs


def run_all(configs: Mapping[Name, TrainConfig], profile: str, *, progress: bool = False,
            checkpoints: bool = False) -> Dict[Name, Record]:
    """Train each config under the profile's runs folder, or fetch it (:func:`fmd.train.train_all`;
    ``checkpoints``: retrain runs whose weights are missing, for chapters that load the models)."""
    return train_all(configs, runs_root(profile), progress=progress, checkpoints=checkpoints,
                     download=get_profile(profile).download)


def schedule_summary(config: TrainConfig) -> Dict[str, str]:
    """Each temperature role of the run's schedule as text: the schedule type, start and end value."""
    out = {}
    for role, schedule in config.schedules().items():
        start, end = schedule(0.0), schedule(float(config.epochs))
        kind = type(schedule).__name__
        out[role] = (f"{kind}, constant {start:g}" if start == end
                     else f"{kind}, {start:g} → {end:g}")
    return out


def top1(record: Mapping[str, Any]) -> float:
    """A run record's final test top-1 (%)."""
    return record["final"]["test_top1"]


# ---------------------------------------------------------------------------------------------
# Batch-1 latency


def latency_models(configs: Mapping[str, TrainConfig],
                   records: Mapping[str, Mapping[str, Any]]) -> Dict[str, nn.Module]:
    """The network of each run in ``records`` as built for training (eval mode), for timing: what
    a forward pass costs depends on the architecture and the input, not on the values of the trained
    weights, so the latency needs no checkpoint."""
    return {name: build_model(configs[name], r["num_classes"], r["input_size"][1]).eval()
            for name, r in records.items()}


def measure_latencies(models: Mapping[str, nn.Module], input_size: Sequence[int], *,
                      repeats: int = 20, rounds: int = 5, warmup: int = 3,
                      threads: Optional[int] = None) -> Dict[str, Dict[str, float]]:
    """Batch-1 latency of every model in ms: ``rounds`` interleaved rounds of ``repeats`` timings.

    Each round times every model in turn (in a rotated order), so a change of load on the machine
    hits every model alike; a model's latency is the median of its per-round medians, with the
    smallest and largest round medians as its spread (:mod:`fmd.timing`). ``threads`` sets torch's
    threads for the measurement and is restored afterwards.
    """
    steps = {name: inference_step(model, input_size) for name, model in models.items()}
    device = next(next(iter(models.values())).parameters()).device
    times = interleaved_times(steps, rounds=rounds, repeats=repeats, warmup=warmup, threads=threads,
                              rotate=True, synchronize=sync_for(device))
    return {n: {"median_ms": 1000 * t.median, "min_round_ms": 1000 * t.low,
                "max_round_ms": 1000 * t.high, "samples": len(t.times)}
            for n, t in times.items()}


# ---------------------------------------------------------------------------------------------
# Seed statistics and the numbers of the readings


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (ddof 1; None for one value) of a seed group."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def beyond_spread(a: Tuple[float, Optional[float]], b: Tuple[float, Optional[float]]) -> bool:
    """Whether two seed groups' mean ± std intervals do not overlap (``a``, ``b``: (mean, std)
    pairs); the chapters call such a difference larger than the seed spread. A single run has no
    spread, so nothing is beyond it."""
    (ma, sa), (mb, sb) = a, b
    return sa is not None and sb is not None and abs(ma - mb) > sa + sb


def span(values: Sequence[float], unit: str = "%", digits: int = 2) -> str:
    """``lo–hi`` with the unit (or the one value where all are equal), for prose written by a cell."""
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}{unit}" if round(lo, digits) == round(hi, digits) else \
        f"{lo:.{digits}f}–{hi:.{digits}f}{unit}"


def pm(mean: float, std: Optional[float], digits: int = 2, unit: str = "") -> str:
    """``mean ± std`` as text (the mean alone where there is no std)."""
    return f"{mean:.{digits}f}{unit}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}{unit}"


# ---------------------------------------------------------------------------------------------
# Convergence (issue 25): whether a run, or a config over its seeds, is shown to have finished learning

RISING_PP = 0.3  # a run whose last quarter still gains more than this (pp) is still rising
GAIN = "last-quarter gain (pp)"  # the table columns the chapters add
CHECK = "check run Δ (pp)"
CONVERGENCE = "convergence"
STILL_RISING, FALLING, CHECK_OFF = "still rising", "falling", "check run off"
TOO_SHORT, FLAT, CHECK_OK = "too short to tell", "flat last quarter (no check run)", "finished (check run)"
# A run without its own check run, at a scale (images, epochs, ResNet-18) whose static and FMDConv
# runs chapter 03's check runs showed finished, and whose last quarter gains no more than the most
# any of those runs gained: under a cosine rate the last quarter gains from the falling rate even
# when a run is done, so a gain like theirs says no more than theirs did.
SCALE_OK = "finished at its scale (gain within chapter 03's checked runs')"
WORST_FALL, FALL_EPOCH = "worst fall (pp)", "fall epoch"
FALL_LOSS = "train loss Δ over fall"  # from the best earlier epoch to the fall's (fall_loss)
COLLAPSE_PP = 10.0  # a fall of test top-1 below the best earlier epoch larger than this is a collapse
NOT_FINISHED = (STILL_RISING, FALLING, CHECK_OFF, TOO_SHORT, FLAT)  # the verdicts a reading names


def quarter_epoch(epochs: int) -> int:
    """The epoch that ends the first three quarters of an ``epochs``-epoch run: 0.75·E rounded half
    up, at least 1."""
    return max(1, math.floor(0.75 * epochs + 0.5))


def last_quarter_gain(history: Sequence[Mapping[str, Any]]) -> Optional[float]:
    """Test top-1 at the last epoch minus at :func:`quarter_epoch` (pp); None for a run of 1 or 2
    epochs, where that epoch is the last one and the run has no last quarter to measure."""
    start = quarter_epoch(len(history))
    if start >= len(history):
        return None
    return history[-1]["test_top1"] - history[start - 1]["test_top1"]


def still_rising(gain: float, threshold: float = RISING_PP) -> bool:
    """Whether a last-quarter gain (pp) says the run is still learning (more than ``threshold``)."""
    return gain > threshold


def worst_fall(history: Sequence[Mapping[str, Any]]) -> Tuple[float, Optional[int]]:
    """The largest drop of test top-1 below the best of the earlier epochs (pp), and the epoch
    (1-based) where it happened (0.0 and None for a run that never fell)."""
    best, fall, at = history[0]["test_top1"], 0.0, None
    for epoch, row in enumerate(history[1:], 2):
        if best - row["test_top1"] > fall:
            fall, at = best - row["test_top1"], epoch
        best = max(best, row["test_top1"])
    return fall, at


CHECK_FACTOR = 1.5  # a check run trains the same config for this many times the epochs (rounded up)


def check_config(config: TrainConfig) -> TrainConfig:
    """A run's check run: the same config at :data:`CHECK_FACTOR` times its epochs, rounded up."""
    return dataclasses.replace(config, epochs=math.ceil(CHECK_FACTOR * config.epochs))


def fall_loss(history: Sequence[Mapping[str, Any]], epoch: Optional[int]) -> Optional[float]:
    """Over the span a fall is measured (:func:`worst_fall`: from the best earlier epoch to the
    1-based ``epoch``), the change of the training loss: negative where the network went on
    fitting its training images while its test accuracy fell; None without a fall (``epoch`` None
    or 1)."""
    if epoch is None or epoch < 2:
        return None
    tops = [row["test_top1"] for row in history[:epoch - 1]]
    best = tops.index(max(tops))  # the first epoch at the best before the fall (0-based)
    return history[epoch - 1]["train_loss"] - history[best]["train_loss"]


def fall_columns(history: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """A run's :data:`WORST_FALL`, :data:`FALL_EPOCH` and :data:`FALL_LOSS`, rounded for a table."""
    fall, epoch = worst_fall(history)
    loss = fall_loss(history, epoch)
    return {WORST_FALL: round(fall, 2), FALL_EPOCH: epoch,
            FALL_LOSS: None if loss is None else round(loss, 3)}


def check_delta(mains: Sequence[Mapping[str, Any]], check: Mapping[str, Any]) -> float:
    """A check run's final top-1 minus the mean of the main runs' (pp)."""
    return top1(check) - mean_std([top1(r) for r in mains])[0]


def shown_finished(mains: Sequence[Mapping[str, Any]], check: Optional[Mapping[str, Any]]
                   ) -> Optional[bool]:
    """Whether a config is shown finished: its check run (same config, 1.5× the epochs) ends within
    max(std of the main runs, 0.3 pp) of their mean top-1; None without a check run."""
    if check is None:
        return None
    std = mean_std([top1(r) for r in mains])[1]
    return abs(check_delta(mains, check)) <= max(std or 0.0, RISING_PP)


def convergence_columns(runs: Sequence[Mapping[str, Any]], check: Optional[Mapping[str, Any]] = None,
                        with_check: bool = False, scale_gain: Optional[float] = None) -> Dict[str, Any]:
    """A table row's convergence columns over a config's seeds: the mean last-quarter gain, the check
    run's Δ (with ``with_check``, None where there is none), the worst seed's fall below its best
    earlier epoch (:func:`worst_fall`) with its training loss change (:func:`fall_loss`) and the
    verdict (:data:`CONVERGENCE`): the check run decides where there is one; else, at a scale
    chapter 03 showed finished, :data:`SCALE_OK` for a gain no larger than ``scale_gain`` (the
    largest of the checked runs'); else the gain: beyond ±0.3 pp the run is still rising or falling
    (a collapse is no finish either), and a 1- or 2-epoch run is too short to tell."""
    gains = [last_quarter_gain(r["history"]) for r in runs]
    gain = None if None in gains or not gains else statistics.fmean(gains)
    out: Dict[str, Any] = {GAIN: None if gain is None else round(gain, 2)}
    if with_check or check is not None:
        out[CHECK] = None if check is None else round(check_delta(runs, check), 2)
    out.update(max((fall_columns(r["history"]) for r in runs), key=lambda f: f[WORST_FALL],
                   default={WORST_FALL: 0.0, FALL_EPOCH: None, FALL_LOSS: None}))
    if check is not None:
        out[CONVERGENCE] = CHECK_OK if shown_finished(runs, check) else CHECK_OFF
    else:
        out[CONVERGENCE] = (TOO_SHORT if gain is None else FALLING if gain < -RISING_PP else
                            SCALE_OK if scale_gain is not None and gain <= scale_gain else
                            STILL_RISING if still_rising(gain) else FLAT)
    return out


def not_finished(rows: Sequence[Mapping[str, Any]], name: str) -> Dict[str, List[str]]:
    """The rows not shown finished, by their :data:`CONVERGENCE` verdict: each row's ``name`` column
    (rows without the column are left out)."""
    out: Dict[str, List[str]] = {}
    for r in rows:
        if r.get(CONVERGENCE) in NOT_FINISHED:
            out.setdefault(r[CONVERGENCE], []).append(str(r[name]))
    return out


def provisional(rows: Sequence[Mapping[str, Any]], name: str) -> str:
    """A sentence naming the rows not shown finished, e.g. 'Not shown finished — still rising in the
    last quarter of the run (gain > 0.3 pp): FMDConv, ODConv; their ranking is provisional.' ('' where
    no row is named)."""
    what = {STILL_RISING: f"still rising in the last quarter of the run (gain > {RISING_PP:g} pp)",
            FALLING: f"falling in the last quarter of the run (drop > {RISING_PP:g} pp)",
            CHECK_OFF: f"check run ({CHECK_FACTOR:g}× the epochs) beyond max(seed std, {RISING_PP:g} pp) "
                       "of the mean",
            TOO_SHORT: "too short (1 or 2 epochs) to measure a last quarter",
            FLAT: f"flat last quarter (within ±{RISING_PP:g} pp) but no check run to show it finished"}
    found = not_finished(rows, name)
    if not found:
        return ""
    parts = [f"{what[v]}: {', '.join(names)}" for v, names in found.items()]
    joined = "; ".join(parts)
    return f"Not shown finished — {joined}; their ranking is provisional."


def stored_records(configs: Mapping[Any, TrainConfig], profile: str) -> Dict[Any, Record]:
    """The finished records of ``configs`` under the profile's runs folder (:func:`record_matches`);
    nothing is trained."""
    from .. import runs

    found = {k: runs.load_record(c.identity(), runs_root(profile)) for k, c in configs.items()}
    return {k: r for k, r in found.items() if r is not None and record_matches(r, configs[k])}


def record_matches(record: Mapping[str, Any], config: TrainConfig) -> bool:
    """Whether ``record`` is the finished run of ``config``: same key and one row per epoch."""
    return record["key"] == config.key() and len(record["history"]) == config.epochs


def collapsed(rows: Sequence[Mapping[str, Any]], name: str) -> str:
    """A sentence naming the rows whose worst fall (:data:`WORST_FALL`) exceeds :data:`COLLAPSE_PP`:
    they fell on the way, which a final number does not show where the run recovered; and, from
    :data:`FALL_LOSS`, over how many of those falls the training loss went down, and where it did, a
    pointer to chapter 04's BatchNorm probe of such a fall ('' where none fell)."""
    fell = [r for r in rows if (r.get(WORST_FALL) or 0.0) > COLLAPSE_PP]
    if not fell:
        return ""

    def loss(r: Mapping[str, Any]) -> str:
        change = r.get(FALL_LOSS)
        return "" if change is None else f" (training loss {change:+.3f} over the fall)"

    named = ", ".join(f"{r[name]} by {r[WORST_FALL]:.2f} pp at epoch {r[FALL_EPOCH]}{loss(r)}" for r in fell)
    text = (f"Collapsed on the way (test top-1 more than {COLLAPSE_PP:g} pp below its best earlier "
            f"epoch; where the run recovered, its final number does not show it): {named}.")
    known = [r for r in fell if r.get(FALL_LOSS) is not None]
    still = [r for r in known if r[FALL_LOSS] < 0]
    if still:
        text += (f" Over {len(still)} of these {len(known)} falls the training loss went down (from the "
                 "best epoch before to the bottom): those networks went on fitting their training images "
                 "while their test accuracy fell. Chapter 04 (section 7) tests, on the worst fall of its "
                 "reference run, whether a fall like this is the network or BatchNorm's running statistics.")
    elif known:
        text += " Over each of these falls the training loss rose too."
    return text


def provisional_bullet(rows: Sequence[Mapping[str, Any]], name: str) -> List[str]:
    """:func:`provisional` and :func:`collapsed` as Markdown bullets (none where both are empty)."""
    return [f"* {s}" for s in (provisional(rows, name), collapsed(rows, name)) if s]


# The convergence columns, for a notebook's list of printed columns (CHECK: chapter 03 with check runs)
CONVERGENCE_COLUMNS = [GAIN, CHECK, WORST_FALL, FALL_EPOCH, FALL_LOSS, CONVERGENCE]
