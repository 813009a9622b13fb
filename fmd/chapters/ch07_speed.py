"""Chapter 07 (speed: dynamic against static convolution): strategies, their timing, the benchmark tables.

The benchmark tables come from :mod:`fmd.bench` (``figures/bench_<device><tag>.json``, one row per
case and conv, each with the machine it ran on); the strategy tables are read from the layers'
``last_strategy`` after a forward pass. Nothing here types in a timing.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..conv import CONVS, DynamicConv2dBase, make_conv
from ..engine import STRATEGIES, applicable_strategies, choose_strategy
from ..models import ResNet
from ..labels import backend_label, machine_label, variant
from ..timing import interleaved_times


Config = Tuple[str, Dict[str, Any]]  # (registered conv name, conv_options)


def strategy_configs(kernel_num: int = 4, condconv_experts: int = 8) -> Dict[str, Config]:
    """The dynamic convs of the chapter, plus FMDConv without kernel attention (the shared path)."""
    counts = {"condconv": condconv_experts, "dyconv": kernel_num, "odconv": kernel_num,
              "fmdconv": kernel_num}
    configs = {conv: (conv, CONVS[conv].kernel_options(k)) for conv, k in counts.items()}
    configs["fmdconv, no kernel att."] = ("fmdconv", {**configs["fmdconv"][1],
                                                      "attentions": ("input", "output")})
    return configs


# ---------------------------------------------------------------------------------------------
# Which strategy each layer can use and picks


def applicable_rows(configs: Mapping[str, Config], channels: int = 16) -> List[Dict[str, Any]]:
    """Per conv: the attentions it computes and the strategies that compute it exactly."""
    rows = []
    x = torch.randn(2, channels, 8, 8)
    for name, (conv, options) in configs.items():
        layer = make_conv(conv, channels, channels, 3, 1, 1, bias=False, **options).eval()
        with torch.no_grad():
            att = layer.attend(x)
        rows.append({"conv": name,
                     "attentions": "+".join(k for k in ("input", "kernel", "spatial", "output")
                                            if getattr(att, k) is not None),
                     "applicable strategies": ", ".join(applicable_strategies(att, layer.geometry)),
                     "auto at batch 1": choose_strategy(x[:1], layer.weight, att, layer.geometry),
                     "auto at batch 2, 8×8 map": choose_strategy(x, layer.weight, att,
                                                                 layer.geometry)})
    return rows


def strategy_rows(configs: Mapping[str, Config], batches: Sequence[int] = (1, 128),
                  depth: int = 18, stem: str = "cifar", size: int = 32, width: int = 64,
                  num_classes: int = 100, train: bool = True) -> List[Dict[str, Any]]:
    """One row per dynamic layer of a ResNet: its output map and the strategy each conv picks.

    The models live on PyTorch's meta device (shapes, no storage): ``choose_strategy`` reads only
    shapes, so a batch-128 training forward costs nothing here.
    """
    picks: Dict[str, Dict[int, Dict[str, str]]] = {}
    shapes: Dict[str, str] = {}
    for name, (conv, options) in configs.items():
        with torch.device("meta"):
            model = ResNet(depth, conv, num_classes, stem, width, **options)
        model.train(train)
        picks[name] = {}
        for batch in batches:
            hooks = []

            def keep_shape(module: nn.Module, inputs: Any, output: torch.Tensor, name: str) -> None:
                shapes.setdefault(name, tuple(output.shape[1:]))

            for layer_name, m in model.named_modules():
                if isinstance(m, DynamicConv2dBase):
                    hooks.append(m.register_forward_hook(
                        lambda mod, inp, out, n=layer_name: keep_shape(mod, inp, out, n)))
            with torch.set_grad_enabled(train):
                model(torch.empty(batch, 3, size, size, device="meta"))
            for h in hooks:
                h.remove()
            picks[name][batch] = {n: m.last_strategy for n, m in model.named_modules()
                                  if isinstance(m, DynamicConv2dBase)}
    rows = []
    for layer_name, (c, h, w) in shapes.items():
        row: Dict[str, Any] = {"layer": layer_name, "output": f"{c}×{h}×{w}",
                               "positions": h * w}
        for name in configs:
            row[name] = " / ".join(picks[name][b][layer_name] for b in batches)
        rows.append(row)
    return rows


def strategy_timing_rows(config: Config, stages: Sequence[Tuple[int, int]], batch: int = 32,
                         repeats: int = 5, warmup: int = 1, seed: int = 0,
                         threads: Optional[int] = None, rounds: int = 3) -> List[Dict[str, Any]]:
    """Time one training step (forward + backward) of a C→C 3×3 layer with each strategy.

    ``stages`` lists (channels, map size) pairs, e.g. the four stages of a CIFAR ResNet-18. Each
    dynamic strategy is timed beside a static ``nn.Conv2d`` of the same shape, in the same call,
    in ``rounds`` interleaved rounds (static, then each strategy) of ``repeats`` timings: a burst of
    load on a shared machine then hits one round of every layer rather than all of one layer. A
    layer's time is the median of its round medians.
    """
    conv, options = config
    rows = []
    for channels, size in stages:
        torch.manual_seed(seed)
        x = torch.randn(batch, channels, size, size)
        static = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        probe = make_conv(conv, channels, channels, 3, 1, 1, bias=False, **options)
        with torch.no_grad():
            att = probe.attend(x)
        auto = choose_strategy(x, probe.weight, att, probe.geometry)
        candidates = [s for s in STRATEGIES[1:]
                      if s in applicable_strategies(att, probe.geometry, x, probe.weight)]

        def step(layer: nn.Module, x: torch.Tensor = x) -> None:
            layer.zero_grad(set_to_none=True)
            layer(x).square().mean().backward()

        layers = {"static": static}
        layers.update({strategy: make_conv(conv, channels, channels, 3, 1, 1, bias=False,
                                           strategy=strategy, **options).train()
                       for strategy in candidates})
        times = interleaved_times({name: partial(step, layer) for name, layer in layers.items()},
                                  rounds=rounds, repeats=repeats, warmup=warmup, threads=threads)
        base = times["static"].median
        for strategy in candidates:
            median = times[strategy].median
            rows.append({"channels": channels, "map": f"{size}×{size}", "positions": size * size,
                         "batch": batch, "strategy": strategy, "auto picks": auto == strategy,
                         "static ms": 1e3 * base, "dynamic ms": 1e3 * median,
                         "time ×static": median / base})
    return rows


# ---------------------------------------------------------------------------------------------
# Benchmark tables


def load_bench_tables(folders: Iterable[Path], pattern: str = "bench_*.json",
                      backend: Optional[str] = "eager") -> Dict[str, List[Dict[str, Any]]]:
    """Every ``pattern`` file in ``folders`` (each file once), keyed by its file name; only the
    tables measured on ``backend`` (:func:`fmd.labels.backend_label`; None: all)."""
    tables: Dict[str, List[Dict[str, Any]]] = {}
    seen = set()
    for folder in folders:
        for path in sorted(Path(folder).glob(pattern)):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            rows = json.loads(path.read_text())
            if rows and (backend is None or backend_label(rows[0]) == backend):
                tables[path.name] = rows
    return tables


def load_breakdown_tables(folders: Iterable[Path]) -> Dict[str, List[Dict[str, Any]]]:
    """Every batch-1 ``breakdown_cpu*.json`` that ``python -m fmd.bench --breakdown`` wrote in
    ``folders`` (the training cases' per-layer tables are ``breakdown_train_cpu*``)."""
    return load_bench_tables(folders, "breakdown_cpu*.json")


def bench_rows(tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """All tables' rows flattened for printing and saving, with their file and machine."""
    rows = []
    for name, table in tables.items():
        for r in table:
            rows.append({"table": name, "machine": machine_label(table), "case": r["name"],
                         "conv": variant(r), "median ms": 1e3 * r["median_s"],
                         "time ×static": r["time_ratio"], "peak MB": r["peak_mb"],
                         "memory ×static": r["memory_ratio"], "strategies": r["strategies"]})
    return rows


def breakdown_rows(tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """All breakdown tables' rows, rounded for printing and saving, with their file."""
    return [{"table": name, "case": r["name"], "conv": r["conv"],
             "static ms": round(r["static_ms"], 1), "dynamic ms": round(r["dynamic_ms"], 1),
             "time ×static": round(r["time_ratio"], 2), "mix ×": round(r["mix_x"], 2),
             "attention ×": round(r["attention_x"], 2), "rest ×": round(r["rest_x"], 2),
             "bank MB": round(r["bank_mb"]), "mix GB/s": round(r["mix_gb_s"], 1),
             "read GB/s": round(r["read_gb_s"], 1), "floor ×": round(r["floor_ratio"], 2)}
            for name, table in tables.items() for r in table]


def load_train_breakdown_tables(folders: Iterable[Path]) -> Dict[str, List[Dict[str, Any]]]:
    """Every per-layer training table (``breakdown_train_cpu*.json``) that ``python -m fmd.bench
    --breakdown`` wrote in ``folders`` for a training case."""
    return load_bench_tables(folders, "breakdown_train_cpu*.json")


def train_breakdown_rows(tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """The per-layer training rows, grouped by the positions each layer's output has per sample:
    the layers' static time, and × that time for the attention branches alone and the whole layer
    with ``auto``'s and with the fastest strategy, beside the arithmetic of a per-sample mix."""
    from ..breakdown import static_weighted

    out = []
    for name, table in tables.items():
        groups: Dict[tuple, List[Mapping[str, Any]]] = {}
        for r in table:
            if r["layer"] != "all":
                groups.setdefault((r["name"], r["conv"], r["positions"]), []).append(r)
        for (case, conv, positions), rows in groups.items():
            static = sum(r["static_ms"] for r in rows)
            out.append({"table": name, "machine": machine_label(table), "case": case, "conv": conv,
                        "output positions": positions, "layers": len(rows),
                        "static ms": round(static, 1), "mix MACs ×": round(rows[0]["mix_macs_x"], 2),
                        **{label: round(static_weighted(rows, key), 2)
                           for label, key in (("attention ×", "attention_x"), ("auto ×", "auto_x"),
                                              ("best ×", "best_x"))},
                        "fastest": ", ".join(sorted({r["best"] for r in rows}))})
    return out


def train_breakdown_reading(rows: Sequence[Mapping[str, Any]]) -> str:
    """Where a dynamic training step's time goes by map size, from :func:`train_breakdown_rows`."""
    if not rows:
        return "No per-layer training table is stored here."
    lines = ["**Reading the per-layer table** (each layer's forward + backward, × a static convolution "
             "of its shape timed in the same rounds):", ""]
    for r in rows:
        lines.append(f"* {r['case']}, {r['conv']}, {r['layers']} layer(s) with {r['output positions']} "
                     f"output positions per sample: ×{r['best ×']:.2f} with the fastest strategy "
                     f"({r['fastest']}), ×{r['auto ×']:.2f} with `auto`, against ×{r['mix MACs ×']:.2f} "
                     f"the arithmetic of a per-sample mix; the attention branches alone "
                     f"×{r['attention ×']:.2f}.")
    return "\n".join(lines)


# Issue 24's targets for the quick recipe's training step: a dynamic network's time ratio to
# static within this multiple of its MAC ratio; at CIFAR width 64, batch 128: this time ratio.
TRAINING_TARGETS = {"fmdconv": 1.1, "odconv": 1.25}
CIFAR_TRAINING_CASE = "r18-cifar-b128-train"
CIFAR_TRAINING_TARGETS = {"fmdconv": 2.0}


def training_speed_rows(tables: Mapping[str, Sequence[Mapping[str, Any]]],
                        cases: Sequence[str]) -> List[Dict[str, Any]]:
    """The training-step rows of ``cases`` in every table: time and memory against static, the
    MAC ratio of the same network, the table's machine and issue 24's target for the row (None
    where it sets none)."""
    from ..bench import CASES
    from ..complexity import count_macs

    macs: Dict[Tuple[str, str], int] = {}
    rows = []
    for name, table in tables.items():
        for r in table:
            if r["name"] not in cases or r["mode"] != "train":
                continue
            case = CASES[r["name"]]
            for conv in ("static", r["conv"]):
                if (r["name"], conv) not in macs:
                    model = ResNet(case.depth, conv, case.num_classes, case.stem, case.width, case.channels)
                    macs[r["name"], conv] = count_macs(model, (1, case.channels, case.size, case.size))
            mac_ratio = macs[r["name"], r["conv"]] / macs[r["name"], "static"]
            rows.append({"table": name, "machine": machine_label(table), "threads": r["threads"],
                         "case": r["name"], "conv": r["conv"], "strategy": r["strategy_forced"],
                         "backend": backend_label(r), "median ms": round(1e3 * r["median_s"], 1),
                         "time ×static": round(r["time_ratio"], 2),
                         "MACs ×static": round(mac_ratio, 2),
                         "memory ×static": round(r["memory_ratio"], 2),
                         "target ×static": _training_target(r["name"], r["conv"], mac_ratio),
                         "strategies": r["strategies"]})
    return [r for r in rows if r["conv"] != "static"]


def _training_target(case: str, conv: str, mac_ratio: float) -> Optional[float]:
    if case == CIFAR_TRAINING_CASE:
        return CIFAR_TRAINING_TARGETS.get(conv)
    factor = TRAINING_TARGETS.get(conv)
    return None if factor is None else round(factor * mac_ratio, 2)


def training_speed_reading(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the training-speed table says against issue 24's targets, and each conv's step before
    (strategy ``auto``) → after (``tune``, the training default) where one table has both, from
    :func:`training_speed_rows`."""
    if not rows:
        return "No benchmark table here has the quick recipe's training step."
    lines = ["**Reading the training-step table** (each ratio is a median over interleaved rounds "
             "against the static network timed in the same run, on the machine its table names):", ""]
    for r in rows:
        target = r["target ×static"]
        verdict = "" if target is None else (
            f"; the target ×{target:.2f} is " + ("met" if r["time ×static"] <= target else "not met"))
        lines.append(f"* {r['case']}, {r['conv']} with strategy `{r['strategy']}` ({r['strategies']}), "
                     f"{r['backend']}: "
                     f"×{r['time ×static']:.2f} the static step's time at ×{r['MACs ×static']:.2f} its "
                     f"MACs, memory ×{r['memory ×static']:.2f}{verdict}.")
    pairs = {}
    for r in rows:
        pairs.setdefault((r["table"], r["case"], r["conv"], r["backend"]), {})[r["strategy"]] = \
            r["time ×static"]
    moved = [f"{case} {conv} ({backend}) ×{p['auto']:.2f} → ×{p['tune']:.2f}"
             for (_, case, conv, backend), p in pairs.items() if {"auto", "tune"} <= set(p)]
    if moved:
        lines += ["", "Before → after (`auto`, the rule, → `tune`, timed on the first step): "
                  + "; ".join(moved) + "."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Backends


def backend_options(name: str) -> Dict[str, Any]:
    """A backend as the chapter names it ("eager", "compile bf16", "onnxruntime dynamic", …) → the
    keywords of :func:`fmd.bench.run`."""
    words = name.split()
    options: Dict[str, Any] = {"backend": words[0], "amp": None, "dynamic_batch": False}
    for word in words[1:]:
        if word == "dynamic":
            options["dynamic_batch"] = True
        else:
            options["amp"] = word
    return options


def backend_rows(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Benchmark rows of several backends (one case) side by side: per backend and dynamic conv,
    the static and dynamic milliseconds, their ratio, and the output's largest difference from
    eager fp32 (relative to the largest output; of the static and the dynamic network)."""
    found = []
    for r in rows:
        if r["conv"] == "static":
            continue
        static = next(s for s in rows if s["conv"] == "static" and s["name"] == r["name"]
                      and backend_label(s) == backend_label(r))
        found.append({"backend": backend_label(r), "case": r["name"], "batch": r["batch"],
                      "conv": variant(r), "static ms": round(1e3 * static["median_s"], 2),
                      "ms": round(1e3 * r["median_s"], 2), "time ×static": round(r["time_ratio"], 2),
                      "output diff": float(f"{max(r['output_rel_diff'], static['output_rel_diff']):.2g}"),
                      "strategies": r["strategies"]})
    return found


# ---------------------------------------------------------------------------------------------
# Readings: the prose under the tables, written from their rows


def breakdown_reading(rows: Sequence[Mapping[str, Any]], conv: str = "fmdconv") -> str:
    """What each breakdown table says for ``conv``, in Markdown, from :func:`breakdown_rows`."""
    mine = [r for r in rows if r["conv"] == conv]
    if not mine:
        return f"No breakdown table here has a {conv} row."
    lines = [f"**Reading the breakdown tables** ({conv}; each table was measured in one process, in "
             "interleaved rounds, on the machine its file names):", ""]
    for r in mine:
        lines.append(f"* `{r['table']}`, {r['case']}: ×{r['time ×static']:.2f} = 1 + mix {r['mix ×']:.2f} "
                     f"+ attention {r['attention ×']:.2f} + rest {r['rest ×']:.2f}; one read of the "
                     f"{r['bank MB']} MB of kernel banks at {r['read GB/s']:.1f} GB/s sets the floor at "
                     f"×{r['floor ×']:.2f}; the mix as computed streams them at {r['mix GB/s']:.1f} GB/s.")
    lines += ["", "So an exact batch-1 forward that mixes its kernels cannot come below its floor even "
                  "with free attention branches and no glue; only a kernel that mixes and convolves in "
                  "one pass, hiding the bank read under the convolution's arithmetic, could go lower."]
    return "\n".join(lines)


def backends_reading(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the backends table says, in Markdown, from :func:`backend_rows`."""
    if not rows:
        return "No backend was timed in this run."
    lines = ["**Reading the backends table** (ratios within one backend, interleaved rounds; absolute "
             "times move with the load of the machine):", ""]
    eager = {(r["case"], r["conv"]): r["time ×static"] for r in rows if r["backend"] == "eager"}
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == backend]
        parts = []
        for r in mine:
            base = eager.get((r["case"], r["conv"]))
            versus = "" if base is None or backend == "eager" else \
                (" (at or below eager's)" if r["time ×static"] <= base else f" (eager: ×{base:.2f})")
            parts.append(f"{r['conv']} ×{r['time ×static']:.2f}{versus}")
        diff = max(r["output diff"] for r in mine)
        lines.append(f"* {backend}: " + ", ".join(parts) + f"; outputs within {diff:.2g} of eager fp32's "
                     "(relative to the largest output); strategies: "
                     + ", ".join(sorted({s for r in mine for s in str(r['strategies']).split(', ')})) + ".")
    return "\n".join(lines)
