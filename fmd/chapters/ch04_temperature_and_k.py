"""Chapter 04 (FMDConv's kernel temperature and number of kernels: the paper's Figure 5).

The grids and their defaults, the configs of every sweep (:func:`sweep_configs`, which chapter 08
calls too), the tables, and the kernel-attention entropy of the trained models. The runs are
FMDConv ablation runs (:func:`fmd.profiles.ablation_config`), fetched from the run cache or trained.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from torch import Tensor

from .. import runs
from ..bnstats import change, probe_fall, values_text
from ..bnstats import probe_rows  # noqa: F401 (the notebooks' tables)
from ..data import eval_loader
from ..profiles import ablation_config, get_profile, runs_root
from ..fold import fold_kernel_attention
from ..record import ENTROPY_IMAGES, first_images
from ..train import TrainConfig, build_model, evaluate, load_trained, measure_kernel_entropy
from .common import (COLLAPSE_PP, convergence_columns, measure_latencies, provisional_bullet, span, top1,
                     worst_fall)

Record = Dict[str, Any]

# The paper's grids: initial T_k (preset "paper", T_k degraded by 3 per step) and K (preset
# "official"); the smoke profile (the tests) trains a subset of each.
TEMPERATURES = (1, 10, 34, 40, 52, 61, 100)
KERNEL_NUMS = (1, 2, 4, 8)
SMOKE_TEMPERATURES = (1, 34, 100)
SMOKE_KERNEL_NUMS = (1, 4)
REFERENCE_TEMPERATURE = 34.0  # the official preset's constant T_k: the reference run
KERNEL_NUM = 4                # K of the temperature sweep and of the reference run
GATE_TEMPERATURE = 30.0       # initial T_io of the input and output gates (annealed to 1)


def temperature_grid(profile: str) -> List[float]:
    """The initial kernel temperatures the chapter sweeps under ``profile``."""
    return list(SMOKE_TEMPERATURES if profile == "smoke" else TEMPERATURES)


def kernel_grid(profile: str) -> List[int]:
    """The numbers of kernels K the chapter sweeps under ``profile``."""
    return list(SMOKE_KERNEL_NUMS if profile == "smoke" else KERNEL_NUMS)


# ---------------------------------------------------------------------------------------------
# Configs and runs


def _config(profile: str, dataset: Optional[str], epochs: Optional[int], **overrides: Any) -> TrainConfig:
    if epochs is not None:
        overrides["epochs"] = epochs
    config = ablation_config(profile, **overrides)
    # ablation_config always takes the profile's first dataset; another one is swapped in here.
    return config if dataset is None else dataclasses.replace(config, dataset=dataset)


def reference_config(profile: str, *, kernel_temperature: float = REFERENCE_TEMPERATURE,
                     kernel_num: int = KERNEL_NUM,
                     gate_temperature: float = GATE_TEMPERATURE, epochs: Optional[int] = None, seed: int = 0,
                     dataset: Optional[str] = None) -> TrainConfig:
    """The official FMDConv ablation run: T_k fixed (preset "official"), all attentions on."""
    return _config(profile, dataset, epochs, conv="fmdconv", preset="official",
                   kernel_temperature=kernel_temperature, kernel_num=kernel_num,
                   gate_temperature=gate_temperature, seed=seed)


def temperature_configs(profile: str, temperatures: Sequence[float], *, kernel_num: int = KERNEL_NUM,
                        gate_temperature: float = GATE_TEMPERATURE, epochs: Optional[int] = None,
                        seed: int = 0,
                        dataset: Optional[str] = None) -> Dict[float, TrainConfig]:
    """One run per initial T_k with the temperature-degraded kernel attention (preset "paper")."""
    return {float(t): _config(profile, dataset, epochs, conv="fmdconv", preset="paper",
                              kernel_temperature=t, kernel_num=kernel_num,
                              gate_temperature=gate_temperature, seed=seed)
            for t in temperatures}


def kernel_configs(profile: str, kernel_nums: Sequence[int], *,
                   kernel_temperature: float = REFERENCE_TEMPERATURE,
                   gate_temperature: float = GATE_TEMPERATURE, epochs: Optional[int] = None, seed: int = 0,
                   dataset: Optional[str] = None) -> Dict[int, TrainConfig]:
    """One official-preset run per number of kernels K."""
    return {int(k): reference_config(profile, kernel_temperature=kernel_temperature, kernel_num=k,
                                     gate_temperature=gate_temperature, epochs=epochs, seed=seed,
                                     dataset=dataset)
            for k in kernel_nums}


def seed_configs(config: TrainConfig, seeds: Sequence[int]) -> Dict[int, TrainConfig]:
    """``config`` repeated with each training seed (the data subset stays fixed by ``data_seed``)."""
    return {int(s): dataclasses.replace(config, seed=int(s)) for s in seeds}


def static_config(profile: str, *, epochs: Optional[int] = None, seed: int = 0,
                  dataset: Optional[str] = None) -> TrainConfig:
    """The static ResNet at the same ablation scale (the same run chapter 05 uses)."""
    return _config(profile, dataset, epochs, conv="static", seed=seed)


def sweep_configs(profile: str, *, temperatures: Optional[Sequence[float]] = None,
                  kernel_nums: Optional[Sequence[int]] = None,
                  reference_temperature: float = REFERENCE_TEMPERATURE, kernel_num: int = KERNEL_NUM,
                  gate_temperature: float = GATE_TEMPERATURE, seeds: Optional[Sequence[int]] = None,
                  epochs: Optional[int] = None, seed: int = 0, dataset: Optional[str] = None
                  ) -> Dict[str, Any]:
    """Every run of the chapter: ``T_k`` and ``K`` sweeps, ``seeds`` of the reference, the
    ``reference`` run and the ``static`` baseline (grids and seeds: the profile's, unless given)."""
    common = dict(gate_temperature=gate_temperature, epochs=epochs, seed=seed, dataset=dataset)
    reference = reference_config(profile, kernel_temperature=reference_temperature,
                                 kernel_num=kernel_num, **common)
    return {
        "T_k": temperature_configs(profile, temperature_grid(profile)
                                   if temperatures is None else temperatures,
                                   kernel_num=kernel_num, **common),
        "K": kernel_configs(profile, kernel_grid(profile)
                            if kernel_nums is None else kernel_nums,
                            kernel_temperature=reference_temperature, **common),
        "seeds": seed_configs(reference, get_profile(profile).seeds if seeds is None else seeds),
        "reference": reference,
        "static": static_config(profile, epochs=epochs, seed=seed, dataset=dataset),
    }


def kernel_schedule_rows(configs: Mapping[float, TrainConfig], steps: int = 20000) -> List[Dict[str, Any]]:
    """Per initial T_k: the step schedule, and when (in epochs and as a share of the run) T_k hits 1."""
    rows = []
    for t, config in configs.items():
        schedule = config.schedules()["kernel"]
        grid = np.linspace(0.0, config.epochs, steps + 1)
        at_one = next((float(e) for e in grid if schedule(e) == 1.0), None)
        rows.append({"T_k start": t, "schedule": f"{type(schedule).__name__}(−{schedule.step:g} "
                                                 f"every {schedule.every:g} epochs)",
                     "T_k reaches 1 at epoch": None if at_one is None else round(at_one, 3),
                     "share of the run at T_k > 1 (%)": (None if at_one is None else
                                                         round(100 * at_one / config.epochs, 1))})
    return rows


# ---------------------------------------------------------------------------------------------
# Tables


def sweep_rows(sweeps: Mapping[str, Mapping[Hashable, Mapping[str, Any]]], scale_gain: Optional[float] = None
               ) -> List[Dict[str, Any]]:
    """One row per run of each named sweep: its knobs, accuracy, final T_k, size, wall time and
    its convergence columns (:func:`fmd.chapters.common.convergence_columns`; ``scale_gain``: the
    largest gain of the runs that showed the sweeps' scale finished, :func:`ch03.scale_gain`)."""
    rows = []
    for sweep, records in sweeps.items():
        for r in records.values():
            c = r["config"]
            rows.append({"sweep": sweep, "preset": c["preset"], "T_k start": c["kernel_temperature"],
                         "K": c["kernel_num"], "seed": c["seed"],
                         "top-1 (%)": round(r["final"]["test_top1"], 2),
                         "top-5 (%)": round(r["final"]["test_top5"], 2),
                         "best top-1 (%)": round(r["best_test_top1"], 2),
                         "final T_k": r["history"][-1]["temperatures"].get("kernel"),
                         "params": r["params"], "MACs": r["macs"],
                         "wall time (s)": round(r["wall_time_s"]),
                         **convergence_columns([r], scale_gain=scale_gain),
                         "run": r["name"]})
    return rows


def seed_spread(records: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """Mean and range (max − min) of top-1 and top-5 over runs that differ only in the seed."""
    out: Dict[str, float] = {"runs": len(records)}
    for metric in ("test_top1", "test_top5"):
        values = [r["final"][metric] for r in records]
        out[f"{metric} mean"] = float(np.mean(values))
        out[f"{metric} range"] = float(np.max(values) - np.min(values))
    return out


# ---------------------------------------------------------------------------------------------
# What the kernel attention of a trained model does


def test_images(config: TrainConfig, count: int = ENTROPY_IMAGES) -> Tensor:
    """The first ``count`` test images of the config's dataset, transformed as the run's test loader."""
    return first_images(eval_loader(config), count)


def with_kernel_entropy(configs: Mapping[Hashable, TrainConfig], records: Mapping[Hashable, Record],
                        profile: str) -> Dict[Hashable, Record]:
    """The records of ``configs``, each FMDConv run with a kernel attention carrying the entropy of
    that attention (measured when the run finished). A record written before training recorded it
    gets it once, from the trained model: loaded from its checkpoint, or trained again."""
    out = {}
    for name, config in configs.items():
        record = records[name]
        if (config.conv == "fmdconv" and "kernel" in config.attentions and config.kernel_num > 1
                and "kernel_entropy" not in record):  # one kernel: its attention is constant
            model, record = load_trained(config, runs_root(profile))
            if "kernel_entropy" not in record:  # the weights were here: measure them now, keep it
                record = {**record, "kernel_entropy": measure_kernel_entropy(model, test_images(config))}
                runs.write_record(record, runs_root(profile))
        out[name] = record
    return out


def entropy_rows(records: Mapping[Hashable, Record], group: str) -> List[Dict[str, Any]]:
    """Kernel-attention entropy per layer of each run, read from its record."""
    rows = []
    for name, record in records.items():
        if "kernel_entropy" not in record:
            continue
        c = record["config"]
        for layer, entropy in record["kernel_entropy"]["nats"].items():
            rows.append({"group": group, "run": name, "preset": c["preset"],
                         "T_k start": c["kernel_temperature"],
                         "T_k final": record["history"][-1]["temperatures"].get("kernel"),
                         "K": c["kernel_num"], "layer": layer, "entropy (nats)": entropy,
                         "entropy / ln K": entropy / math.log(c["kernel_num"])
                         if c["kernel_num"] > 1 else None})
    return rows


# ---------------------------------------------------------------------------------------------
# Readings: the prose under the tables, written from the records so that it cannot contradict them


def figure5_reading(temperature_records: Mapping[float, Record], kernel_records: Mapping[int, Record],
                    reference_record: Record, static_record: Optional[Record],
                    seed_range: Optional[float], scale_gain: Optional[float] = None) -> str:
    """What Figure 5 shows, in Markdown: the sweeps' ranges, whether the coolest starts are the
    lowest, the constant against the degraded T_k, the best and worst K, and which gaps exceed the
    range between seeds of the reference run (``seed_range``, in pp; None without seeds); which runs
    are not shown finished (``scale_gain``: the largest gain of the runs chapter 03's check runs
    showed finished at this scale)."""
    run = f"{reference_record['config']['dataset']}, {reference_record['config']['epochs']} epochs"
    lines = [f"**Reading Figure 5** ({run}, one seed per point; every number below is read from "
             "the run records):", ""]
    fmd_top = [top1(r) for r in (*temperature_records.values(), *kernel_records.values())]
    static_text = "" if static_record is None else \
        f"; the static network trained the same way reaches {top1(static_record):.2f}%"
    lines.append(f"* Every FMDConv run of both sweeps ends at {span(fmd_top)} top-1{static_text}.")
    by_t = sorted(temperature_records.items())
    if len(by_t) >= 3:
        ranked = sorted(by_t, key=lambda item: top1(item[1]))
        coolest = {t for t, _ in by_t[:2]}
        lowest = {t for t, _ in ranked[:2]}
        hot = [top1(r) for t, r in by_t if t >= REFERENCE_TEMPERATURE]
        verdict = "are" if coolest == lowest else "are not"
        lines.append(
            f"* **Initial $T_k$ (preset `paper`).** The two coolest starts "
            f"({', '.join(f'{t:g}' for t, _ in by_t[:2])}: "
            f"{', '.join(f'{top1(r):.2f}%' for _, r in by_t[:2])}) {verdict} the two lowest of the sweep; "
            f"the starts from {REFERENCE_TEMPERATURE:g} up span {span(hot)} "
            f"({max(hot) - min(hot):.2f} pp). The best start is $T_k$ = {ranked[-1][0]:g} "
            f"({top1(ranked[-1][1]):.2f}%).")
    degraded = temperature_records.get(float(reference_record["config"]["kernel_temperature"]))
    if degraded is not None:
        lines.append(f"* **Constant $T_k$ = {reference_record['config']['kernel_temperature']:g} "
                     f"(official) against the degraded one from the same start (paper):** "
                     f"{top1(reference_record):.2f}% against {top1(degraded):.2f}%, "
                     f"{abs(top1(reference_record) - top1(degraded)):.2f} pp apart.")
    by_k = sorted(kernel_records.items())
    if len(by_k) >= 2:
        best = max(by_k, key=lambda item: top1(item[1]))
        worst = min(by_k, key=lambda item: top1(item[1]))
        lines.append(f"* **$K$ (preset `official`).** "
                     f"{', '.join(f'{top1(r):.2f}%' for _, r in by_k)} for $K$ = "
                     f"{', '.join(str(k) for k, _ in by_k)}: $K$ = {best[0]} is the best and "
                     f"$K$ = {worst[0]} the worst.")
    top5 = [r["final"]["test_top5"] for r in (*temperature_records.values(), *kernel_records.values())]
    lines.append(f"* **Top-5** spans {span(top5)} over the same runs.")
    lines += provisional_bullet([{"run": f"{what} = {v:g}", **convergence_columns([r], scale_gain=scale_gain)}
                                 for what, sweep in (("$T_k$", by_t), ("$K$", by_k)) for v, r in sweep
                                 if "history" in r], "run")
    if seed_range is not None:
        # Both sweeps get the same check: a gap no larger than the seed range ranks nothing.
        counts = []
        for sweep, between in ((by_t, "neighbouring initial temperatures"), (by_k, "neighbouring $K$")):
            gaps = [abs(top1(a) - top1(b)) for (_, a), (_, b) in zip(sweep, sweep[1:])]
            if gaps:
                within = sum(g <= seed_range for g in gaps)
                counts.append(f"{within} of the {len(gaps)} gaps between {between}")
        text = f"The seeds of the reference run span {seed_range:.2f} pp (section 4)"
        if counts:
            text += ". No larger than that: " + " and ".join(counts)
        if len(by_k) >= 2:
            gap = top1(best[1]) - top1(worst[1])
            text += (f"; the best and the worst $K$ are {gap:.2f} pp apart, "
                     + ("beyond it" if gap > seed_range else "within it: these runs do not rank $K$"))
        lines += ["", text + ". A range over a few seeds is a lower bound of the noise, not a confidence "
                      "interval: a gap a few times larger can still be chance."]
    return "\n".join(lines)


def entropy_reading(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the kernel-attention entropies say, in Markdown, from :func:`entropy_rows`."""
    if not rows:
        return "No run record here carries kernel-attention entropies."
    per_run: Dict[tuple, List[float]] = {}
    for r in rows:
        if r["entropy / ln K"] is not None:
            run = (r["preset"], r["T_k start"], r["K"], r["run"])
            per_run.setdefault(run, []).append(r["entropy / ln K"])
    official = {k: v for k, v in per_run.items() if k[0] == "official"}
    paper = {k: v for k, v in per_run.items() if k[0] == "paper"}
    lines = ["**Reading the entropies** (mean over the test images of $H(\\pi)/\\ln K$, per layer):", ""]
    if official:
        values = [x for v in official.values() for x in v]
        ks = sorted({k[2] for k in official})
        uniform = min(values) >= 0.9995
        lines.append(f"* Preset `official` (constant $T_k$), $K$ = {', '.join(map(str, ks))}: every layer "
                     f"of every model lies at {span(values, '', 3)} of $\\ln K$"
                     + (" — the kernel softmax is uniform to three decimals: each layer convolves every "
                        "image with the mean of its kernels, plus its input and output gates."
                        if uniform else "."))
    if paper:
        means = {k: sum(v) / len(v) for k, v in paper.items()}
        sharpest = min(means, key=means.get)
        lines.append(f"* Preset `paper` (degraded $T_k$, ending at 1): model means span "
                     f"{span(list(means.values()), '', 3)}; the most selective is the run starting at "
                     f"$T_k$ = {sharpest[1]:g} (mean {means[sharpest]:.3f}, lowest layer "
                     f"{min(paper[sharpest]):.3f}).")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Folding the kernel attention of the trained reference run (fmd.fold)


def folding_rows(reference: TrainConfig, static: TrainConfig, profile: str, *,
                 fold_images: int = ENTROPY_IMAGES, **latency: Any) -> List[Dict[str, Any]]:
    """The trained reference run, the same network with each layer's kernel attention folded into
    its mean mix over the first ``fold_images`` training images, and the static network: params,
    test top-1 / top-5 and batch-1 latency (``latency`` goes to :func:`.common.measure_latencies`)."""
    root = runs_root(profile)
    model, record = load_trained(reference, root)
    folded = fold_kernel_attention(model, first_images(eval_loader(reference, "train"), fold_images))
    static_model = build_model(static, record["num_classes"], record["input_size"][1]).eval()
    models = {"static (architecture)": static_model, "FMDConv": model, "FMDConv, folded": folded}
    times = measure_latencies(models, record["input_size"], **latency)
    test = eval_loader(reference)
    rows = []
    for name, m in models.items():
        scores = evaluate(m, test) if m is not static_model else None
        rows.append({"model": name, "params": sum(p.numel() for p in m.parameters()),
                     "top-1 (%)": None if scores is None else round(scores["top1"], 2),
                     "top-5 (%)": None if scores is None else round(scores["top5"], 2),
                     "latency ms (b=1)": round(times[name]["median_ms"], 3),
                     "× static": round(times[name]["median_ms"] / times[next(iter(models))]["median_ms"], 3)})
    return rows


def folding_reading(rows: Sequence[Mapping[str, Any]], seed_range: Optional[float]) -> str:
    """What folding did, in Markdown, from :func:`folding_rows`, against the seed range (pp)."""
    dynamic, folded = (next(r for r in rows if r["model"] == m) for m in ("FMDConv", "FMDConv, folded"))
    change = folded["top-1 (%)"] - dynamic["top-1 (%)"]
    within = seed_range is not None and abs(change) <= seed_range
    verdict = ("within" if within else "outside") + (
        f" the {seed_range:.2f} pp range of this run's seeds" if seed_range is not None
        else " a seed range (none was measured)")
    return (f"**Reading.** Folding changes test top-1 by {change:+.2f} pp ({dynamic['top-1 (%)']:.2f}% → "
            f"{folded['top-1 (%)']:.2f}%), {verdict}. It keeps {folded['params'] / dynamic['params']:.0%} "
            f"of the parameters, and batch-1 latency goes from {dynamic['× static']:.2f}× to "
            f"{folded['× static']:.2f}× the static network's (measured in interleaved rounds in this run). "
            + ("At this scale a trained FMDConv can be deployed as a static network with two gates per "
               "layer: `fmd.fold.fold_kernel_attention`." if within else
               "At this scale folding costs accuracy beyond the seed noise: the per-sample mix matters."))


# ---------------------------------------------------------------------------------------------
# The fall at the end of the anneal: the network, or BatchNorm's running statistics?


def fall_probe(config: TrainConfig, record: Record, profile: str, *,
               progress: bool = False) -> Optional[Dict[str, Any]]:
    """The BatchNorm probe (:func:`fmd.bnstats.probe_fall`) of the run's worst fall: the epochs before,
    at and after it; None where the run never fell by more than :data:`.common.COLLAPSE_PP`."""
    fall, epoch = worst_fall(record["history"])
    if epoch is None or fall <= COLLAPSE_PP:
        return None
    epochs = [e for e in (epoch - 1, epoch, epoch + 1) if 1 <= e <= config.epochs]
    return probe_fall(config, record, epochs, runs_root(profile), progress=progress)


# The columns of a probe's table (ch04.probe_rows), in chapters 04 and 08
PROBE_COLUMNS = ["epoch", "temperatures", "record top-1", "trained top-1", "trained loss",
                 "re-estimated top-1", "re-estimated loss", "change (pp)"]
# A fall that re-estimating BatchNorm's statistics brings back to within this many pp of the best probed
# epoch before it (re-estimated the same way) is called BatchNorm's; a larger rest, only partly so.
RECOVERED_PP = 1.0


def _kept_over(before: Optional[Mapping[str, Any]], at: Mapping[str, Any]) -> str:
    """' (running averages kept while the gate temperature went from … to …)', naming the roles
    whose temperatures changed between the two rows ('' where none did)."""
    if before is None:
        return ""
    changed = [f"the {role} temperature went from {values_text(before['temperatures'][role])} "
               f"to {values_text(values)}"
               for role, values in at["temperatures"].items() if before["temperatures"].get(role) != values]
    return f" (running averages kept while {' and '.join(changed)})" if changed else ""


def _retrained_fall(rows: Mapping[int, Mapping[str, Any]], epoch: int) -> Tuple[float, Optional[int]]:
    """How far the retraining's test top-1 at ``epoch`` lies below its best probed epoch before it,
    and that epoch (0.0 and None where none was probed before)."""
    before = [r for e, r in rows.items() if e < epoch]
    if not before:
        return 0.0, None
    best = max(before, key=lambda r: r["trained top-1"])
    return best["trained top-1"] - rows[epoch]["trained top-1"], best["epoch"]


def fall_probe_reading(probe: Mapping[str, Any], fall_epoch: int) -> str:
    """What the probe shows, in Markdown: whether the retrained run falls at ``fall_epoch`` too (or,
    where it does not, at another probed epoch: a run that falls apart need not repeat its collapse
    epoch for epoch), how much of that fall re-estimating BatchNorm's statistics recovers, and whether
    what remains is within :data:`RECOVERED_PP` of the best probed epoch before it (re-estimated the
    same way)."""
    rows = {r["epoch"]: r for r in probe["rows"]}
    if fall_epoch not in rows:
        raise ValueError(f"the probe has epochs {sorted(rows)}, not the fall's epoch {fall_epoch}")
    fall, best_epoch = _retrained_fall(rows, fall_epoch)
    if best_epoch is None:
        return f"**Reading.** The probe has no epoch before the fall (epoch {fall_epoch}) to compare it with."
    at = rows[fall_epoch]
    head = (f"**Reading.** Retrained ({probe['device']}), the run scores {at['trained top-1']:.2f}% test "
            f"top-1 at epoch {fall_epoch} against {rows[best_epoch]['trained top-1']:.2f}% at epoch "
            f"{best_epoch} (its record: {at['record top-1']:.2f}% at epoch {fall_epoch}).")
    epoch = fall_epoch
    if fall <= COLLAPSE_PP:
        elsewhere = {e: _retrained_fall(rows, e) for e in rows if e != fall_epoch}
        elsewhere = {e: f for e, f in elsewhere.items() if f[0] > COLLAPSE_PP}
        if not elsewhere:
            return head + (f" It does not fall by more than {COLLAPSE_PP:g} pp this time: the probe cannot "
                           "test the fall." + _strategies_sentence(rows.values()))
        epoch = max(elsewhere, key=lambda e: elsewhere[e][0])
        fall, best_epoch = elsewhere[epoch]
        at = rows[epoch]
        head += (f" It does not fall there this time but at epoch {epoch}: {at['trained top-1']:.2f}% "
                 f"against {rows[best_epoch]['trained top-1']:.2f}% at epoch {best_epoch} (its record: "
                 f"{at['record top-1']:.2f}%); the collapse of this run is not repeated epoch for epoch, "
                 f"and the fall read below is the retraining's.")
    before = [r for e, r in rows.items() if e < epoch]
    recovered = change(at)
    best_fixed = max(before, key=lambda r: r["re-estimated top-1"])
    left = best_fixed["re-estimated top-1"] - at["re-estimated top-1"]
    text = (head + f" With every BatchNorm's statistics re-estimated at the same weights it scores "
            f"{at['re-estimated top-1']:.2f}% ({recovered:+.2f} pp), against "
            f"{best_fixed['re-estimated top-1']:.2f}% at epoch {best_fixed['epoch']} re-estimated the same "
            f"way: {max(left, 0.0):.2f} pp of the "
            f"{fall:.2f} pp fall remain. ")
    if left <= RECOVERED_PP:
        text += (f"That is within {RECOVERED_PP:g} pp: the fall is BatchNorm's running statistics"
                 f"{_kept_over(rows.get(epoch - 1), at)}, not weights that lost what they had learned.")
    elif recovered > 0:
        text += (f"Re-estimating recovers {'most' if recovered > left else 'part'} of the fall: BatchNorm's "
                 f"statistics explain it in part, and the {left:.2f} pp that remain they do not explain.")
    else:
        text += "Re-estimating does not recover it: the fall is not BatchNorm's statistics."
    others = [r for e, r in rows.items() if e != epoch]
    if others:
        moved = max(abs(change(r)) for r in others)
        text += (f" At the other probed epoch{'s' if len(others) > 1 else ''} "
                 f"({', '.join(str(r['epoch']) for r in others)}) re-estimating moved the test top-1 by at "
                 f"most {moved:.2f} pp.")
    return text + _strategies_sentence(rows.values())


def _strategies_sentence(rows: Iterable[Mapping[str, Any]]) -> str:
    """Whether the probe's retraining computed with the run's engine strategies (nothing where a row
    does not say: a probe made before they were kept, or a record that names none)."""
    rows = list(rows)
    if not rows or any("strategies as run" not in r for r in rows):
        return ""
    other = [str(r["epoch"]) for r in rows if not r["strategies as run"]]
    if not other:
        return " The retraining computed with the run's own engine strategies at every probed epoch."
    return (f" At epoch{'s' if len(other) > 1 else ''} {', '.join(other)} the retraining computed with other "
            "engine strategies than the run (they agree to about 1e-6, not bit for bit).")
