"""Run every numbered notebook headlessly, in order, and so regenerate ``figures/``.

``python -m fmd.reproduce --profile quick`` (what ``make reproduce`` calls) executes
``notebooks/NN_*.ipynb`` with papermill. The profile travels in the ``FMD_PROFILE`` environment
variable, which each notebook's ``parameters`` cell reads, so the executed notebooks keep no
injected cell and the same files serve nbval under the ``smoke`` profile. A notebook is replaced
only when it ran to the end; a failing one is kept beside it as ``NN_*.failed.ipynb``. Runs are
cached by configuration (:mod:`fmd.runs`), so a second reproduce only recomputes what changed.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import cli
from .profiles import PROFILE_NAMES, figures_dir, get_profile, runs_root
from .provenance import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
VOLATILE_KEYS = ("papermill", "execution")


def find_notebooks(folder: Path = NOTEBOOKS, only: Optional[Sequence[str]] = None) -> List[Path]:
    """The numbered notebooks in order, optionally only those whose names start with ``only``."""
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb")
                   if not p.name.endswith((".failed.ipynb", ".running.ipynb")))
    if only:
        found = [p for p in found if any(p.name.startswith(prefix) for prefix in only)]
    if not found:
        raise FileNotFoundError(f"no notebooks matching {list(only or ['NN_*'])} in {folder}")
    return found


def strip_volatile(path: Path) -> None:
    """Drop timing metadata papermill adds; keep outputs and execution counts (nbval needs them)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for key in VOLATILE_KEYS:
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in VOLATILE_KEYS:
            cell.metadata.pop(key, None)
    nbformat.write(nb, path)


class ProgressLines:
    """A stream for papermill's ``stderr_file``: passes the training progress lines a notebook
    prints (those starting with a tag such as ``[run 3/12]``, see :data:`fmd.train.PROGRESS_TAG`)
    on to ``out``, indented, and drops everything else."""

    TAGS = ("[run ", "[train]")

    def __init__(self, out=None) -> None:
        self.out, self.pending = out, ""

    def write(self, text: str) -> None:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if line.startswith(self.TAGS):
                print("  " + line, file=self.out or sys.stdout, flush=True)

    def flush(self) -> None:
        pass


def run_notebook(path: Path, profile: str) -> float:
    """Execute one notebook in place (only on success); returns seconds taken."""
    import papermill

    os.environ["FMD_PROFILE"] = profile
    tmp = path.with_name(path.stem + ".running.ipynb")
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(path), str(tmp), cwd=str(path.parent), kernel_name="python3",
                                   progress_bar=False, log_output=False, stderr_file=ProgressLines(),
                                   # the kernel's start-up warnings are not the notebook's output
                                   extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except KeyboardInterrupt:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as error:  # papermill's execution error, or one of its own
        failed = path.with_name(path.stem + ".failed.ipynb")
        if tmp.exists():
            os.replace(tmp, failed)
        what = f"{getattr(error, 'ename', type(error).__name__)}: {getattr(error, 'evalue', error)}"
        hint = ("; free some space and run the same command again" if "No space left" in what else "")
        raise RuntimeError(f"{path.name} failed ({what}); {path.name} is unchanged and the "
                           f"executed copy is {failed}{hint}") from error
    try:
        strip_volatile(tmp)
        os.replace(tmp, path)
    except BaseException:  # a full disk, say: the committed notebook stays, the partial copy goes
        tmp.unlink(missing_ok=True)
        raise
    return time.perf_counter() - start


def needed_runs(profile: str, only: Optional[Sequence[str]] = None) -> Dict[str, Tuple[str, Any]]:
    """The runs ``make reproduce`` must find stored, keyed by run key, each with the chapter that
    trains it: every run the chapters read (:func:`fmd.chapters.chapter_runs`) or, with ``only``
    (notebook number prefixes), those the chapters asked for train (a run two chapters read counts
    for the first) or whose weights they load (:func:`fmd.chapters.loaded_runs`)."""
    from .chapters import chapter_runs, loaded_runs

    needed, loads = chapter_runs(profile), loaded_runs(profile)
    if not only:
        return needed
    return {key: run for key, run in needed.items()
            if any(c.startswith(p[:2]) for c in (run[0], *loads.get(key, ())) for p in only)}


def missing_runs(profile: str, needed: Optional[Mapping[str, Tuple[str, Any]]] = None
                 ) -> Dict[str, Tuple[str, Any]]:
    """Of ``needed`` (default: every run the chapters read, :func:`fmd.chapters.chapter_runs`), the
    runs not stored in full: without a finished record or, for a run whose weights a chapter loads
    (:func:`fmd.chapters.loaded_runs`), without its weights."""
    from .chapters import chapter_runs, loaded_runs
    from .train import run_finished

    root, loaded = runs_root(profile), loaded_runs(profile)
    needed = chapter_runs(profile) if needed is None else needed
    return {key: (chapter, config) for key, (chapter, config) in needed.items()
            if not run_finished(config, root, weights=key in loaded)}


# A stored run estimates another's cost if it trains the same network on the same images.
SAME_COST = ("dataset", "conv", "depth", "width", "stem", "transform", "train_subset", "kernel_num",
             "threads")


def seconds_per_epoch(record: Mapping[str, Any]) -> float:
    """A stored run's median epoch, in seconds, where its history times each epoch: a run stopped
    or slowed by other work for a while (its wall time counts that) does not inflate the estimate;
    otherwise its wall time over its epochs."""
    epochs = [e.get("epoch_seconds") for e in record["history"]]
    if epochs and None not in epochs:
        return float(statistics.median(epochs))
    return record["wall_time_s"] / len(record["history"])


def estimate_seconds(configs: Sequence[Any], root: Path) -> Tuple[float, int]:
    """The wall time of training ``configs`` one after another, from the stored records of the same
    networks (:data:`SAME_COST`: the median over those records of :func:`seconds_per_epoch`, times
    the epochs), and how many of the configs had such a record."""
    from . import runs

    per_epoch: Dict[tuple, List[float]] = {}
    for record in runs.list_records(root):
        c = record["config"]
        per_epoch.setdefault(tuple(c.get(f) for f in SAME_COST), []).append(seconds_per_epoch(record))
    seconds, known = 0.0, 0
    for config in configs:
        found = per_epoch.get(tuple(getattr(config, f) for f in SAME_COST))
        if found:
            seconds += statistics.median(found) * config.epochs
            known += 1
    return seconds, known


def default_jobs(configs: Sequence[Any]) -> int:
    """Runs to train at once: one (on a GPU, or for runs without a thread count, which use every
    core); else as many as the cores hold of the runs' threads (the quick recipe: one each)."""
    import torch

    from .train import available_cores

    threads = {c.threads for c in configs}
    if not configs or torch.cuda.is_available() or None in threads:
        return 1
    return max(1, available_cores() // max(threads))


def scratch_line(needed: Mapping[str, Tuple[str, Any]], jobs: int, root: Path) -> str:
    """One line: what training the stored ones of the ``needed`` runs cost from scratch (per record,
    its epochs at :func:`seconds_per_epoch`, so that time a run spent suspended or stopped does not
    count; each measured with the threads its record names), serial and ``jobs`` at a time."""
    from . import runs

    found = [runs.load_record(config.identity(), root) for _, config in needed.values()]
    seconds = sum(seconds_per_epoch(r) * len(r["history"]) for r in found if r is not None)
    stored = sum(r is not None for r in found)
    at_once = max(1, min(jobs, stored))
    return (f"from scratch: the {stored} stored runs took {seconds / 3600:.1f} h of training by their "
            f"records (each at its median epoch), on the machines they name (about "
            f"{seconds / 3600 / at_once:.1f} h at {at_once} at a time)")


def stored_runs_line(needed: int, missing: Mapping[str, Tuple[str, Any]], jobs: int,
                     root: Path) -> str:
    """One line: how many of the ``needed`` training runs are stored, which chapters train the
    rest and about how long that takes here (:func:`estimate_seconds`, ``jobs`` at a time)."""
    if not missing:
        return f"training runs the chapters read: {needed}, all stored; nothing to train"
    count: Dict[str, int] = {}
    for chapter, _ in missing.values():
        count[chapter] = count.get(chapter, 0) + 1
    where = ", ".join(f"chapter {c}: {n}" for c, n in sorted(count.items()))
    seconds, known = estimate_seconds([c for _, c in missing.values()], root)
    at_once = min(jobs, len(missing))
    cost = (f"about {seconds / 3600 / at_once:.1f} h at {at_once} at a time, from the stored runs of "
            f"the same networks ({known} of {len(missing)} estimated; runs side by side can be "
            "slower than the stored ones)" if known
            else "no stored run of the same networks to estimate the time from")
    return (f"training runs the chapters read: {needed}, stored {needed - len(missing)}; "
            f"to train {len(missing)} ({where}); {cost}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return cli.run(_main, argv, faults=(RuntimeError,), on_interrupt=(
        "interrupted: the notebooks that ran to the end are saved, the one running is unchanged; "
        "run the same command again (finished training runs are cached)"))


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = cli.Parser(prog="python -m fmd.reproduce", description=__doc__)
    parser.add_argument("--profile", default=os.environ.get("FMD_PROFILE", "quick"),
                        choices=PROFILE_NAMES, help="default: $FMD_PROFILE, else quick")
    parser.add_argument("--only", nargs="*", help="notebook number prefixes, e.g. 01 03")
    parser.add_argument("--jobs", type=cli.positive_int, default=None,
                        help="training runs at once before the notebooks (default: as many as the "
                             "cores hold of the runs' threads; one on a GPU)")
    args = parser.parse_args(argv)
    if args.profile not in PROFILE_NAMES:  # argparse checks a given value, not its default
        parser.error(f"unknown profile {args.profile!r} (from FMD_PROFILE); choose one of "
                     f"{', '.join(PROFILE_NAMES)}")
    notebooks = find_notebooks(NOTEBOOKS, args.only)
    cli.check_writable(NOTEBOOKS)
    needed = needed_runs(args.profile, args.only)
    missing = missing_runs(args.profile, needed)
    jobs = args.jobs or default_jobs([c for _, c in missing.values()])
    print(stored_runs_line(len(needed), missing, jobs, runs_root(args.profile)), flush=True)
    print(scratch_line(needed, args.jobs or default_jobs([c for _, c in needed.values()]),
                       runs_root(args.profile)), flush=True)
    if missing:  # every run first, several at once; the notebooks then read the records
        from .train import train_all

        # checkpoints: a run stored without the weights a chapter loads is trained again
        train_all({key: config for key, (_, config) in missing.items()}, runs_root(args.profile),
                  checkpoints=True, download=get_profile(args.profile).download, jobs=jobs)
    total = time.perf_counter()
    for i, path in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {path.name} (profile {args.profile})", flush=True)
        print(f"  done in {run_notebook(path, args.profile):.0f} s", flush=True)
    print(f"all {len(notebooks)} notebooks ran in {time.perf_counter() - total:.0f} s; "
          f"figures and tables are in {figures_dir(args.profile)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
