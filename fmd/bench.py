"""Speed benchmark: dynamic / static time ratios measured in one run.

``python -m fmd.bench`` times each case for the static network and every dynamic conv, each in its
own worker process (so peak memory is that conv's alone and allocator state does not leak between
convs), the workers taking turns in interleaved rounds, and prints the ratio of medians against
the static network of the same case (``--sessions N``: N sets of fresh workers, median of their
medians). The table goes to ``figures/bench_<device>.{csv,md,json}`` with the machine, threads,
torch version and commit.

``python -m fmd.bench --breakdown`` splits batch-1 CPU inference time, in one process, into the
kernel mix, the attention branches and the rest, beside the floor of one read of every kernel bank
(``figures/breakdown_cpu.{csv,md,json}``).
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from functools import partial
from typing import Callable, Dict, List, Optional

import torch

from . import cli, tables
from .complexity import (inference_step, interleaved_times, round_medians, summarize_times, sync_for,
                         time_runs, train_step)
from .conv import CONVS as CONV_SPECS, DynamicConv2dBase
from .engine import STRATEGIES, mix_kernels_reusing
from .models import ResNet
from .provenance import REPO_ROOT, machine_info
CONVS = tuple(CONV_SPECS)


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
BREAKDOWN_CASES = ("r18-224-b1-infer", "r50-224-b1-infer")


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
                   **options).to(device)
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
                 threads: int, rounds: int = 5, sessions: int = 1) -> Dict[str, Dict[str, object]]:
    """Time every conv of one case in interleaved rounds; per conv: median, p10, p90, peak memory.

    Each conv runs in its own worker process (its peak memory is its own, and allocator state does
    not leak between convs); the workers take turns, ``repeats / rounds`` steps each per round, so
    a burst of load on a shared machine hits one round of every conv rather than all of one conv.
    A conv's time is the median of its round medians. With ``sessions`` > 1 the whole measurement
    is repeated with fresh workers and the median of the sessions' medians is reported: a worker
    process can run fast or slow for its whole life, which rounds cannot average out (on the shared
    2-core machine this was developed on, one run's CondConv batch-1 ratio came out below the floor
    that reading its bank sets, which only a slow static worker explains).
    """
    found = [_measure_session(case, convs, strategy, device, repeats, threads, rounds)
             for _ in range(sessions)]
    results = {}
    for conv in convs:
        times = [t for session in found for t in session[conv]["times"]]
        medians = [session[conv]["median_s"] for session in found]
        summary = summarize_times(times)
        last = found[-1][conv]
        results[conv] = {"median_s": statistics.median(medians), "p10_s": summary["p10"],
                         "p90_s": summary["p90"], "rounds": last["rounds"], "sessions": sessions,
                         "session_medians_s": medians, "repeats": summary["repeats"],
                         "peak_mb": max(session[conv]["peak_mb"] for session in found),
                         "strategies": last["strategies"]}
    return results


def _measure_session(case: Case, convs: List[str], strategy: str, device: str, repeats: int,
                     threads: int, rounds: int) -> Dict[str, Dict[str, object]]:
    """One set of workers, interleaved rounds: per conv its median of round medians and times."""
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
        return {conv: {"median_s": statistics.median(medians[conv]), "times": times[conv],
                       "rounds": rounds, **worker.answer("finish")}
                for conv, worker in workers.items()}
    finally:
        for worker in workers.values():
            worker.close()


def _check_counts(**counts: Optional[int]) -> None:
    """Raise for a count below 1 (None is allowed: it means the default)."""
    for name, value in counts.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def _dynamic_layer_inputs(model: torch.nn.Module, x: torch.Tensor) -> List[tuple]:
    """(layer, its input) for every dynamic layer of ``model``, in the order a forward calls them."""
    seen: List[tuple] = []
    hooks = [m.register_forward_pre_hook(lambda layer, inputs: seen.append((layer, inputs[0])))
             for m in model.modules() if isinstance(m, DynamicConv2dBase)]
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _attend_all(seen: List[tuple]) -> None:
    for layer, inp in seen:
        layer.attend(inp)


def _mix_all(mixes: List[tuple]) -> None:
    for weight, att in mixes:
        mix_kernels_reusing(weight, att.kernel, att.spatial)


def _read_all(weights: List[torch.Tensor]) -> None:
    for weight in weights:
        weight.sum()


def batch1_breakdown(name: str, convs: List[str], *, rounds: int = 10, repeats: int = 3,
                     threads: Optional[int] = None) -> List[Dict[str, object]]:
    """Where the time of a batch-1 CPU forward goes, per dynamic conv, against the static network.

    In one process, in interleaved rounds (median of round medians), times the static network, the
    dynamic one, and two pieces of the dynamic one run on their own over every dynamic layer in
    order, on the inputs each layer saw in a forward: its attention branches (``attend``) and its
    kernel mix (:func:`fmd.engine.mix_kernels_reusing`, as the batch-1 path computes it). What remains is the
    rest of the engine (gates, biases, reshapes) and any difference in the convolutions. A read of
    every bank (a sum) gives the floor set by memory: no exact mix reads fewer bytes.
    """
    case = CASES[name]
    if case.mode != "infer" or case.batch != 1:
        raise ValueError(f"the breakdown is for batch-1 inference cases, got {name!r}; choose from "
                         f"{sorted(n for n, c in CASES.items() if c.mode == 'infer' and c.batch == 1)}")
    bad = [c for c in convs if c not in CONVS[1:]]
    if bad:
        raise ValueError(f"unknown dynamic conv(s) {bad}; choose from {CONVS[1:]}")
    _check_counts(rounds=rounds, repeats=repeats, threads=threads)
    threads = threads or torch.get_num_threads()
    torch.manual_seed(0)
    x = torch.randn(1, 3, case.size, case.size)
    build = lambda conv: ResNet(case.depth, conv, case.num_classes, case.stem,  # noqa: E731
                                case.width).eval()
    parts: Dict[tuple, Callable[[], object]] = {("static", "network"): partial(build("static"), x)}
    bank_mb: Dict[str, float] = {}
    with torch.inference_mode():
        for conv in convs:
            model = build(conv)
            seen = _dynamic_layer_inputs(model, x)
            mixes = [(layer.weight, layer.attend(inp)) for layer, inp in seen]
            bank_mb[conv] = sum(w.numel() * w.element_size() for w, _ in mixes) / 1e6
            parts[conv, "network"] = partial(model, x)
            parts[conv, "attention"] = partial(_attend_all, seen)
            parts[conv, "mix"] = partial(_mix_all, mixes)
            parts[conv, "bank read"] = partial(_read_all, [w for w, _ in mixes])
        medians = round_medians(interleaved_times(parts, rounds=rounds, repeats=repeats, warmup=2,
                                                  threads=threads))
    ms = {key: 1e3 * statistics.median(values) for key, values in medians.items()}
    static = ms["static", "network"]
    info = machine_info("cpu", threads)
    rows = []
    for conv in convs:
        t = {part: ms[conv, part] for part in ("network", "mix", "attention", "bank read")}
        rows.append({"name": name, "conv": conv, "static_ms": static, "dynamic_ms": t["network"],
                     "time_ratio": t["network"] / static, "mix_x": t["mix"] / static,
                     "attention_x": t["attention"] / static,
                     "rest_x": (t["network"] - static - t["mix"] - t["attention"]) / static,
                     "bank_mb": bank_mb[conv], "mix_ms": t["mix"], "read_ms": t["bank read"],
                     "mix_gb_s": bank_mb[conv] / t["mix"], "read_gb_s": bank_mb[conv] / t["bank read"],
                     "floor_ratio": 1 + t["bank read"] / static, "rounds": rounds, **info})
    return rows


BREAKDOWN_COLUMNS = ["name", "conv", "static_ms", "dynamic_ms", "time_ratio", "mix_x", "attention_x",
                     "rest_x", "bank_mb", "mix_gb_s", "read_gb_s", "floor_ratio"]


def run_breakdown(cases: List[str], convs: List[str], rounds: int = 10,
                  threads: Optional[int] = None, out_dir: Optional[Path] = None,
                  tag: str = "") -> List[Dict[str, object]]:
    """:func:`batch1_breakdown` for each case; print and write ``breakdown_cpu<tag>.*``."""
    rows: List[Dict[str, object]] = []
    for name in cases:
        found = batch1_breakdown(name, convs, rounds=rounds, threads=threads)
        print(f"{name}: static {found[0]['static_ms']:.1f} ms", flush=True)
        for r in found:
            print(f"  {r['conv']:9s} ×{r['time_ratio']:.2f} = 1 + mix {r['mix_x']:.2f} + attention "
                  f"{r['attention_x']:.2f} + rest {r['rest_x']:.2f}; bank {r['bank_mb']:.0f} MB, "
                  f"floor ×{r['floor_ratio']:.2f}", flush=True)
        rows += found
    write_table(rows, out_dir or REPO_ROOT / "figures", f"breakdown_cpu{tag}", BREAKDOWN_COLUMNS,
                "Batch-1 inference, where the time goes: dynamic / static = 1 + mix + attention + "
                "rest (each × the static forward; median of interleaved rounds in one process)")
    return rows


def run(cases: List[str], convs: List[str], strategy: str = "auto", device: str = "cpu",
        repeats: int = 10, threads: Optional[int] = None, out_dir: Optional[Path] = None,
        tag: str = "", sessions: int = 1) -> List[Dict[str, object]]:
    """Benchmark every case for static and each conv; write and return the rows."""
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; choose from {sorted(CASES)}")
    bad = [c for c in convs if c not in CONVS]
    if bad:
        raise ValueError(f"unknown conv(s) {bad}; choose from {CONVS}")
    _check_counts(repeats=repeats, threads=threads, sessions=sessions)
    threads = threads or torch.get_num_threads()
    info = machine_info(device, threads)
    rows: List[Dict[str, object]] = []
    for name in cases:
        case = CASES[name]
        results = measure_case(case, ["static"] + [c for c in convs if c != "static"], strategy,
                               device, repeats, threads, sessions=sessions)
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


SHOWN = ["name", "conv", "median_s", "time_ratio", "peak_mb", "memory_ratio", "strategies"]


def write_table(rows: List[Dict[str, object]], out_dir: Path, stem: str,
                shown: List[str] = SHOWN, title: str = "Speed, dynamic / static (median of repeats)"
                ) -> None:
    """Write rows as CSV, Markdown (the ``shown`` columns) and JSON, atomically, one file each."""
    first = rows[0]
    machine = (f"Machine: {first['cpu']}, {first['device']}, {first['threads']} threads, "
               f"torch {first['torch']}, commit {first['commit']}.")
    tables.write_table(rows, out_dir, stem, line=machine, title=title, md_columns=shown,
                       csv_line=False, with_json=True)


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        name, conv, strategy, device, threads = argv[1:6]
        _serve(CASES[name], conv, strategy, device, int(threads))
        return 0
    return cli.run(_main, argv, faults=(RuntimeError,),
                   on_interrupt="interrupted: no table was written (tables are written whole)")


def _main(argv: List[str]) -> int:
    parser = cli.Parser(prog="python -m fmd.bench", description=__doc__)
    parser.add_argument("--cases", nargs="+", default=None, choices=sorted(CASES),
                        help=f"default: {' '.join(DEFAULT_CASES)}; with --breakdown: "
                             f"{' '.join(BREAKDOWN_CASES)}")
    parser.add_argument("--convs", nargs="+", default=list(CONVS[1:]), choices=CONVS)
    parser.add_argument("--strategy", default="auto", choices=STRATEGIES,
                        help="force one strategy in every dynamic layer (default: auto)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=cli.positive_int, default=10,
                        help="timed steps per conv, rounded up to a multiple of the 5 rounds")
    parser.add_argument("--threads", type=cli.positive_int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="folder for the table (figures/)")
    parser.add_argument("--tag", default="", help="suffix for the output file names")
    parser.add_argument("--sessions", type=cli.positive_int, default=1,
                        help="repeat each case with fresh worker processes; report the median")
    parser.add_argument("--breakdown", action="store_true",
                        help="instead: split batch-1 CPU inference time into mix, attention and the "
                             "rest (breakdown_cpu<tag>.*)")
    parser.add_argument("--rounds", type=cli.positive_int, default=10,
                        help="interleaved rounds of --breakdown")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here — use --device cpu")
    cli.check_writable(args.out or REPO_ROOT / "figures")  # before the timing, not after
    if args.breakdown:
        if args.device != "cpu" or args.strategy != "auto":
            parser.error("--breakdown measures the CPU with the automatic strategy")
        convs = [c for c in args.convs if c != "static"]
        run_breakdown(args.cases or list(BREAKDOWN_CASES), convs, args.rounds, args.threads,
                      args.out, args.tag)
        return 0
    run(args.cases or list(DEFAULT_CASES), args.convs, args.strategy, args.device, args.repeats,
        args.threads, args.out, args.tag, args.sessions)
    return 0

if __name__ == "__main__":
    sys.exit(main())
