"""What every chapter uses, whichever chapter it is: runs trained or fetched under a profile, the
text of a temperature schedule, batch-1 latencies timed in interleaved rounds, and the seed
statistics and number formats the readings are written with. A chapter imports these from here,
never from another chapter."""
from __future__ import annotations

import statistics
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

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
