"""BatchNorm's running statistics: re-estimating them, and probing whether a fall is theirs.

A BatchNorm layer normalises a training batch with that batch's own statistics and keeps running
averages (momentum 0.1) for evaluation. While the network changes fast, as in the last epoch of the
temperature anneal where the gates' temperature falls to 1, those averages mix activations of
networks that no longer exist, and a test accuracy measured with them can fall although the
network goes on fitting its training images.

:func:`reestimate_bn` recomputes the statistics at fixed weights, with torch's own
:func:`torch.optim.swa_utils.update_bn` (a cumulative average over one pass of the training images).
:func:`probe_fall` retrains a run to the epochs around a fall and evaluates each of those states
twice, as trained and after :func:`reestimate_bn`. The probe is kept beside the run's record
(:data:`PROBE_FILE`): the retraining is not needed again, and an interrupted probe is finished by
the same call.
"""
from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from . import runs
from .attention import iter_tempered
from .checkpoints import CheckpointError, checkpoint_path, load_checkpoint
from .config import TrainConfig
from .data import eval_loader
from .loop import build_model, evaluate, resolve_device, set_strategies
from .provenance import describe_device, git_state, library_versions
from .timing import torch_threads
from .train import train

PathLike = Union[str, Path]
PROBE_FILE = "bn_probe.json"   # beside the run's record.json
_SCRATCH = "checkpoints/bn-probe"  # the retraining's checkpoint and finished rows (not committed)


def reestimate_bn(model: nn.Module, loader: Any) -> nn.Module:
    """A copy of ``model`` (eval mode) whose BatchNorm running statistics are the average over one
    pass of ``loader`` at the model's fixed weights; ``model`` itself is not changed."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        update_bn(loader, model)
    return model.eval()


def probe_path(config: TrainConfig, runs_root: Optional[PathLike] = None) -> Path:
    """Where the probe of run ``config`` is kept: beside its record."""
    return runs.run_dir(config.identity(), runs_root) / PROBE_FILE


def load_probe(config: TrainConfig, runs_root: Optional[PathLike] = None) -> Optional[Dict[str, Any]]:
    """The stored probe of run ``config``, or None."""
    path = probe_path(config, runs_root)
    return json.loads(path.read_text()) if path.is_file() else None


def probe_fall(config: TrainConfig, record: Mapping[str, Any], epochs: Sequence[int],
               runs_root: Optional[PathLike] = None, *, progress: bool = False) -> Dict[str, Any]:
    """Retrain run ``config`` (whose ``record`` is stored) to each of ``epochs`` and evaluate every
    state on the test set as trained and after :func:`reestimate_bn` on the training images.

    Returns the stored probe where there is one for these epochs of this record; a probe of other
    epochs, or of an older record of the run, is made again. The retraining follows the run's own
    config and seed, and computes with the engine strategies its record names (``tune`` would time
    them again and may pick others, equal to about 1e-6 but not bit for bit: around the collapse of
    chapter 08's FMDConv ResNet-50, two retrainings that tuned anew differed by up to 40 pp of test
    top-1 at one epoch). A row's "trained" number is
    then the record's (kept beside it) where the record was made on this CPU at a commit that trains
    alike, and near it otherwise. Each row keeps the strategies the retraining computed with, and
    whether they are the run's (``"strategies as run"``).
    """
    epochs = sorted(set(int(e) for e in epochs))
    if not epochs or epochs[0] < 1 or epochs[-1] > config.epochs:
        raise ValueError(f"epochs to probe must lie in 1..{config.epochs} (the run's epochs), got {epochs}")
    stored = load_probe(config, runs_root)
    if stored is not None:
        if stored["epochs"] == epochs and stored.get("record_created") == record.get("created"):
            return stored
        print(f"[train] the stored BatchNorm probe of {stored['run']} is of epochs {stored['epochs']} of "
              f"the record created {stored.get('record_created')}; probing epochs {epochs} of the record "
              f"created {record.get('created')}", flush=True)
    scratch = runs.run_dir(config.identity(), runs_root) / _SCRATCH
    device = resolve_device(config.device)
    start = time.perf_counter()
    with torch_threads(config.threads) as threads:  # evaluated on the run's threads, as it was trained
        measured = _probe_epochs(config, record, epochs, scratch, device, progress)
    history = record["history"]
    wanted = _strategies(record)
    rows = [{"epoch": r["epoch"], "record top-1": history[r["epoch"] - 1]["test_top1"], **r,
             **({"strategies as run": r["strategies"] == wanted} if "strategies" in r and wanted else {})}
            for r in measured]  # a row kept by an older probe lacks them
    git = git_state()
    probe = {"run": runs.run_name(config.identity()), "key": config.key(), "epochs": epochs,
             "record_created": record.get("created"), "rows": rows,
             "method": "torch.optim.swa_utils.update_bn over one pass of the training images (test "
             "transform, no shuffling), the state's temperatures in place",
             "git_commit": git["commit"], "git_dirty": git["dirty"], "versions": library_versions(),
             "device": describe_device(device), "threads": threads,
             "probe_seconds": round(time.perf_counter() - start, 1),
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    runs.write_json(probe_path(config, runs_root), probe)
    shutil.rmtree(scratch)
    return probe


def _probe_epochs(config: TrainConfig, record: Mapping[str, Any], epochs: Sequence[int], scratch: Path,
                  device: torch.device, progress: bool) -> List[Dict[str, Any]]:
    """The measured rows, one per epoch; each is kept in ``scratch`` as soon as it is measured."""
    rows_path = scratch / "rows.json"
    done: Dict[int, Dict[str, Any]] = ({r["epoch"]: r for r in json.loads(rows_path.read_text())}
                                       if rows_path.is_file() else {})
    ckpt = checkpoint_path(config, scratch)
    wanted = _strategies(record)
    test, train_images = eval_loader(config, device=device), eval_loader(config, "train", device=device)
    for epoch in epochs:
        if epoch in done:
            continue
        try:
            state = load_checkpoint(ckpt, config) if ckpt.is_file() else None
        except CheckpointError as error:
            raise CheckpointError(f"{error}; or delete {scratch} to probe again from the start") from None
        reached = state["epoch"] if state else 0
        # A state past this epoch (its row lost), or one that computed with other strategies than the
        # record (an interrupted probe made before they were passed on), is trained again from the start.
        again = reached > epoch or bool(state and wanted and state.get("strategies") != wanted)
        if reached != epoch or again:
            train(config, scratch, resume=not again, force=again, progress=progress, verbose=True,
                  stop_after=epoch - (0 if again else reached), strategies=wanted)
        state = load_checkpoint(ckpt, config)
        model = build_model(config, record["num_classes"], record["input_size"][1])
        model.load_state_dict(state["model"])
        set_strategies(model, state.get("strategies", {}))  # evaluated as the retraining computed
        done[epoch] = dict(_measure(epoch, model.to(device).eval(), test, train_images),
                           strategies=state.get("strategies", {}))
        runs.write_json(rows_path, [done[e] for e in sorted(done)])
    return [done[e] for e in epochs]


def _strategies(record: Mapping[str, Any]) -> Optional[Dict[str, str]]:
    """The engine strategies a record names (None for older records, and compiled runs, which name
    none)."""
    return record.get("strategies") or None


def _measure(epoch: int, model: nn.Module, test: Any, train_images: Any) -> Dict[str, Any]:
    trained = evaluate(model, test)
    fixed = evaluate(reestimate_bn(model, train_images), test)
    temperatures: Dict[str, List[float]] = {}
    for branch in iter_tempered(model):
        temperatures.setdefault(branch.temperature_role, []).append(round(float(branch.temperature), 3))
    return {"epoch": epoch,
            "trained top-1": round(trained["top1"], 2), "trained loss": round(trained["loss"], 3),
            "re-estimated top-1": round(fixed["top1"], 2), "re-estimated loss": round(fixed["loss"], 3),
            "temperatures": {role: sorted(set(values)) for role, values in sorted(temperatures.items())}}


def change(row: Mapping[str, Any]) -> float:
    """What re-estimating did to a probe row's test top-1 (pp)."""
    return row["re-estimated top-1"] - row["trained top-1"]


def probe_rows(probe: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The probe's rows for a table: the change re-estimating made (pp), the temperatures as text."""
    return [dict(r, **{"change (pp)": round(change(r), 2),
                       "temperatures": temperature_text(r["temperatures"])}) for r in probe["rows"]]


def values_text(values: Sequence[float]) -> str:
    """One role's temperatures in a row, as text: '1', or '10.667/34' where the layers differ."""
    return "/".join(f"{t:g}" for t in values)


def temperature_text(temperatures: Mapping[str, Sequence[float]]) -> str:
    """A row's temperatures by role, as text: 'gate 1, kernel 34'."""
    return ", ".join(f"{role} {values_text(values)}" for role, values in temperatures.items())
