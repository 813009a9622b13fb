"""A training run from start to record: fetch a finished one, resume an interrupted one, or train.

``train(config)`` trains one ResNet on one dataset and returns its run record (see :mod:`fmd.runs`).
A run is identified by its configuration: asking again for a finished run returns the stored record
at no cost, unless ``force=True``. Every epoch ends with an atomic checkpoint, so an interrupted
run continues with ``resume=True`` and ends with the same weights and metrics, on the CPU, as an
uninterrupted one. The pieces live beside it: the config and recipes in :mod:`fmd.config`, the epoch
and evaluation in :mod:`fmd.loop`, checkpoints and weights in :mod:`fmd.checkpoints`, the record in
:mod:`fmd.record`; this module re-exports the names a user of ``fmd.train`` reaches for.

Command line: ``python -m fmd.train --recipe quick --conv fmdconv`` (``--help`` lists every knob).
"""
from __future__ import annotations

import argparse
import contextvars
import dataclasses
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import torch
from torch import nn

from . import cli, distributed, runs
from .checkpoints import (CHECKPOINT_FORMAT, CheckpointError, _read_checkpoint, _rng_state,
                          _set_rng_state, _stored_weights, checkpoint_path, load_checkpoint,
                          save_checkpoint, save_weights, weights_path)
from .config import RECIPES, TrainConfig, field_choices, make_config
from .data import BatchLoader, config_loaders, get_datasets
from .loop import (NonFiniteLossError, build_model, evaluate, lr_factor, resolve_device,
                   set_strategies, train_epoch, used_strategies)
from .precision import to_channels_last
from .provenance import git_state
from .record import RunLog, make_record, measure_kernel_entropy
from .timing import torch_threads

__all__ = ["TrainConfig", "make_config", "RECIPES", "train", "train_all", "load_trained",
           "CheckpointError", "NonFiniteLossError", "checkpoint_path", "weights_path", "save_weights",
           "load_checkpoint", "build_model", "evaluate", "train_epoch", "lr_factor",
           "measure_kernel_entropy", "PROGRESS_TAG", "main"]

PathLike = Union[str, Path]
Name = TypeVar("Name", bound=Hashable)
# Every progress line starts with this tag ("[train]", or "[run i/n]" inside train_all), which is
# how fmd.reproduce picks the training lines out of a notebook's output for its terminal.
PROGRESS_TAG = contextvars.ContextVar("PROGRESS_TAG", default="[train]")


def train(config: TrainConfig, runs_root: Optional[PathLike] = None, *,
          data_root: Optional[PathLike] = None, force: bool = False, resume: bool = False,
          progress: bool = True, verbose: Optional[bool] = None, download: bool = False,
          stop_after: Optional[int] = None, workers: Optional[int] = None,
          strategies: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, Any]]:
    """Train (or fetch) the run ``config`` describes and return its record.

    * A finished run's stored record is returned without training, unless ``force``.
    * An unfinished run's checkpoint is continued with ``resume``; without ``resume`` it is an
      error (so no work is silently thrown away), with ``force`` it is started over.
    * ``stop_after`` ends this call after that many epochs (checkpointed; ``None`` is returned);
      a later call with ``resume=True`` continues.
    * A NaN or infinite loss raises :class:`NonFiniteLossError`; the last checkpoint stays.
    * ``progress`` shows tqdm bars; ``verbose`` (default: as ``progress``) prints a line per epoch.
    * ``workers``: DataLoader processes of an ImageNet-style folder (default: up to 8, one per CPU
      core of this process's share); the in-memory sets need none.
    * ``config.world_size`` > 1: one of the processes ``torchrun --nproc_per_node N`` started (one
      per device, DistributedDataParallel); only rank 0 writes the checkpoint and the record.
    * ``strategies`` (layer name → engine strategy, as a record's ``"strategies"``): a run started
      here computes with them instead of ``config.strategy``, so a retraining of a stored run
      computes as it did (``tune`` may pick others on another day, and a run that falls apart
      amplifies their 1e-6 differences); a resumed run keeps its checkpoint's.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (see make_config), got {type(config).__name__}")
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int)
                                   or stop_after < 1):
        raise ValueError(f"stop_after must be a positive integer or None, got {stop_after!r}")
    identity = config.identity()
    ckpt_path = checkpoint_path(config, runs_root)
    record = None if force else runs.load_record(identity, runs_root)
    # A checkpoint that cannot be used stops a run that has nothing else, unless it is forced to
    # start over; beside a finished record it is ignored (load_trained reports it if asked).
    state = _read_checkpoint(ckpt_path, config, strict=record is None and not force)
    unfinished = state is not None and state["epoch"] < config.epochs
    if record is not None and not unfinished:
        return record
    if state is not None and not resume:
        if not force:
            raise CheckpointError(f"an unfinished run of this config has a checkpoint at {ckpt_path} "
                                  f"(epoch {state['epoch']} of {config.epochs}); pass resume=True "
                                  "(--resume) to continue it or force=True (--force) to start over")
        state = None
    rank = int(os.environ.get("RANK", "0")) if config.world_size > 1 else 0
    if rank == 0:
        cli.check_writable(ckpt_path.parent)  # now, not after an epoch of training
        # A write killed midway leaves its temporary file (named as provenance.atomic_path names it).
        for stale in ckpt_path.parent.glob(f".{ckpt_path.stem}.*.tmp{ckpt_path.suffix}"):
            stale.unlink()
    device = resolve_device(config.device)
    if config.sync_bn and device.type != "cuda":
        raise ValueError(f"sync_bn needs CUDA devices (torch's SyncBatchNorm runs on GPU modules only), "
                         f"this run is on {device}")
    context = distributed.setup(config.world_size, device)
    if workers is None:
        workers = min(8, max(1, available_cores() // config.world_size))

    try:
        with torch_threads(config.threads):
            call = _Call(config, ckpt_path, runs_root, data_root, progress and context.main,
                         (progress if verbose is None else verbose) and context.main, download,
                         stop_after, context, workers, dict(strategies or {}))
            return _run(call, state)
    finally:
        distributed.teardown(context)


def train_all(configs: Mapping[Name, TrainConfig], runs_root: Optional[PathLike] = None, *,
              progress: bool = False, verbose: bool = True, checkpoints: bool = False,
              download: bool = False, jobs: int = 1) -> Dict[Name, Dict[str, Any]]:
    """Train (or fetch) every config; an interrupted run continues from its checkpoint.

    Configs that coincide are one run: the second is fetched from the cache at no cost. With
    ``checkpoints``, a finished run whose checkpoint is missing (a fresh clone keeps the records,
    not the weights) is trained again now, so that a later :func:`load_trained` does not replace
    a record that tables were already drawn from.

    ``jobs`` > 1 trains that many runs at once, each in its own process (a run without
    ``threads`` gets an equal share of the cores): on two cores, two one-thread runs of the quick
    recipe finish more images per second than one two-thread run. A line per finished run says
    how many are left and, from the runs finished so far, about how long they take.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    options = dict(progress=progress and jobs == 1, verbose=verbose, download=download)
    unique: Dict[str, TrainConfig] = {}
    for config in configs.values():
        unique.setdefault(config.key(), config)
    if jobs == 1 or len(unique) == 1:
        done = {key: _train_tagged(config, runs_root, checkpoints, f"[run {i}/{len(unique)}]", options)
                for i, (key, config) in enumerate(unique.items(), 1)}
    else:
        done = _train_parallel(unique, runs_root, checkpoints, options, jobs)
    return {name: done[config.key()] for name, config in configs.items()}


def _train_tagged(config: TrainConfig, runs_root: Optional[PathLike], checkpoints: bool, tag: str,
                  options: Dict[str, Any], threads: Optional[int] = None) -> Dict[str, Any]:
    """One run of :func:`train_all`, its progress lines tagged ``tag``, on ``threads`` (a run's own
    ``threads`` set in its config override them)."""
    token = PROGRESS_TAG.set(tag)
    try:
        with torch_threads(threads):
            if checkpoints:
                return _train_with_weights(config, runs_root, **options)
            return train(config, runs_root, resume=True, **options)
    finally:
        PROGRESS_TAG.reset(token)


def _train_parallel(unique: Mapping[str, TrainConfig], runs_root: Optional[PathLike],
                    checkpoints: bool, options: Dict[str, Any], jobs: int) -> Dict[str, Dict[str, Any]]:
    """Train ``unique``'s unstored runs, at most ``jobs`` at a time, each in a spawned process (a
    forked one would inherit the parent's OpenMP threads in an unusable state). No run starts after
    one has failed (the others finish their run; then the failure is raised) or after Ctrl-C (the
    workers, interrupted too, keep every finished epoch in their checkpoints)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    say = _printer(options["verbose"])
    todo = [key for key, config in unique.items() if not run_finished(config, runs_root, checkpoints)]
    done = {key: runs.load_record(config.identity(), runs_root)
            for key, config in unique.items() if key not in todo}
    jobs = min(jobs, max(1, len(todo)))
    threads = max(1, available_cores() // jobs)
    say(f"{len(done)} of {len(unique)} runs stored; training {len(todo)}, {jobs} at a time")
    if options["download"]:  # once, here: runs downloading into one folder at once could clash
        for dataset in sorted({unique[key].dataset for key in todo}):
            get_datasets(dataset, download=True)
    queue, n, durations, failure = list(enumerate(todo, len(done) + 1)), len(unique), [], None
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        pending: Dict[Any, Tuple[str, float]] = {}
        while queue or pending:
            while queue and len(pending) < jobs and failure is None:
                i, key = queue.pop(0)
                future = pool.submit(_train_tagged, unique[key], runs_root, checkpoints, f"[run {i}/{n}]",
                                     options, threads)
                pending[future] = (key, time.perf_counter())
            if not pending:
                break
            ready, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in ready:
                key, started = pending.pop(future)
                if future.exception() is not None:
                    failure = failure or future.exception()
                    say(f"{runs.run_name(unique[key].identity())} failed: {future.exception()!r}; "
                        "no further run starts")
                    continue
                done[key] = future.result()
                durations.append(time.perf_counter() - started)
                left = len(queue) + len(pending)
                eta = statistics.fmean(durations) * left / min(jobs, left) if left else 0.0
                say(f"{done[key]['name']} done; {len(durations)} of {len(todo)} trained, "
                    f"about {eta / 60:.0f} min left")
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    if failure is not None:
        raise failure
    return done


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_finished(config: TrainConfig, runs_root: Optional[PathLike], weights: bool = False) -> bool:
    """Whether ``config``'s record is stored in full with no unfinished checkpoint beside it (a
    forced retrain that was interrupted; :func:`train` would continue it) and, with ``weights``,
    its weights are stored too."""
    record = runs.load_record(config.identity(), runs_root)
    if record is None or len(record["history"]) != config.epochs:
        return False
    ckpt = checkpoint_path(config, runs_root)
    if ckpt.is_file():
        try:  # the epoch alone: mapped, not read
            epoch = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["epoch"]
        except Exception:  # noqa: BLE001 - an unreadable checkpoint: train() reports it when asked
            epoch = config.epochs
        if epoch < config.epochs:
            return False
    return not weights or any(p.is_file() for p in (ckpt, weights_path(config, runs_root)))


def _train_with_weights(config: TrainConfig, runs_root: Optional[PathLike] = None,
                        **options: Any) -> Dict[str, Any]:
    """Train or fetch run ``config``, training it again where its record is here but neither its
    checkpoint nor its stored weights (``force``, rewriting the record); an interrupted run continues."""
    again = (not checkpoint_path(config, runs_root).is_file()
             and not weights_path(config, runs_root).is_file()
             and runs.load_record(config.identity(), runs_root) is not None)
    return train(config, runs_root, force=again, resume=not again, **options)


def load_trained(config: TrainConfig, runs_root: Optional[PathLike] = None, *,
                 retrain: bool = True, data_root: Optional[PathLike] = None,
                 progress: bool = False, download: bool = False
                 ) -> Optional[Tuple[nn.Module, Dict[str, Any]]]:
    """The trained model of run ``config`` (eval mode, final temperatures) and its record.

    Records are committed, checkpoints are not: where the checkpoint of a finished run is missing,
    the half-precision weights :func:`save_weights` stored beside its record are loaded; without
    them the run is trained again (``force``, rewriting its record) and an interrupted one is
    continued if ``retrain``; else None is returned.
    """
    path = checkpoint_path(config, runs_root)
    record = runs.load_record(config.identity(), runs_root)
    stored = None if path.is_file() or record is None else _stored_weights(config, runs_root)
    if stored is not None:
        model = build_model(config, record["num_classes"], record["input_size"][1])
        model.load_state_dict(stored)
        return model.eval(), record
    if retrain:  # an interrupted (re)training is continued here, a missing one trained
        record = _train_with_weights(config, runs_root, data_root=data_root, progress=progress,
                                     verbose=True, download=download)  # a retrain says so
    elif record is None or not path.is_file():
        return None
    assert record is not None
    state = load_checkpoint(path, config)
    if state["epoch"] != config.epochs:
        if not retrain:
            return None
        raise CheckpointError(f"checkpoint {path} is at epoch {state['epoch']} of {config.epochs}; "
                              "the run is unfinished")
    model = build_model(config, record["num_classes"], record["input_size"][1])
    model.load_state_dict(state["model"])  # temperatures are buffers: the final ones come back too
    return model.eval(), record


@dataclasses.dataclass(frozen=True)
class _Call:
    """What one :func:`train` call asks for: the run, where its files go, how it reports."""

    config: TrainConfig
    ckpt_path: Path
    runs_root: Optional[PathLike]
    data_root: Optional[PathLike]
    progress: bool
    verbose: bool
    download: bool
    stop_after: Optional[int]
    context: distributed.Context
    workers: int
    strategies: Dict[str, str]  # layer name -> strategy for a run started here (empty: the config's)


@dataclasses.dataclass
class _RunState:
    """What a checkpoint saves and a resumed run restores: the model, its optimiser, the training
    stream and the run's log."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_loader: BatchLoader
    log: RunLog = dataclasses.field(default_factory=lambda: RunLog(git=git_state()))
    start_epoch: int = 0

    def restore(self, state: Dict[str, Any], call: _Call) -> None:
        """Continue from checkpoint ``state`` (:class:`CheckpointError` if it does not fit)."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.train_loader.load_state_dict(
                state.get("rank_loaders", [state["loader"]])[call.context.rank])
            if "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            raise CheckpointError(f"checkpoint {call.ckpt_path} does not fit this run's model or "
                                  f"optimizer ({error}); delete it or pass force=True") from error
        _set_rng_state(state["rng"])
        self.start_epoch = state["epoch"]
        # The strategies the run's first training step picked ("tune" times them there): a
        # resumed run computes as the interrupted one did.
        self.log = RunLog(list(state["history"]), state["elapsed_s"], state["sessions"] + 1,
                          state["git"], dict(state.get("strategies", {})))
        set_strategies(self.model, self.log.strategies)

    def checkpoint(self, call: _Call, epoch: int, elapsed: float, loaders: list) -> Dict[str, Any]:
        """The checkpoint after ``epoch`` epochs, ``elapsed`` seconds of training in all."""
        log = self.log
        return {"format": CHECKPOINT_FORMAT, "key": call.config.key(), "config": call.config.to_dict(),
                "epoch": epoch, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "loader": loaders[0], "rng": _rng_state(), "history": log.history,
                "elapsed_s": elapsed, "sessions": log.sessions, "git": log.git,
                "scaler": self.scaler.state_dict(), "strategies": log.strategies,
                **({"rank_loaders": loaders} if call.context.world_size > 1 else {})}


def _load_data(call: _Call) -> tuple:
    """(train set, test set, train loader, test loader); rank 0 downloads, the others read what it
    wrote."""
    load = partial(config_loaders, call.config, call.data_root, device=call.context.device,
                   workers=call.workers, rank=call.context.rank, world_size=call.context.world_size)
    if call.context.main:
        found = load(download=call.download)
    call.context.barrier()
    return found if call.context.main else load()


def _new_state(call: _Call, train_set: Any, train_loader: BatchLoader) -> _RunState:
    """The model the config describes, its optimiser, LR schedule and loss scaler, at epoch 0."""
    config, device = call.config, call.context.device
    model = build_model(config, train_set.num_classes, train_set.channels).to(device)
    set_strategies(model, config.strategy)
    set_strategies(model, call.strategies)
    if config.channels_last:
        model = to_channels_last(model)
    if config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the attention trunks' too
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)
    iters = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(config, it / iters))
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    return _RunState(model, optimizer, scheduler, scaler, train_loader)


def _training_net(call: _Call, model: nn.Module) -> nn.Module:
    """The module the training forward calls: DDP across processes, compiled where asked."""
    net, device = model, call.context.device
    if call.context.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if call.config.compile else net  # evaluation runs the eager model


def _epoch_row(epoch: int, fit: Dict[str, Any], test: Dict[str, float], seconds: float) -> Dict[str, Any]:
    """One epoch of the record's history."""
    return {"epoch": epoch + 1, "train_loss": fit["loss"], "train_top1": fit["top1"],
            "test_loss": test["loss"], "test_top1": test["top1"], "test_top5": test["top5"],
            "lr": fit["lr"], "temperatures": fit["temperatures"],
            "train_images": fit["images"], "train_seconds": fit["seconds"],
            "train_images_per_s": fit["images_per_s"],
            "eval_seconds": test["seconds"], "eval_images_per_s": test["images_per_s"],
            "epoch_seconds": seconds}


def _run(call: _Call, state: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Train from epoch 0 or from checkpoint ``state`` to the end (or ``stop_after``), checkpoint
    every epoch, and write the record."""
    config, context = call.config, call.context
    train_set, test_set, train_loader, test_loader = _load_data(call)
    run = _new_state(call, train_set, train_loader)
    if state is not None:
        run.restore(state, call)
    net, log = _training_net(call, run.model), run.log
    say = _printer(call.verbose)
    say(f"run {runs.run_name(config.identity())}: {config.conv} ResNet-{config.depth} on "
        f"{config.dataset} ({len(train_set)} train / {len(test_set)} test images, {context.device}, "
        f"{torch.get_num_threads()} threads"
        + (f", {context.world_size} processes ({context.backend})" if context.world_size > 1 else "")
        + ")" + (f", resuming after epoch {run.start_epoch}" if state is not None else ""))
    session_start = time.perf_counter()
    last = config.epochs if call.stop_after is None else min(config.epochs, run.start_epoch + call.stop_after)
    for epoch in range(run.start_epoch, config.epochs):
        tic = time.perf_counter()
        fit = train_epoch(net, train_loader, run.optimizer, run.scheduler, config.schedules(), epoch,
                          progress=call.progress, desc=f"epoch {epoch + 1}/{config.epochs}",
                          amp=config.amp, channels_last=config.channels_last, scaler=run.scaler,
                          label_smoothing=config.label_smoothing,
                          temperature_clock=config.temperature_clock, context=context)
        if not log.strategies:
            log.strategies = used_strategies(run.model)
            set_strategies(run.model, log.strategies)  # evaluation and later epochs compute alike
        test = evaluate(run.model, test_loader, amp=config.amp, channels_last=config.channels_last,
                        context=context)
        log.history.append(_epoch_row(epoch, fit, test, time.perf_counter() - tic))
        # This call's epochs left at the median epoch time: an epoch stalled by a suspended process
        # (seen here: 7313 s among 50-s epochs) would otherwise inflate every later ETA.
        left = (last - epoch - 1) * statistics.median(h["epoch_seconds"] for h in log.history)
        say(f"epoch {epoch + 1}/{config.epochs}: train loss {fit['loss']:.4f}, "
            f"test top-1 {test['top1']:.2f}% top-5 {test['top5']:.2f}%, "
            f"{fit['images_per_s']:.0f} img/s train, {log.history[-1]['epoch_seconds']:.1f} s"
            + (f", ETA {left:.0f} s" if left else ""))
        loaders = context.gather(train_loader.state_dict())
        if context.main:
            save_checkpoint(call.ckpt_path, run.checkpoint(
                call, epoch + 1, log.elapsed + time.perf_counter() - session_start, loaders))
        stop = call.stop_after
        if stop is not None and epoch + 1 - run.start_epoch >= stop and epoch + 1 < config.epochs:
            say(f"stopped after epoch {epoch + 1}; continue with resume=True (--resume)")
            return None
    log.elapsed += time.perf_counter() - session_start

    record = make_record(config, run.model, train_set, test_set, test_loader, log, context, call.workers)
    if context.main:
        say(f"record: {runs.write_record(record, call.runs_root)}")
    context.barrier()  # the record is on disk when any rank returns
    return record


def _printer(verbose: bool) -> Callable[[str], None]:
    if not verbose:
        return lambda message: None
    from tqdm.auto import tqdm
    tag = PROGRESS_TAG.get()
    return lambda message: tqdm.write(f"{tag} {message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = cli.Parser(
        prog="python -m fmd.train", description="Train a ResNet with a (dynamic) convolution; "
        "prints the run record's summary. Config flags override the recipe's values.")
    parser.add_argument("--recipe", default="quick", choices=tuple(RECIPES),
                        help="the recipe whose values the config flags override (default quick)")
    parser.add_argument("--runs-root", default=None, help=f"run records (default {runs.RUNS_ROOT})")
    parser.add_argument("--data-root", default=None, help="datasets (default data/ in the repo)")
    parser.add_argument("--force", action="store_true", help="train even if a record exists")
    parser.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    parser.add_argument("--download", action="store_true", help="download missing datasets")
    parser.add_argument("--workers", type=_workers, default=None,
                        help="DataLoader processes for an ImageNet-style folder (default: up to 8)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (a line per epoch is still printed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no messages")
    parser.add_argument("--print-config", action="store_true",
                        help="print the config and its run folder, then exit")
    cli.add_dataclass_flags(parser.add_argument_group("config (see fmd.config.TrainConfig)"),
                            TrainConfig, field_choices(), skip=("recipe",))
    return parser


def _explain_missing_checkpoint(config: TrainConfig, runs_root: Optional[PathLike]) -> None:
    """``--resume`` without a checkpoint of this run: refuse where an unfinished run of the same
    dataset and conv exists (the flags probably differ from the interrupted command's), naming
    the fields that differ; otherwise the run simply starts."""
    root = Path(runs_root if runs_root is not None else runs.RUNS_ROOT)
    ours = config.to_dict()
    for path in sorted(root.glob(f"{config.dataset}-{config.conv}-*/checkpoints/last.pt")):
        if (path.parent.parent / runs.RECORD_NAME).exists():
            continue  # a finished run
        try:
            theirs = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["config"]
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is not the one meant
            continue
        differ = {k: (ours.get(k), theirs.get(k)) for k in sorted(set(ours) | set(theirs))
                  if ours.get(k) != theirs.get(k)}
        raise CheckpointError(
            f"--resume: this run ({runs.run_name(config.identity())}) has no checkpoint, but the "
            f"unfinished run {path.parent.parent.name} does; it differs in "
            + ", ".join(f"{k} (here {a!r}, there {b!r})" for k, (a, b) in differ.items())
            + " — rerun with its values to continue it, or without --resume to start this run")


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return cli.run(_main, argv, faults=(CheckpointError, NonFiniteLossError, distributed.LauncherGone),
                   on_interrupt="interrupted: every finished epoch is in the run's checkpoint; run "
                                "the same command with --resume to continue")


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name != "recipe" and hasattr(args, f.name)}
    overrides.setdefault("world_size", distributed.launched_world_size())  # torchrun's processes
    try:
        config = make_config(args.recipe, **overrides)
    except ValueError as error:
        parser.error(str(error))
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        print(runs.run_dir(config.identity(), args.runs_root))
        return 0
    if (args.resume and not args.force and not checkpoint_path(config, args.runs_root).exists()
            and runs.load_record(config.identity(), args.runs_root) is None):
        _explain_missing_checkpoint(config, args.runs_root)  # a finished run is simply returned
    record = train(config, args.runs_root, data_root=args.data_root, force=args.force,
                   resume=args.resume, progress=not (args.no_progress or args.quiet),
                   verbose=not args.quiet, download=args.download, workers=args.workers)
    assert record is not None
    summary = {k: record[k] for k in ("name", "final", "params", "macs", "speed", "wall_time_s")}
    if os.environ.get("RANK", "0") == "0":  # one summary from a torchrun run
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
