"""Tables: rows (dicts) as the aligned text the notebooks print, and as stamped files on disk.

:func:`write_table` is the one writer of CSV / Markdown (/ JSON) tables, for the figures' tables
(:func:`fmd.plots.save_table`) and the benchmark's (:mod:`fmd.bench`); each file is written
atomically (:func:`fmd.provenance.atomic_write_text`) and carries its provenance line.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

from .provenance import atomic_write_text


def lookup(rows: Sequence[Mapping[str, Any]], **match: Any) -> Mapping[str, Any]:
    """The one row whose fields equal ``match``; a clear error if there is none or several."""
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise KeyError(f"{len(found)} rows match {match}")
    return found[0]


def columns_of(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """Every column that any row has, in first-seen order (rows of a table may differ)."""
    return list(dict.fromkeys(k for r in rows for k in r))


def table_text(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    """Rows as an aligned plain-text table (what the notebooks print)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return str(v)
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    """A Markdown table cell: floats to 4 significant digits, a literal ``|`` escaped (it would
    start a new column)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value).replace("|", "\\|")


def write_table(rows: Sequence[Mapping[str, Any]], out_dir: Path, stem: str, *, line: str,
                title: str = "", columns: Optional[Sequence[str]] = None,
                md_columns: Optional[Sequence[str]] = None, csv_line: bool = True,
                with_json: bool = False) -> List[Path]:
    """Write ``rows`` as ``stem``.csv and ``stem``.md (and ``stem``.json), each carrying ``line``.

    ``columns`` (default: the first row's) go into the CSV, ``md_columns`` (default: the same) into
    the Markdown table. The CSV starts with ``# line`` (``csv_line``); the Markdown ends with it.
    """
    if not rows:
        raise ValueError(f"table {stem!r} has no rows")
    columns = list(columns or rows[0].keys())
    md_columns = list(md_columns or columns)
    buf = io.StringIO()
    if csv_line:
        buf.write(f"# {line}\n")
    writer = csv.DictWriter(buf, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    md = ([f"**{title}**", ""] if title else []) + [
        "| " + " | ".join(md_columns) + " |", "|" + "---|" * len(md_columns)]
    md += ["| " + " | ".join(_cell(r.get(c)) for c in md_columns) + " |" for r in rows]
    md += ["", f"<sub>{line}</sub>", ""]
    texts = [("csv", buf.getvalue()), ("md", "\n".join(md))]
    if with_json:
        texts.append(("json", json.dumps(list(rows), indent=1)))
    paths = []
    for ext, text in texts:
        path = Path(out_dir) / f"{stem}.{ext}"
        atomic_write_text(path, text)
        paths.append(path)
    return paths
