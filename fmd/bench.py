"""Speed benchmark: dynamic / static time ratios measured in one run.

``python -m fmd.bench`` times each case for the static network and every dynamic conv, each in its
own worker process (so peak memory is that conv's alone and allocator state does not leak between
convs), the workers taking turns in interleaved rounds, and prints the ratio of medians against
the static network of the same case (``--sessions N``: N sets of fresh workers, median of their
medians). ``--backend compile`` times the networks under ``torch.compile`` (inductor),
``--backend onnxruntime`` exported to ONNX at the case's batch (:mod:`fmd.export`) and run in ONNX
Runtime, ``--amp bf16`` under autocast, ``--dynamic-batch`` compiled or exported with a symbolic
batch; every row also gives the output's largest difference from eager fp32 (relative to the
largest output). The table goes to ``figures/bench_<device>_<backend>[_bf16][_dynamic].{csv,md,json}``
with the backend, the machine, threads, torch version and commit.

``python -m fmd.bench --breakdown`` splits batch-1 CPU inference time, in one process, into the
kernel mix, the attention branches and the rest, beside the floor of one read of every kernel bank
(:mod:`fmd.breakdown`; ``figures/breakdown_cpu.{csv,md,json}``); given training cases, it times every
dynamic layer's forward + backward by strategy against a static convolution of the same shape
(``figures/breakdown_train_cpu.{csv,md,json}``).
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
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from . import cli, tables
from .conv import CONV_NAMES, DYNAMIC_CONV_NAMES, DynamicConv2dBase
from .engine import (STRATEGIES, applicable_strategies, batch_free_strategy, check_strategy)
from .models import ResNet
from .profiles import figures_dir
from .provenance import REPO_ROOT, machine_info
from .timing import inference_step, summarize_times, sync_for, time_runs, timed_rounds, train_step


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
    channels: int = 3  # input channels (Fashion-MNIST's quick recipe: 1)


CASES = {
    "r18-224-b1-infer": Case("r18-224-b1-infer", 18, "imagenet", 224, 1, "infer"),
    "r18-cifar-b128-train": Case("r18-cifar-b128-train", 18, "cifar", 32, 128, "train", 64, 100),
    "r50-224-b1-infer": Case("r50-224-b1-infer", 50, "imagenet", 224, 1, "infer"),
    "r50-cifar-b32-train": Case("r50-cifar-b32-train", 50, "cifar", 32, 32, "train", 64, 100),
    # small cases for a quick look and for the test suite
    "r18w16-cifar-b32-train": Case("r18w16-cifar-b32-train", 18, "cifar", 32, 32, "train", 16, 10),
    "r18w16-cifar-b1-infer": Case("r18w16-cifar-b1-infer", 18, "cifar", 32, 1, "infer", 16, 10),
    # the quick recipe's training step (Fashion-MNIST 1×32×32, ResNet-18 width 16, batch 128) with
    # the ImageNet stem (8×8 maps in the first stage) and the small stem (16×16)
    "quick-imagenet-stem-train": Case("quick-imagenet-stem-train", 18, "imagenet", 32, 128, "train",
                                      16, 10, channels=1),
    "quick-small-stem-train": Case("quick-small-stem-train", 18, "small", 32, 128, "train", 16, 10,
                                   channels=1),
}
QUICK_CASES = ("quick-imagenet-stem-train", "quick-small-stem-train")
DEFAULT_CASES = ("r18-224-b1-infer", "r18-cifar-b128-train", "r50-224-b1-infer", "r50-cifar-b32-train",
                 *QUICK_CASES)
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


BACKENDS = ("eager", "compile", "onnxruntime")
BENCH_AMP = ("bf16",)  # the autocast dtypes timed (fmd.precision.AMP_DTYPES); fp16 needs a GradScaler


@dataclass(frozen=True)
class Setting:
    """Where and how every network of a run is timed."""

    device: str = "cpu"
    threads: int = 1
    backend: str = "eager"  # eager PyTorch, torch.compile (inductor) or ONNX Runtime
    amp: Optional[str] = None  # autocast dtype (AMP_DTYPES), or None: fp32
    dynamic_batch: bool = False  # compile / export with a symbolic batch

    def stem(self) -> str:
        """The table's file name before the tag: device, backend, autocast, dynamic batch."""
        return "_".join(["bench", self.device.split(":")[0], self.backend]
                        + ([self.amp] if self.amp else [])
                        + (["dynamic"] if self.dynamic_batch else []))

    def check(self, cases: List[str]) -> None:
        """A clear error for a combination that cannot run."""
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.amp is not None and self.amp not in BENCH_AMP:
            raise ValueError(f"amp must be one of {BENCH_AMP}, got {self.amp!r}")
        if self.backend == "onnxruntime":
            training = [c for c in cases if CASES[c].mode != "infer"]
            if training or self.amp or self.device != "cpu":
                raise ValueError("the onnxruntime backend times CPU inference in fp32: drop "
                                 f"{'the training case(s) ' + str(training) if training else ''}"
                                 f"{'--amp ' if self.amp else ''}"
                                 f"{'--device ' + self.device if self.device != 'cpu' else ''}")
        if self.dynamic_batch and self.backend == "eager":
            raise ValueError("--dynamic-batch needs --backend compile or onnxruntime (eager PyTorch "
                             "has no traced shapes)")


def _relative_difference(found: torch.Tensor, expected: torch.Tensor) -> float:
    """max |found − expected| / max |expected|."""
    found, expected = found.detach().float().cpu(), expected.detach().float().cpu()
    return float((found - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def _backend_step(model: torch.nn.Module, case: Case, setting: Setting, x: torch.Tensor
                  ) -> Callable[[], object]:
    """The step to time on ``setting``'s backend: a forward of ``x`` (inference) or an SGD step."""
    amp = setting.amp or "none"
    if setting.backend == "onnxruntime":
        from .export import export_onnx, session

        path = Path(tempfile.mkdtemp()) / "model.onnx"
        export_onnx(model, path, x.shape[1:], None if setting.dynamic_batch else case.batch,
                    check=False)
        runner, feed = session(path, setting.threads), {"input": x.numpy()}
        return lambda: torch.from_numpy(runner.run(None, feed)[0])
    if setting.backend == "compile":
        if setting.dynamic_batch:
            torch._dynamo.mark_dynamic(x, 0)
        model = torch.compile(model)
    if case.mode == "infer":
        return inference_step(model, x.shape, x, amp)
    return train_step(model, x.shape, case.num_classes, amp)


def _strategies_used(model: torch.nn.Module) -> List[str]:
    """The engine strategies the model's dynamic layers computed their last forward with."""
    return sorted({m.last_strategy for m in model.modules() if getattr(m, "last_strategy", None)})


def _serve(case: Case, conv: str, strategy: str, setting: Setting) -> None:
    """Worker process: build one network for one case, then time it whenever the parent asks.

    First runs the network once in eager PyTorch (fp32, eval mode) for the strategies its layers
    choose and the output that the backend's is compared with. Reads ``time N`` (answers the N
    step times) and ``finish`` (answers the peak memory of the timed runs, the strategies, and the
    backend's largest output difference from eager fp32, relative to the largest output) on stdin,
    one JSON line per answer.
    """
    torch.manual_seed(0)
    torch.set_num_threads(setting.threads)
    options = {} if conv == "static" else {"strategy": strategy}
    model = ResNet(case.depth, conv, case.num_classes, case.stem, case.width, case.channels,
                   **options).to(setting.device)
    x = torch.randn(case.batch, case.channels, case.size, case.size, device=setting.device)
    with torch.no_grad():
        expected = model.eval()(x)
    if setting.dynamic_batch:  # the traced graph's choice, not eager's at this batch
        with torch.no_grad():
            used = sorted({batch_free_strategy(applicable_strategies(layer.attend(inp), layer.geometry))
                           for layer, inp in _dynamic_layer_inputs(model, x)})
    else:
        used = _strategies_used(model)
    sync = sync_for(torch.device(setting.device))
    if setting.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base = _start_peak_rss()
    step = _backend_step(model, case, setting, x)
    out = step()  # the first run compiles the graph (torch.compile) or plans it (onnxruntime)
    if case.mode == "train" and setting.backend == "eager":  # what the training step computed with
        used = _strategies_used(model)
    difference = _relative_difference(out, expected) if case.mode == "infer" else float("nan")
    # The peak counts from here (above the memory before the first run, which it keeps): the first
    # run's transients (compiling, planning, "tune" timing every strategy) are not the timed runs'.
    if setting.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _start_peak_rss()
    time_runs(step, 3 if case.mode == "infer" else 2, sync)
    print(json.dumps({"ready": conv}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "time":
            print(json.dumps({"times": time_runs(step, int(command[1]), sync)}), flush=True)
        elif command[0] == "finish":
            peak = (torch.cuda.max_memory_allocated() / 2**20 if setting.device.startswith("cuda")
                    else _peak_rss_mb() - base)
            print(json.dumps({"peak_mb": peak, "strategies": "+".join(used) or "-",
                              "output_rel_diff": difference}), flush=True)
            return


Variant = Tuple[str, str]  # (conv, strategy)


class _Worker:
    """A :func:`_serve` process for one conv of one case, spoken to one line at a time."""

    def __init__(self, case: Case, variant: Variant, setting: Setting) -> None:
        conv, strategy = variant
        self.label = f"{conv} on {case.name}" + (f" ({strategy})" if strategy != "auto" else "")
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fmd.bench", "--worker", case.name, conv, strategy,
             json.dumps(asdict(setting))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.errors, text=True, cwd=REPO_ROOT)

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


def measure_case(case: Case, variants: List[Variant], setting: Setting, repeats: int,
                 rounds: int = 5, sessions: int = 1) -> Dict[Variant, Dict[str, object]]:
    """Time every (conv, strategy) of one case in interleaved rounds; per variant: median, p10,
    p90, peak memory, the strategies used and the output's difference from eager fp32.

    Each variant runs in its own worker process (its peak memory is its own, and allocator state
    does not leak between them); the workers take turns, ``repeats / rounds`` steps each per round,
    so a burst of load on a shared machine hits one round of every variant rather than all of one.
    A variant's time is the median of its round medians. With ``sessions`` > 1 the whole
    measurement is repeated with fresh workers and the median of the sessions' medians is reported:
    a worker process can run fast or slow for its whole life, which rounds cannot average out (on
    the shared 2-core machine this was developed on, one run's CondConv batch-1 ratio came out
    below the floor that reading its bank sets, which only a slow static worker explains).
    """
    found = [_measure_session(case, variants, setting, repeats, rounds) for _ in range(sessions)]
    results = {}
    for variant in variants:
        times = [t for session in found for t in session[variant]["times"]]
        medians = [session[variant]["median_s"] for session in found]
        summary = summarize_times(times)
        last = found[-1][variant]
        results[variant] = {"median_s": statistics.median(medians), "p10_s": summary["p10"],
                            "p90_s": summary["p90"], "rounds": last["rounds"], "sessions": sessions,
                            "session_medians_s": medians, "repeats": summary["repeats"],
                            "peak_mb": max(session[variant]["peak_mb"] for session in found),
                            "strategies": last["strategies"],
                            "output_rel_diff": last["output_rel_diff"]}
    return results


def _measure_session(case: Case, variants: List[Variant], setting: Setting, repeats: int,
                     rounds: int) -> Dict[Variant, Dict[str, object]]:
    """One set of workers, interleaved rounds: per variant its median of round medians and times."""
    workers = {variant: _Worker(case, variant, setting) for variant in variants}
    try:
        for worker in workers.values():
            worker.answer()  # built and warmed up
        rounds = max(1, min(rounds, repeats))
        timers = {variant: (lambda n, w=worker: w.answer(f"time {n}")["times"])
                  for variant, worker in workers.items()}
        times = timed_rounds(timers, rounds=rounds, repeats=-(-repeats // rounds))
        return {variant: {"median_s": times[variant].median, "times": times[variant].times,
                          "rounds": rounds, **worker.answer("finish")}
                for variant, worker in workers.items()}
    finally:
        for worker in workers.values():
            worker.close()


def check_counts(**counts: Optional[int]) -> None:
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


def run(cases: List[str], convs: List[str], strategy: Union[str, Sequence[str]] = "auto",
        device: str = "cpu", repeats: int = 10, threads: Optional[int] = None,
        out_dir: Optional[Path] = None, tag: str = "", sessions: int = 1, backend: str = "eager",
        amp: Optional[str] = None, dynamic_batch: bool = False) -> List[Dict[str, object]]:
    """Benchmark every case for static and each conv on one backend; write and return the rows.

    ``strategy`` forces one strategy (or each of several, one row each) in every dynamic layer.
    On a GPU, ``auto`` comes with a row for the official computation (``grouped`` forced), whose
    thresholds were never measured there (:data:`fmd.engine.MEASURED_DEVICE_TYPES`).
    """
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; choose from {sorted(CASES)}")
    bad = [c for c in convs if c not in CONV_NAMES]
    if bad:
        raise ValueError(f"unknown conv(s) {bad}; choose from {CONV_NAMES}")
    strategies = [strategy] if isinstance(strategy, str) else list(strategy)
    for name in strategies:
        check_strategy(name)
    if device.startswith("cuda") and strategies == ["auto"]:
        strategies.append("grouped")
    check_counts(repeats=repeats, threads=threads, sessions=sessions)
    threads = threads or torch.get_num_threads()
    setting = Setting(device, threads, backend, amp, dynamic_batch)
    setting.check(cases)
    info = machine_info(device, threads)
    variants = [("static", "auto")] + [(c, s) for c in convs if c != "static" for s in strategies]
    rows: List[Dict[str, object]] = []
    for name in cases:
        case = CASES[name]
        results = measure_case(case, variants, setting, repeats, sessions=sessions)
        static = results["static", "auto"]
        print(f"{name} [{setting.stem()}]: static {static['median_s'] * 1e3:.1f} ms, peak "
              f"{static['peak_mb']:.0f} MB", flush=True)
        for (conv, forced), r in results.items():
            row = {**asdict(case), "conv": conv, "strategy_forced": forced,
                   "backend": backend, "amp": amp or "fp32", "dynamic_batch": dynamic_batch, **r,
                   "time_ratio": r["median_s"] / static["median_s"],
                   "memory_ratio": r["peak_mb"] / static["peak_mb"] if static["peak_mb"] > 0 else
                   float("nan"), **info}
            rows.append(row)
            if conv != "static":
                print(f"  {conv:9s} {r['median_s'] * 1e3:9.1f} ms  time ×{row['time_ratio']:.2f}  "
                      f"memory ×{row['memory_ratio']:.2f}  [{r['strategies']}]", flush=True)
    write_table(rows, figures_dir(folder=out_dir), setting.stem() + tag)
    return rows


SHOWN = ["name", "conv", "strategy_forced", "backend", "amp", "median_s", "time_ratio", "peak_mb",
         "memory_ratio", "strategies", "output_rel_diff"]


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
        name, conv, strategy, setting = argv[1:5]
        _serve(CASES[name], conv, strategy, Setting(**json.loads(setting)))
        return 0
    return cli.run(_main, argv, faults=(RuntimeError,),
                   on_interrupt="interrupted: no table was written (tables are written whole)")


def _main(argv: List[str]) -> int:
    parser = cli.Parser(prog="python -m fmd.bench", description=__doc__)
    parser.add_argument("--cases", nargs="+", default=None, choices=sorted(CASES),
                        help=f"default: {' '.join(DEFAULT_CASES)}; with --breakdown: "
                             f"{' '.join(BREAKDOWN_CASES)}")
    parser.add_argument("--convs", nargs="+", default=list(DYNAMIC_CONV_NAMES), choices=CONV_NAMES)
    parser.add_argument("--strategy", nargs="+", default=["auto"], choices=STRATEGIES,
                        help="force a strategy in every dynamic layer, one row per strategy given "
                             "(default: auto; on CUDA auto and grouped, the official computation)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="eager", choices=BACKENDS,
                        help="eager PyTorch, torch.compile, or ONNX Runtime (CPU inference, the graph "
                             "exported at the case's batch)")
    parser.add_argument("--amp", default=None, choices=BENCH_AMP,
                        help="time under torch.autocast to this dtype (default: fp32)")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="compile or export with a symbolic batch (default: the case's batch)")
    parser.add_argument("--repeats", type=cli.positive_int, default=10,
                        help="timed steps per conv, rounded up to a multiple of the 5 rounds")
    parser.add_argument("--threads", type=cli.positive_int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="folder for the table (figures/)")
    parser.add_argument("--tag", default="", help="suffix for the output file names")
    parser.add_argument("--sessions", type=cli.positive_int, default=1,
                        help="repeat each case with fresh worker processes; report the median")
    parser.add_argument("--breakdown", action="store_true",
                        help="instead: split batch-1 CPU inference time into mix, attention and the "
                             "rest (breakdown_cpu<tag>.*), or, for training cases, time every "
                             "dynamic layer's forward + backward by strategy against a static "
                             "convolution (breakdown_train_cpu<tag>.*)")
    parser.add_argument("--rounds", type=cli.positive_int, default=10,
                        help="interleaved rounds of --breakdown")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here — use --device cpu")
    if args.out is not None:  # from the working directory, as a shell user means it
        args.out = args.out.absolute()
    cli.check_writable(figures_dir(folder=args.out))  # before the timing, not after
    if args.breakdown:
        if (args.device != "cpu" or args.strategy != ["auto"] or args.backend != "eager"
                or args.amp or args.dynamic_batch):
            parser.error("--breakdown measures eager PyTorch on the CPU, fp32, with the automatic strategy")
        convs = [c for c in args.convs if c != "static"]
        from .breakdown import run_breakdown, run_train_breakdown

        cases = args.cases or list(BREAKDOWN_CASES)
        training = [c for c in cases if CASES[c].mode == "train"]
        if training and len(training) < len(cases):
            parser.error("--breakdown takes either batch-1 inference cases or training cases, "
                         f"not both; got {' '.join(cases)}")
        if training:
            run_train_breakdown(training, convs, args.rounds, args.threads, args.out, args.tag)
        else:
            run_breakdown(cases, convs, args.rounds, args.threads, args.out, args.tag)
        return 0
    cases = args.cases or [c for c in DEFAULT_CASES  # ONNX Runtime: the inference cases
                           if args.backend != "onnxruntime" or CASES[c].mode == "infer"]
    run(cases, args.convs, args.strategy, args.device, args.repeats,
        args.threads, args.out, args.tag, args.sessions, args.backend, args.amp, args.dynamic_batch)
    return 0

if __name__ == "__main__":
    sys.exit(main())
