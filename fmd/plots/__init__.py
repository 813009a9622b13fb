"""Figures and tables: one style, one stamp; one module per notebook chapter with its figures.

Every figure is saved as PNG and PDF under ``figures/`` with a caption line naming the profile,
the dataset and the commit; every table as CSV and Markdown with the same stamp. Numbers from
papers (``fmd.reference``) are passed in separately and labelled as published.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))  # headless under papermill and nbval
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from ..bench import git_commit  # noqa: E402
from ..conv import CONVS  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
FIGURES = REPO_ROOT / "figures"
# The smoke profile (tests, CI) must not overwrite the committed figures of a real run.
SMOKE_FIGURES = REPO_ROOT / "build" / "smoke-figures"


def use_style() -> None:
    """The shared look: seaborn's whitegrid, a readable font size, tight layout."""
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "axes.titleweight": "bold"})


def stamp(profile: str, dataset: str, commit: Optional[str] = None) -> str:
    """The provenance line every figure and table carries."""
    return f"profile: {profile} · dataset: {dataset} · commit: {commit or git_commit()}"


_figures_override: Optional[Path] = None


def set_figures_dir(path: Optional[object]) -> None:
    """Send every figure and table of this session to ``path`` (None: the profile's folder).

    Notebooks call it with their ``figures_dir`` parameter, so a papermill sweep can write each
    copy's figures apart instead of over the committed ones. A relative path is taken from the
    repository root, wherever the kernel runs.
    """
    global _figures_override
    _figures_override = None if path is None else REPO_ROOT / Path(str(path))


def figures_dir(profile: str) -> Path:
    """Where figures go: as set by :func:`set_figures_dir`, else ``figures/`` (smoke: ``build/``)."""
    if _figures_override is not None:
        return _figures_override
    return SMOKE_FIGURES if profile == "smoke" else FIGURES


def save_figure(fig: plt.Figure, name: str, *, profile: str, dataset: str,
                out_dir: Optional[Path] = None) -> List[Path]:
    """Add the provenance caption and save ``name``.png and .pdf; returns the paths."""
    out_dir = Path(out_dir or figures_dir(profile))
    out_dir.mkdir(parents=True, exist_ok=True)
    # Put the caption under everything already drawn (legends below the axes included).
    bottom = fig.get_tightbbox(fig.canvas.get_renderer()).y0 / fig.get_figheight()
    fig.text(0.01, min(bottom, 0.0) - 0.01, stamp(profile, dataset), fontsize=7, color="0.35",
             ha="left", va="top")
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        tmp = path.with_name(f".{path.stem}.tmp.{ext}")
        fig.savefig(tmp, bbox_inches="tight",
                    metadata={"CreationDate": None} if ext == "pdf" else None)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def save_table(rows: Sequence[Mapping[str, object]], name: str, *, profile: str, dataset: str,
               title: str = "", out_dir: Optional[Path] = None,
               columns: Optional[Sequence[str]] = None) -> List[Path]:
    """Save rows as ``name``.csv and ``name``.md, each stamped with profile, dataset and commit."""
    if not rows:
        raise ValueError(f"table {name!r} has no rows")
    out_dir = Path(out_dir or figures_dir(profile))
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(columns or rows[0].keys())
    line = stamp(profile, dataset)
    buf = io.StringIO()
    buf.write(f"# {line}\n")
    writer = csv.DictWriter(buf, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    md = ([f"**{title}**", ""] if title else []) + [
        "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    md += ["", f"<sub>{line}</sub>", ""]
    paths = []
    for ext, text in (("csv", buf.getvalue()), ("md", "\n".join(md))):
        path = out_dir / f"{name}.{ext}"
        tmp = path.with_name(f".{path.stem}.tmp.{ext}")
        tmp.write_text(text)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def conv_color(conv: str) -> str:
    """The colour of a conv type, the same in every figure."""
    return CONVS[conv].color if conv in CONVS else "#377eb8"


def label(conv: str) -> str:
    """The display name of a conv type."""
    return CONVS[conv].label if conv in CONVS else conv
