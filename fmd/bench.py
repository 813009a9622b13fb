"""Speed benchmark: dynamic / static time ratios measured in one run.

``python -m fmd.bench`` times each case for the static network and every dynamic conv, each in its
own worker process (so peak memory is that conv's alone and allocator state does not leak between
convs), the workers taking turns in interleaved rounds, and prints the ratio of medians against
the static network of the same case. The table
goes to ``figures/bench_<device>.{csv,md,json}`` with the machine, threads, torch version and commit.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from .complexity import sync_for, inference_step, summarize_times, time_runs, train_step
from .models import ResNet

REPO_ROOT = Path(__file__).resolve().parent.parent
CONVS = ("static", "condconv", "dyconv", "odconv", "fmdconv")


@dataclass(frozen=True)
class Case:
    """One benchmark setting: backbone, input, batch and inference or training."""

    name: str
    depth: int
    stem: str
    size: int
    batch: int
    mode: str  # "infer" or "train"
    width: int = 64
    num_classes: int = 1000


CASES = {
    "r18-224-b1-infer": Case("r18-224-b1-infer", 18, "imagenet", 224, 1, "infer"),
    "r18-cifar-b128-train": Case("r18-cifar-b128-train", 18, "cifar", 32, 128, "train", 64, 100),
    "r50-224-b1-infer": Case("r50-224-b1-infer", 50, "imagenet", 224, 1, "infer"),
    "r50-cifar-b32-train": Case("r50-cifar-b32-train", 50, "cifar", 32, 32, "train", 64, 100),
    # small cases for a quick look and for the test suite
    "r18w16-cifar-b32-train": Case("r18w16-cifar-b32-train", 18, "cifar", 32, 32, "train", 16, 10),
    "r18w16-cifar-b1-infer": Case("r18w16-cifar-b1-infer", 18, "cifar", 32, 1, "infer", 16, 10),
}
DEFAULT_CASES = ("r18-224-b1-infer", "r18-cifar-b128-train", "r50-224-b1-infer", "r50-cifar-b32-train")


def _status_mb(field: str) -> Optional[float]:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _start_peak_rss() -> float:
    """Reset the process's peak resident memory where Linux allows it; returns the current RSS.

    Without the reset, a peak reached while building the model would hide the timed runs' own.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    current = _status_mb("VmRSS")
    return current if current is not None else _peak_rss_mb()


def _peak_rss_mb() -> float:
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _serve(case: Case, conv: str, strategy: str, device: str, threads: int) -> None:
    """Worker process: build one network for one case, then time it whenever the parent asks.

    Reads ``time N`` (answers the N step times) and ``finish`` (answers the peak memory of the
    timed runs and the strategies the dynamic layers used) on stdin, one JSON line per answer.
    """
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    options = {} if conv == "static" else {"strategy": strategy}
    model = ResNet(case.depth, conv, case.num_classes, case.stem, case.width,
                   conv_options=options).to(device)
    size = (case.batch, 3, case.size, case.size)
    sync = sync_for(torch.device(device))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = _start_peak_rss()
    if case.mode == "infer":
        step, warmup = inference_step(model, size), 3
    else:
        step, warmup = train_step(model, size, case.num_classes), 2
    time_runs(step, warmup, sync)
    print(json.dumps({"ready": conv}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "time":
            print(json.dumps({"times": time_runs(step, int(command[1]), sync)}), flush=True)
        elif command[0] == "finish":
            peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
                    else _peak_rss_mb() - base)
            used = sorted({m.last_strategy for m in model.modules()
                           if getattr(m, "last_strategy", None)})
            print(json.dumps({"peak_mb": peak, "strategies": "+".join(used) or "-"}), flush=True)
            return


class _Worker:
    """A :func:`_serve` process for one conv of one case, spoken to one line at a time."""

    def __init__(self, case: Case, conv: str, strategy: str, device: str, threads: int) -> None:
        self.label = f"{conv} on {case.name}"
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fmd.bench", "--worker", case.name, conv, strategy, device,
             str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors,
            text=True, cwd=REPO_ROOT)

    def answer(self, command: Optional[str] = None) -> Dict[str, object]:
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.errors.seek(0)
            raise RuntimeError(f"benchmark of {self.label} failed:\n{self.errors.read()[-2000:]}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.errors.close()


def measure_case(case: Case, convs: List[str], strategy: str, device: str, repeats: int,
                 threads: int, rounds: int = 5) -> Dict[str, Dict[str, object]]:
    """Time every conv of one case in interleaved rounds; per conv: median, p10, p90, peak memory.

    Each conv runs in its own worker process (its peak memory is its own, and allocator state does
    not leak between convs); the workers take turns, ``repeats / rounds`` steps each per round, so
    a burst of load on a shared machine hits one round of every conv rather than all of one conv.
    A conv's time is the median of its round medians.
    """
    workers = {conv: _Worker(case, conv, strategy, device, threads) for conv in convs}
    try:
        for worker in workers.values():
            worker.answer()  # built and warmed up
        rounds = max(1, min(rounds, repeats))
        per_round = -(-repeats // rounds)
        medians: Dict[str, List[float]] = {conv: [] for conv in convs}
        times: Dict[str, List[float]] = {conv: [] for conv in convs}
        for _ in range(rounds):
            for conv, worker in workers.items():
                round_times = worker.answer(f"time {per_round}")["times"]
                medians[conv].append(statistics.median(round_times))
                times[conv].extend(round_times)
        results = {}
        for conv, worker in workers.items():
            summary = summarize_times(times[conv])
            results[conv] = {"median_s": statistics.median(medians[conv]), "p10_s": summary["p10"],
                             "p90_s": summary["p90"], "rounds": rounds,
                             "repeats": summary["repeats"], **worker.answer("finish")}
        return results
    finally:
        for worker in workers.values():
            worker.close()


def git_commit(root: Path = REPO_ROOT) -> str:
    """The current commit, '+dirty' where tracked code differs from it, or 'unknown'.

    What a run rewrites (``figures/``, the run records, the notebooks' outputs) does not count:
    otherwise every figure after the first of a ``make reproduce`` would be stamped dirty.
    """
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!figures", ":!data/runs", ":!notebooks"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info(device: str, threads: int) -> Dict[str, str]:
    """What the numbers were measured on (the CPU model too: ratios differ between CPU models)."""
    from .train import describe_device

    info = {"device": device, "threads": str(threads), "torch": torch.__version__,
            "python": platform.python_version(), "commit": git_commit(),
            "cpu": describe_device(torch.device("cpu")).removeprefix("cpu: "),
            "cores": str(os.cpu_count())}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run(cases: List[str], convs: List[str], strategy: str = "auto", device: str = "cpu",
        repeats: int = 10, threads: Optional[int] = None, out_dir: Optional[Path] = None,
        tag: str = "") -> List[Dict[str, object]]:
    """Benchmark every case for static and each conv; write and return the rows."""
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; choose from {sorted(CASES)}")
    bad = [c for c in convs if c not in CONVS]
    if bad:
        raise ValueError(f"unknown conv(s) {bad}; choose from {CONVS}")
    threads = threads or torch.get_num_threads()
    info = machine_info(device, threads)
    rows: List[Dict[str, object]] = []
    for name in cases:
        case = CASES[name]
        results = measure_case(case, ["static"] + [c for c in convs if c != "static"], strategy,
                               device, repeats, threads)
        static = results["static"]
        print(f"{name}: static {static['median_s'] * 1e3:.1f} ms, peak {static['peak_mb']:.0f} MB",
              flush=True)
        for conv, r in results.items():
            row = {**asdict(case), "conv": conv, "strategy_forced": strategy, **r,
                   "time_ratio": r["median_s"] / static["median_s"],
                   "memory_ratio": r["peak_mb"] / static["peak_mb"] if static["peak_mb"] > 0 else
                   float("nan"), **info}
            rows.append(row)
            if conv != "static":
                print(f"  {conv:9s} {r['median_s'] * 1e3:9.1f} ms  time ×{row['time_ratio']:.2f}  "
                      f"memory ×{row['memory_ratio']:.2f}  [{r['strategies']}]", flush=True)
    write_table(rows, out_dir or REPO_ROOT / "figures", f"bench_{device}{tag}")
    return rows


def write_table(rows: List[Dict[str, object]], out_dir: Path, stem: str) -> None:
    """Write rows as CSV, Markdown and JSON (atomically, one file each)."""
    import csv
    import io

    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns)
    writer.writeheader()
    writer.writerows(rows)
    shown = ["name", "conv", "median_s", "time_ratio", "peak_mb", "memory_ratio", "strategies"]
    first = rows[0]
    md = [f"Speed, dynamic / static (median of repeats). Machine: {first['cpu']}, "
          f"{first['device']}, {first['threads']} threads, torch {first['torch']}, "
          f"commit {first['commit']}.", "", "| " + " | ".join(shown) + " |",
          "|" + "---|" * len(shown)]
    for r in rows:
        md.append("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c])
                                    for c in shown) + " |")
    for ext, text in (("csv", buf.getvalue()), ("md", "\n".join(md) + "\n"),
                      ("json", json.dumps(rows, indent=1))):
        path = out_dir / f"{stem}.{ext}"
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def main(argv: Optional[List[str]] = None) -> None:
    """Command-line entry point."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        name, conv, strategy, device, threads = argv[1:6]
        _serve(CASES[name], conv, strategy, device, int(threads))
        return
    parser = argparse.ArgumentParser(prog="python -m fmd.bench", description=__doc__)
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), choices=sorted(CASES))
    parser.add_argument("--convs", nargs="+", default=list(CONVS[1:]), choices=CONVS)
    parser.add_argument("--strategy", default="auto",
                        help="force one strategy in every dynamic layer (default: auto)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="folder for the table (figures/)")
    parser.add_argument("--tag", default="", help="suffix for the output file names")
    args = parser.parse_args(argv)
    run(args.cases, args.convs, args.strategy, args.device, args.repeats, args.threads, args.out,
        args.tag)


if __name__ == "__main__":
    main()
