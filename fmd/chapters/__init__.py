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
