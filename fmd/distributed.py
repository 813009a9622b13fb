"""One process per device under ``torchrun``: the process group, this process's rank and device, and
sums over ranks. A single process (the default) needs none of it: every helper is then a no-op.

``torchrun --nproc_per_node N -m fmd.train ...`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``;
:func:`setup` joins the process group (NCCL on GPUs, Gloo on CPUs) from them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Sequence

import torch
import torch.distributed as dist


class LauncherGone(RuntimeError):
    """torchrun's agent died (``kill -9``); its workers stop together instead of running on."""


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = "none"
    device: torch.device = torch.device("cpu")
    launcher: int = 0  # the pid of torchrun's agent, this process's parent (0: no launcher)

    @property
    def main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0

    def orphaned(self) -> int:
        """1 where the launcher is gone (its workers run on in sessions of their own), else 0."""
        return int(self.launcher != 0 and os.getppid() != self.launcher)

    def sum(self, values: Sequence[float]) -> List[float]:
        """``values`` summed over every rank (as float64)."""
        if self.world_size == 1:
            return [float(v) for v in values]
        on = self.device if self.backend == "nccl" else torch.device("cpu")
        total = torch.tensor([float(v) for v in values], dtype=torch.float64, device=on)
        dist.all_reduce(total)
        return total.tolist()

    def max(self, value: float) -> float:
        """The largest ``value`` of any rank."""
        if self.world_size == 1:
            return value
        on = self.device if self.backend == "nccl" else torch.device("cpu")
        top = torch.tensor([float(value)], dtype=torch.float64, device=on)
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
        return float(top.item())

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order."""
        if self.world_size == 1:
            return [obj]
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world_size > 1:
            dist.barrier()


SINGLE = Context()  # a process on its own


def launched_world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 outside torchrun)."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {text!r}") from None


def setup(world_size: int, device: torch.device) -> Context:
    """Join the process group of a ``world_size``-process run on ``device`` (its type: NCCL for
    CUDA, Gloo otherwise); one process: a context with nothing to join."""
    launched = launched_world_size()
    if launched != world_size:
        raise ValueError(
            f"world_size is {world_size} but {launched} process(es) were started; train on N devices "
            "with torchrun --nproc_per_node N -m fmd.train ... (world_size follows WORLD_SIZE)")
    if world_size == 1:
        return Context(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(dist.get_rank(), local_rank, world_size, dist.get_backend(), device, os.getppid())


def teardown(context: Context) -> None:
    """Leave the process group :func:`setup` joined."""
    if context.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
