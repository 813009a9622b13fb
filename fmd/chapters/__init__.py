"""The experiments, one module per notebook chapter: configs, grids with their defaults, runs, table rows.

``fmd/chapters/chNN_<chapter>.py`` defines what ``notebooks/NN_<chapter>.ipynb`` runs; its figures are
drawn by ``fmd/plots/chNN_<chapter>.py``. Imports go one way: notebooks → fmd.chapters →
(fmd.plots for drawing; fmd.train, fmd.models, fmd.conv, … for the work). A chapter that reuses
another's runs calls that chapter's definition (chapter 08 asks ch04 and ch05 for their configs).
"""


def top1(record) -> float:
    """A run record's final test top-1 (%)."""
    return record["final"]["test_top1"]


def span(values, unit: str = "%", digits: int = 2) -> str:
    """``lo–hi`` with the unit (or the one value where all are equal), for prose written by a cell."""
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}{unit}" if round(lo, digits) == round(hi, digits) else \
        f"{lo:.{digits}f}–{hi:.{digits}f}{unit}"


def mean_std(values):
    """Mean and sample standard deviation (ddof 1; None for one value) of a seed group."""
    import statistics

    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def beyond_spread(a, b) -> bool:
    """Whether two seed groups' mean ± std intervals do not overlap (``a``, ``b``: (mean, std)
    pairs); the chapters call such a difference larger than the seed spread. A single run has no
    spread, so nothing is beyond it."""
    (ma, sa), (mb, sb) = a, b
    return sa is not None and sb is not None and abs(ma - mb) > sa + sb


def pm(mean, std, digits: int = 2, unit: str = "") -> str:
    """``mean ± std`` as text (the mean alone where there is no std)."""
    return f"{mean:.{digits}f}{unit}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}{unit}"


def chapter_runs(profile: str):
    """Every training run the chapters read under ``profile`` at their default parameters, keyed by
    run key, each with the chapter that trains it: what a fresh clone must find stored so that
    ``make reproduce`` trains nothing (chapter 06 also loads the weights of chapter 05's runs)."""
    from ..profiles import get_profile
    from . import ch03_training as ch03, ch04_temperature_and_k as ch04
    from . import ch05_attention_ablation as ch05, ch08_paper_figures as ch08

    seeds = get_profile(profile).seeds
    found = {}
    comparison = ch03.comparison_configs(profile, depths=(18, 50))
    groups = [("03", [*comparison.values(), *ch03.init_configs(comparison, 18, seeds[0]).values()])]
    sweeps = ch04.sweep_configs(profile)
    groups.append(("04", [*sweeps["T_k"].values(), *sweeps["K"].values(), *sweeps["seeds"].values(),
                          sweeps["reference"], sweeps["static"]]))
    groups.append(("05", [c for s in seeds for c in ch05.default_configs(profile, seed=s).values()]))
    groups.append(("08", ch08.backbone_configs(profile).values()))
    for chapter, configs in groups:
        for config in configs:
            found.setdefault(config.key(), (chapter, config))
    return found
