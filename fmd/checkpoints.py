"""Checkpoints and stored weights of a run: where they live, atomic writes, the checks that a file
belongs to the run that reads it, and the random state a resumed run continues from."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import Tensor

from . import runs
from .config import TrainConfig
from .provenance import atomic_write_bytes

PathLike = Union[str, Path]
CHECKPOINT_FORMAT = 1
WEIGHTS_NAME = "weights.fp16.pt"  # a finished run's weights in half precision, small enough to commit


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: unreadable, from another configuration, or in the way."""


def checkpoint_path(config: TrainConfig, runs_root: Optional[PathLike] = None) -> Path:
    """Where the run's latest checkpoint lives."""
    return runs.run_dir(config.identity(), runs_root) / "checkpoints" / "last.pt"


def weights_path(config: TrainConfig, runs_root: Optional[PathLike] = None) -> Path:
    """Where the run's half-precision weights (:func:`save_weights`) live, beside its record."""
    return runs.run_dir(config.identity(), runs_root) / WEIGHTS_NAME


def save_checkpoint(path: PathLike, state: Dict[str, Any]) -> None:
    """Write a checkpoint atomically (a crash leaves the previous one intact)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


_CHECKPOINT_KEYS = ("format", "key", "config", "epoch", "model", "optimizer", "scheduler",
                    "loader", "rng", "history", "elapsed_s", "sessions", "git")


def load_checkpoint(path: PathLike, config: TrainConfig) -> Dict[str, Any]:
    """Read a checkpoint and check that ``config`` wrote it; :class:`CheckpointError` otherwise."""
    path = Path(path)
    hint = "delete it or pass force=True (--force) to start the run over"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable "
                              f"({type(error).__name__}: {_first_line(error)}); {hint}") from error
    if not isinstance(state, dict) or any(k not in state for k in _CHECKPOINT_KEYS):
        raise CheckpointError(f"checkpoint {path} is incomplete (not written by fmd.train "
                              f"format {CHECKPOINT_FORMAT}); {hint}")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']}, this code reads "
                              f"format {CHECKPOINT_FORMAT}; {hint}")
    if state["key"] != config.key():
        theirs = state["config"] if isinstance(state["config"], dict) else {}
        ours = config.to_dict()
        differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise CheckpointError(f"checkpoint {path} belongs to a different configuration (key "
                              f"{state['key']}, this run {config.key()}; fields that differ: "
                              f"{differ}); {hint}")
    if not 0 <= state["epoch"] <= config.epochs:
        raise CheckpointError(f"checkpoint {path} is at epoch {state['epoch']}, outside this "
                              f"run's {config.epochs} epochs; {hint}")
    return state


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def _read_checkpoint(path: Path, config: TrainConfig, strict: bool) -> Optional[Dict[str, Any]]:
    """The run's checkpoint, or None where there is none (or, unless ``strict``, none usable)."""
    if not path.exists():
        return None
    try:
        return load_checkpoint(path, config)
    except CheckpointError:
        if strict:
            raise
        return None


def _rng_state() -> Dict[str, Any]:
    state: Dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_weights(config: TrainConfig, runs_root: Optional[PathLike] = None) -> Path:
    """Store a finished run's weights (and temperature buffers) in half precision beside its
    record, so that a fresh clone can load the model without training it again."""
    state = load_checkpoint(checkpoint_path(config, runs_root), config)
    if state["epoch"] != config.epochs:
        raise CheckpointError(f"run {runs.run_name(config.identity())} is unfinished "
                              f"(epoch {state['epoch']} of {config.epochs}); finish it first")
    half = {name: t.half() if t.is_floating_point() else t for name, t in state["model"].items()}
    buffer = io.BytesIO()
    torch.save({"key": config.key(), "model": half}, buffer)
    path = weights_path(config, runs_root)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _stored_weights(config: TrainConfig, runs_root: Optional[PathLike]) -> Optional[Dict[str, Tensor]]:
    """The half-precision weights :func:`save_weights` stored for this run, as float32, or None."""
    path = weights_path(config, runs_root)
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(f"stored weights {path} are corrupt or unreadable ({type(error).__name__}: "
                              f"{_first_line(error)}); delete them and the run is trained again") from error
    if not isinstance(stored, dict) or "model" not in stored:
        raise CheckpointError(f"stored weights {path} were not written by fmd.train.save_weights (no "
                              "'key' and 'model'); delete them and the run is trained again")
    if stored.get("key") != config.key():
        raise CheckpointError(f"{path} belongs to another run (key {stored.get('key')}, expected "
                              f"{config.key()}); delete it")
    return {name: t.float() if t.is_floating_point() else t for name, t in stored["model"].items()}
