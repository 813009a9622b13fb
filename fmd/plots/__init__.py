"""Drawing: one style, one stamp. ``fmd/plots/chNN_<chapter>.py`` draws chapter NN's figures.

The drawing modules only draw: they take rows and records (made by :mod:`fmd.chapters`) and return
matplotlib figures; they import no training, benchmark or model-loading code. This module saves
them: every figure as PNG and PDF under ``figures/`` with a caption line naming the profile, the
dataset, the commit and any notebook parameter that differs from the chapter's default, the same
line stored in the file's metadata (:func:`fmd.provenance.read_stamp` reads it back); every table
as CSV and Markdown with the same stamp (:func:`fmd.tables.write_table`). Numbers from papers
(``fmd.reference``) are passed in separately and labelled as published.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))  # headless under papermill and nbval
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from .. import cli, profiles, provenance  # noqa: E402
from ..conv import CONVS  # noqa: E402
from ..profiles import get_profile  # noqa: E402
from ..provenance import FIGURES, REPO_ROOT  # noqa: E402,F401 (notebooks read plots.FIGURES)
from ..tables import write_table  # noqa: E402

# Notebook parameters that change where or how a run is shown, never what it computes.
UNSTAMPED = ("profile", "figures_dir", "progress")


def use_style() -> None:
    """The shared look: seaborn's whitegrid, a readable font size, tight layout."""
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "axes.titleweight": "bold"})


_figures_override: Optional[str] = None
_changed_parameters: Dict[str, Any] = {}


def parameters(namespace: Mapping[str, Any]) -> dict:
    """A copy of a notebook's ``parameters`` cell values (call it at the cell's end with globals()).

    papermill's ``-p`` overrides land in a cell after it, so :func:`set_context` can name them.
    """
    plain = (bool, int, float, str, type(None), list, tuple, dict)
    return {k: (list(v) if isinstance(v, list) else v) for k, v in namespace.items()
            if not k.startswith("_") and k not in ("In", "Out") and isinstance(v, plain)}


def set_context(namespace: Mapping[str, Any], parameter_defaults: Mapping[str, Any]) -> None:
    """Set up saving for one notebook run: its ``figures_dir`` and the parameters it changed.

    Every stamp of the run then ends with ``· params: name=value, …`` for each parameter whose value
    in ``namespace`` differs from ``parameter_defaults`` (see :func:`parameters`), and its figures
    and tables go to a folder named after them unless ``figures_dir`` is given
    (:func:`fmd.profiles.figures_dir`). A mistyped profile or a parameter of the wrong type stops
    the notebook here, before any work, with one line.
    """
    global _changed_parameters
    if "profile" in namespace:
        get_profile(namespace["profile"])
    cli.check_parameters(parameter_defaults, namespace)
    set_figures_dir(namespace.get("figures_dir"))
    _changed_parameters = provenance.changed_parameters(parameter_defaults, namespace, UNSTAMPED)


def stamp(profile: str, dataset: str, commit: Optional[str] = None) -> str:
    """The provenance line every figure and table of this run carries."""
    return provenance.stamp(profile, dataset, commit, provenance.parameters_text(_changed_parameters))


def set_figures_dir(path: Optional[object]) -> None:
    """Send every figure and table this process saves to ``path`` (None: the profile's folder).

    Notebooks call it with their ``figures_dir`` parameter, so a papermill sweep can write each
    copy's figures apart instead of over the committed ones. A relative path is taken from the
    repository root, wherever the kernel runs.
    """
    global _figures_override
    _figures_override = None if path is None else str(path)


def figures_dir(profile: str) -> Path:
    """Where this run's figures go (:func:`fmd.profiles.figures_dir` with its ``figures_dir`` and the
    parameters it changed)."""
    return profiles.figures_dir(profile, _figures_override, _changed_parameters)


def save_figure(fig: plt.Figure, name: str, *, profile: str, dataset: str) -> List[Path]:
    """Add the provenance caption and save ``name``.png and .pdf (stamp in their metadata too)."""
    out_dir = figures_dir(profile)
    line = stamp(profile, dataset)
    # Put the caption under everything already drawn (legends below the axes included).
    bottom = fig.get_tightbbox(fig.canvas.get_renderer()).y0 / fig.get_figheight()
    fig.text(0.01, min(bottom, 0.0) - 0.01, line, fontsize=7, color="0.35", ha="left", va="top")
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        with provenance.atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight",
                        metadata=provenance.figure_metadata(line, ext))
        paths.append(path)
    return paths


def save_table(rows: Sequence[Mapping[str, object]], name: str, *, profile: str, dataset: str,
               title: str = "", columns: Optional[Sequence[str]] = None) -> List[Path]:
    """Save rows as ``name``.csv and ``name``.md, each stamped with profile, dataset and commit."""
    return write_table(rows, figures_dir(profile), name,
                       line=stamp(profile, dataset), title=title, columns=columns)


def figure_legend(fig: plt.Figure, axes: Sequence[plt.Axes], *, y: float, ncol: Optional[int] = None,
                  title: str = "", top: float = 0.9) -> None:
    """One legend for the whole figure, centred at height ``y``: every label of ``axes`` once.

    With a ``title``, it is drawn above and the axes are laid out below ``top`` (legend between).
    """
    handles: dict = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    if title:
        fig.suptitle(title, fontweight="bold", fontsize=11, y=0.995)
        fig.tight_layout(rect=(0, 0, 1, top))
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=ncol or len(handles),
               fontsize=8.5, frameon=False, bbox_to_anchor=(0.5, y))


def conv_color(conv: str) -> str:
    """The colour of a conv type, the same in every figure."""
    return CONVS[conv].color if conv in CONVS else "#377eb8"

