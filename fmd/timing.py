"""Wall-clock timing, one way for every speed number: interleaved rounds, per-round medians, and the
median and range of those medians.

The functions timed take turns, round after round (:func:`timed_rounds`), so a change of load on a
shared machine hits every one alike; a function's time is the median of its round medians
(:class:`RoundTimes`). :func:`interleaved_times` times functions of this process;
:mod:`fmd.bench` gives :func:`timed_rounds` worker processes instead.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, Hashable, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar

import torch
from torch import Tensor, nn

from .precision import autocast, sync

K = TypeVar("K", bound=Hashable)
Timer = Callable[[int], Sequence[float]]  # runs n times, returns the seconds of each run


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[int]:
    """Run the block on ``threads`` of torch's intra-op threads (None: leave them), restoring the
    previous count afterwards; yields the count in force. Training, timing and the BatchNorm probe
    all set a run's threads this one way."""
    previous = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def time_runs(fn: Callable[[], object], repeats: int,
              synchronize: Optional[Callable[[], None]] = None) -> List[float]:
    """Seconds taken by each of ``repeats`` runs of ``fn`` (``synchronize`` after each if given)."""
    wait = synchronize or (lambda: None)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        wait()
        times.append(time.perf_counter() - start)
    return times


def summarize_times(times: Sequence[float]) -> Dict[str, float]:
    """Median, 10th and 90th percentile of run times (seconds), and how many there were."""
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"median": statistics.median(ordered), "p10": pick(0.1), "p90": pick(0.9),
            "repeats": len(ordered)}


@dataclass(frozen=True)
class RoundTimes:
    """Seconds of each run of one function, round by round, and what is reported of them."""

    rounds: Tuple[Tuple[float, ...], ...]

    @property
    def medians(self) -> List[float]:
        """The median of each round."""
        return [statistics.median(r) for r in self.rounds]

    @property
    def median(self) -> float:
        """The function's time: the median of its round medians."""
        return statistics.median(self.medians)

    @property
    def low(self) -> float:
        """The fastest round's median."""
        return min(self.medians)

    @property
    def high(self) -> float:
        """The slowest round's median."""
        return max(self.medians)

    @property
    def times(self) -> List[float]:
        """Every run, round after round."""
        return [t for r in self.rounds for t in r]


def timed_rounds(timers: Mapping[K, Timer], *, rounds: int, repeats: int,
                 rotate: bool = False) -> Dict[K, RoundTimes]:
    """``rounds`` rounds in which each timer in turn times ``repeats`` runs (in a rotated order each
    round with ``rotate``); per timer, its :class:`RoundTimes`."""
    if repeats < 1 or rounds < 1:
        raise ValueError(f"need repeats >= 1 and rounds >= 1, got {repeats}, {rounds}")
    names = list(timers)
    found: Dict[K, List[Tuple[float, ...]]] = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(names) if rotate and names else 0
        for name in names[shift:] + names[:shift]:
            found[name].append(tuple(timers[name](repeats)))
    return {name: RoundTimes(tuple(found[name])) for name in names}


def interleaved_times(fns: Mapping[K, Callable[[], object]], *, rounds: int = 1, repeats: int = 20,
                      warmup: int = 3, threads: Optional[int] = None, rotate: bool = False,
                      synchronize: Optional[Callable[[], None]] = None) -> Dict[K, RoundTimes]:
    """:func:`timed_rounds` of functions run in this process, each first run ``warmup`` times
    untimed; ``threads`` sets torch's threads for the measurement, restored afterwards."""
    if warmup < 0:
        raise ValueError(f"need warmup >= 0, got {warmup}")
    with torch_threads(threads):
        for fn in fns.values():
            time_runs(fn, warmup, synchronize)
        return timed_rounds({name: partial(time_runs, fn, synchronize=synchronize)
                             for name, fn in fns.items()}, rounds=rounds, repeats=repeats,
                            rotate=rotate)


def median_time(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 20,
                threads: Optional[int] = None,
                synchronize: Optional[Callable[[], None]] = None) -> Dict[str, float]:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` runs; seconds: median, p10, p90."""
    times = interleaved_times({0: fn}, warmup=warmup, repeats=repeats, threads=threads,
                              synchronize=synchronize)
    return summarize_times(times[0].times)


def sync_for(device: torch.device) -> Optional[Callable[[], None]]:
    """What waits for the device's queued work before a clock is read (None on the CPU)."""
    return partial(sync, device) if device.type == "cuda" else None


def inference_step(model: nn.Module, input_size: Sequence[int], x: Optional[Tensor] = None,
                   amp: str = "none") -> Callable[[], Tensor]:
    """One eval-mode forward of ``x`` (default: a random batch of ``input_size``), as a function
    to time that returns the output; under autocast to ``amp`` ("bf16", "fp16" or "none": fp32)."""
    p = next(model.parameters())
    x = torch.randn(*input_size, dtype=p.dtype, device=p.device) if x is None else x
    model.eval()

    def step() -> Tensor:
        with torch.inference_mode(), autocast(amp, p.device):
            return model(x)

    return step


def train_step(model: nn.Module, input_size: Sequence[int], num_classes: int,
               amp: str = "none") -> Callable[[], Tensor]:
    """One SGD training step (forward, cross-entropy, backward, update) on a random batch, the
    forward under autocast to ``amp`` ("bf16", "fp16" or "none"); the function returns the loss."""
    p = next(model.parameters())
    x = torch.randn(*input_size, dtype=p.dtype, device=p.device)
    y = torch.randint(0, num_classes, (input_size[0],), device=p.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()

    def step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast(amp, p.device):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def measure_latency(model: nn.Module, input_size: Sequence[int], *, warmup: int = 3,
                    repeats: int = 20, threads: Optional[int] = None) -> Dict[str, float]:
    """Inference time of one batch of ``input_size`` in eval mode (seconds, median of repeats)."""
    result = median_time(inference_step(model, input_size), warmup=warmup, repeats=repeats,
                         threads=threads, synchronize=sync_for(next(model.parameters()).device))
    result["images_per_s"] = input_size[0] / result["median"]
    return result
