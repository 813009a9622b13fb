"""What tables and figures call things: a convolution (its :class:`fmd.conv.ConvSpec` label) and a
benchmark row's variant, backend and machine. Nothing here draws, so building a table imports no
matplotlib; :mod:`fmd.plots` and :mod:`fmd.chapters` both read their labels from here."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .conv import CONVS


def conv_label(conv: str) -> str:
    """The display name of a conv type (the name itself for one that is not registered)."""
    return CONVS[conv].label if conv in CONVS else conv


def variant(row: Mapping[str, Any]) -> str:
    """A benchmark row's conv, with the strategy it forced where it forced one: "fmdconv (grouped)"."""
    forced = row.get("strategy_forced", "auto")
    return row["conv"] if forced == "auto" or row["conv"] == "static" else f"{row['conv']} ({forced})"


def backend_label(row: Mapping[str, Any]) -> str:
    """Where a benchmark row ran: backend, autocast dtype, dynamic batch ("eager" before backends)."""
    words = [row.get("backend", "eager")]
    if row.get("amp", "fp32") != "fp32":
        words.append(row["amp"])
    if row.get("dynamic_batch"):
        words.append("dynamic batch")
    return " ".join(words)


def machine_label(rows: Sequence[Mapping[str, Any]]) -> str:
    """What a benchmark table was measured on: device, threads, torch and commit."""
    first = rows[0]
    device = first.get("gpu") or f"{first['device']} {first['cpu']}, {first['cores']} cores"
    return (f"{device}, {first['threads']} threads, torch {first['torch']}, "
            f"commit {first['commit']}")
