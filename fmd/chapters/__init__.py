"""The experiments, one module per notebook chapter: configs, grids with their defaults, runs, table rows.

``fmd/chapters/chNN_<chapter>.py`` defines what ``notebooks/NN_<chapter>.ipynb`` runs; its figures are
drawn by ``fmd/plots/chNN_<chapter>.py``. Imports go one way: notebooks → fmd.chapters →
(fmd.plots for drawing; fmd.train, fmd.models, fmd.conv, … for the work). What every chapter uses
(runs under a profile, latencies, seed statistics, number formats) is in :mod:`.common`; no chapter
module imports another. A notebook that reuses another chapter's runs calls that chapter's
definition (chapter 08 asks ch04 and ch05 for their configs).
"""


def chapter_runs(profile: str):
    """Every training run the chapters read under ``profile`` at their default parameters, keyed by
    run key, each with the chapter that trains it: what a fresh clone must find stored so that
    ``make reproduce`` trains nothing (of those in :func:`loaded_runs`, the weights too)."""
    from ..profiles import get_profile
    from . import ch03_training as ch03, ch04_temperature_and_k as ch04
    from . import ch05_attention_ablation as ch05, ch08_paper_figures as ch08

    seeds = get_profile(profile).seeds
    found = {}
    comparison = ch03.comparison_configs(profile, depths=(18, 50))
    scale = ch03.scale_configs(profile)
    groups = [("03", [*comparison.values(), *ch03.init_configs(comparison, 18, seeds[0]).values(),
                      *ch03.comparison_checks(comparison, profile).values(), *scale.values(),
                      *ch03.check_configs(scale).values()])]
    sweeps = ch04.sweep_configs(profile)
    groups.append(("04", [*sweeps["T_k"].values(), *sweeps["K"].values(), *sweeps["seeds"].values(),
                          sweeps["reference"], sweeps["static"]]))
    groups.append(("05", [c for s in seeds for c in ch05.default_configs(profile, seed=s).values()]))
    backbones = ch08.backbone_configs(profile)
    groups.append(("08", [*backbones.values(), *ch08.backbone_checks(backbones, profile).values()]))
    for chapter, configs in groups:
        for config in configs:
            found.setdefault(config.key(), (chapter, config))
    return found


def loaded_runs(profile: str):
    """The runs whose trained weights a chapter loads under ``profile`` at its defaults, keyed by
    run key, each with the chapters that load it: chapter 04's reference run (it folds its kernel
    attention) and chapter 06's Grad-CAM models (chapter 05's runs of
    :data:`fmd.gradcam.FIGURE4_MODELS`, first seed). A fresh clone finds their half-precision
    weights committed; a run stored without them is trained again."""
    from ..gradcam import FIGURE4_MODELS
    from ..profiles import get_profile
    from . import ch04_temperature_and_k as ch04, ch05_attention_ablation as ch05

    chapter5 = ch05.default_configs(profile, seed=get_profile(profile).seeds[0])
    found = {ch04.sweep_configs(profile)["reference"].key(): ("04",)}
    for attentions in FIGURE4_MODELS.values():
        key = chapter5["+".join(attentions)].key()
        found[key] = (*found.get(key, ()), "06")
    return found
