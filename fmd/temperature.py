"""Temperature schedules for the attentions and ``set_temperature(model, ...)``.

Temperatures come in two roles: ``kernel`` (softmax attentions over kernels) and ``gate`` (sigmoid
attentions: input, output, spatial). A schedule maps training progress, measured in epochs
(fractional, so it can be applied per iteration), to a temperature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Union

from torch import nn

from .attention import (TEMPERATURE_ROLES, check_paper_kernel_temperature, check_temperature,
                        iter_tempered, steps_down_to_one)


@dataclass(frozen=True)
class Constant:
    """A temperature that never changes (the official FMDConv kernel temperature, 34)."""

    value: float

    def __post_init__(self) -> None:
        check_temperature(self.value)

    def __call__(self, epoch: float) -> float:
        return self.value


@dataclass(frozen=True)
class LinearAnneal:
    """Linear from ``start`` to ``end`` over ``epochs`` (per iteration), then ``end``.

    ODConv and the official FMDConv gates: 30 → 1 over the first 10 epochs. The official
    ``get_temperature`` is the same line over iterations; its training loop sets
    ``get_temperature(i + 1)`` before step i, one iteration ahead (:data:`TEMPERATURE_CLOCKS`).
    """

    start: float = 30.0
    end: float = 1.0
    epochs: float = 10.0
    per_iteration = True  # a class constant: the official clock reads it one iteration ahead

    def __post_init__(self) -> None:
        check_temperature(self.start)
        check_temperature(self.end)
        if not self.epochs > 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")

    def __call__(self, epoch: float) -> float:
        fraction = min(max(epoch / self.epochs, 0.0), 1.0)
        return self.start + (self.end - self.start) * fraction


@dataclass(frozen=True)
class StepDecay:
    """Down by ``step`` every ``every`` epochs from ``start`` to 1 (unofficial DynamicConv code: 34 → 1 by 3).

    ``start`` must be ≡ 1 (mod ``step``) so the schedule lands on 1 exactly.
    """

    start: float = 34.0
    step: float = 3.0
    every: float = 1.0

    def __post_init__(self) -> None:
        check_temperature(self.start)
        if not self.step > 0 or not self.every > 0:
            raise ValueError(f"step and every must be positive, got {self.step}, {self.every}")
        if not steps_down_to_one(self.start, self.step):
            raise ValueError(f"start must be ≡ 1 (mod {self.step:g}) to reach 1, got {self.start:g}")

    def __call__(self, epoch: float) -> float:
        return max(1.0, self.start - self.step * math.floor(max(epoch, 0.0) / self.every + 1e-9))


Schedule = Union[Constant, LinearAnneal, StepDecay]


def set_temperature(model: nn.Module, value: Optional[float] = None, *,
                    kernel: Optional[float] = None, gate: Optional[float] = None) -> int:
    """Set the temperatures of every attention in ``model``; returns how many were set.

    ``value`` sets both roles; ``kernel``/``gate`` set one role each and take precedence.
    """
    kernel = value if kernel is None else kernel
    gate = value if gate is None else gate
    count = 0
    for branch in iter_tempered(model):
        target = kernel if branch.temperature_role == "kernel" else gate
        if target is not None:
            branch.set_temperature(target)
            count += 1
    return count


def dyconv_schedules(anneal_epochs: float = 10.0) -> Dict[str, Schedule]:
    """DynamicConv's paper: the kernel temperature 30 → 1 over ``anneal_epochs``."""
    return {"kernel": LinearAnneal(30.0, 1.0, anneal_epochs)}


def odconv_schedules(anneal_epochs: float = 10.0) -> Dict[str, Schedule]:
    """ODConv: one temperature for all four heads, 30 → 1 over ``anneal_epochs``."""
    anneal = LinearAnneal(30.0, 1.0, anneal_epochs)
    return {"kernel": anneal, "gate": anneal}


def fmdconv_schedules(preset: str = "official", kernel_temperature: float = 34.0,
                      gate_temperature: float = 30.0, anneal_epochs: float = 10.0,
                      ) -> Dict[str, Schedule]:
    """FMDConv's schedules per role, as its preset says.

    * ``official`` — T_k constant at ``kernel_temperature`` (34), T_io ``gate_temperature`` (30) → 1
      over ``anneal_epochs``;
    * ``paper`` — T_k degrades by 3 per epoch from ``kernel_temperature`` to 1 (the epoch clock
      scaled by ``anneal_epochs / 10``, so a short run compresses it too), T_io as above.
    """
    gates = LinearAnneal(gate_temperature, 1.0, anneal_epochs)
    if preset == "official":
        return {"kernel": Constant(kernel_temperature), "gate": gates}
    if preset == "paper":
        check_paper_kernel_temperature(kernel_temperature)  # named as the caller gave it
        return {"kernel": StepDecay(kernel_temperature, 3.0, anneal_epochs / 10.0), "gate": gates}
    raise ValueError(f"preset must be 'official' or 'paper', got {preset!r}")


# When a training loop reads a per-iteration schedule (LinearAnneal) before step i of epoch e:
# "official" at e + (i + 1)/iters, as the official ODConv/FMDConv main.py sets
# get_temperature(i + 1, e, iters) before step i, so an evaluation after the epoch runs at the
# value of its end; "fmd" at e + i/iters, one iteration behind, as the records trained before the
# clock existed. Per-epoch schedules (StepDecay, Constant) read e + i/iters under both.
TEMPERATURE_CLOCKS = ("official", "fmd")


def apply_schedules(model: nn.Module, schedules: Dict[str, Schedule], epoch: float,
                    ahead: float = 0.0) -> Dict[str, float]:
    """Set each role's temperature for training progress ``epoch`` (a per-iteration schedule
    reads it ``ahead`` epochs further along); returns the values set."""
    unknown = set(schedules) - set(TEMPERATURE_ROLES)
    if unknown:
        raise ValueError(f"schedule roles must be among {TEMPERATURE_ROLES}, got {sorted(unknown)}")
    values = {role: schedule(epoch + (ahead if getattr(schedule, "per_iteration", False) else 0.0))
              for role, schedule in schedules.items()}
    if values:
        set_temperature(model, kernel=values.get("kernel"), gate=values.get("gate"))
    return values
