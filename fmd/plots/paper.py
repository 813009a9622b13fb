"""Chapter 08 (the paper's figures and tables, regenerated from run records) and its helpers.

Nothing here trains. Records are looked up by the exact configs the chapters that made them use
(through their own plot modules), so a figure is redrawn from the same runs; a missing run is
reported with the chapter that makes it. Published numbers (:mod:`fmd.reference`) only ever appear
in their own tables, labelled "published". Also: reading back the provenance stamp of every file in
``figures/``.
"""
from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt

from . import conv_color, label, use_style
from .. import reference, runs
from ..profiles import runs_root
from ..train import TrainConfig, build_model

Record = Dict[str, Any]
STAMP = re.compile(r"profile: (?P<profile>.*?) · dataset: (?P<dataset>.*) · commit: (?P<commit>[\w+]+)")

# ---------------------------------------------------------------------------------------------
# Records


def stored(configs: Mapping[Hashable, TrainConfig], profile: str
           ) -> Tuple[Dict[Hashable, Record], List[Hashable]]:
    """The stored records of ``configs`` (never trains), and the names of those not run yet."""
    root = runs_root(profile)
    found = {name: runs.load_record(config.identity(), root) for name, config in configs.items()}
    return ({n: r for n, r in found.items() if r is not None},
            [n for n, r in found.items() if r is None])


def report(what: str, found: Mapping[Hashable, Any], missing: Sequence[Hashable],
           chapter: str, skips: bool = True) -> bool:
    """Print what was found for one figure and which chapter makes what is missing; True if any.

    ``skips``: the figure is skipped when this set is empty (say so); False for a part of a figure.
    """
    total = len(found) + len(missing)
    print(f"{what}: {len(found)} of {total} runs found")
    if missing:
        print(f"  not run yet: {', '.join(map(str, missing))} — run notebooks/{chapter} "
              f"under this profile to make them")
    if not found and skips:
        print("  skipped: nothing to draw")
    return bool(found)


def inventory(profile: str) -> List[Dict[str, Any]]:
    """Every record under the profile's runs root, counted by dataset, recipe and conv."""
    counts: Dict[Tuple[str, str, str], int] = {}
    for r in runs.list_records(runs_root(profile)):
        c = r["config"]
        key = (c["dataset"], c["recipe"], c["conv"])
        counts[key] = counts.get(key, 0) + 1
    return [{"dataset": d, "recipe": rc, "conv": cv, "records": n}
            for (d, rc, cv), n in sorted(counts.items())]


def ablation_models(configs: Mapping[str, TrainConfig], records: Mapping[str, Record]) -> Dict[str, Any]:
    """Each record's architecture, built from its config (weights do not change the timing)."""
    return {name: build_model(configs[name], r["num_classes"], r["input_size"][1])
            for name, r in records.items()}


# ---------------------------------------------------------------------------------------------
# Tables


def published_rows(archs: Sequence[str] = ("resnet18",),
                   tables: Sequence[str] = ("odconv_imagenet", "fashion_mnist", "paper_claims"),
                   ) -> List[Dict[str, Any]]:
    """Published figures for ``archs`` (fmd.reference), one row per table, arch and method."""
    rows = []
    for table in tables:
        for (arch, method), figures in reference.ALL[table].items():
            if arch not in archs:
                continue
            row: Dict[str, Any] = {"published in": table, "arch": arch, "method": method}
            for metric, p in figures.items():
                row[f"{metric} (published, {p.unit})"] = p.value
            row["source"] = "; ".join(dict.fromkeys(p.source for p in figures.values()))
            rows.append(row)
    return rows


def speed_accuracy_rows(records: Mapping[str, Record],
                        bench_tables: Mapping[str, Sequence[Mapping[str, Any]]] = {},
                        cases: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """Per chapter-3 run: top-1, cost per image and IES / RCS on both cost bases of its record.

    With benchmark tables, adds each conv's measured time ratio against static for ``cases``
    (whole-network timings of fmd.bench: another model size than the trained one, see the column).
    """
    rows = []
    for r in records.values():
        conv = r["config"]["conv"]
        macs, time = r["speed_accuracy"]["macs"], r["speed_accuracy"]["eval_time"]
        row: Dict[str, Any] = {
            "conv": label(conv), "K": 1 if conv == "static" else r["config"]["kernel_num"],
            "top-1 (%)": round(r["final"]["test_top1"], 2), "params": r["params"],
            "MMACs/image": round(1e3 * macs["cost_per_image"], 3),
            "IES (MMACs)": _round(macs["ies"], 1e3), "RCS (per MMAC)": _round(macs["rcs"], 1e-3),
            "eval ms/image (record)": round(time["cost_per_image"], 4),
            "IES (ms)": _round(time["ies"]), "RCS (per ms)": _round(time["rcs"]),
        }
        for name, table in bench_tables.items():
            for case in cases:
                match = [b for b in table if b["name"] == case and b["conv"] == conv]
                if match:
                    row[f"bench time ×static: {case} ({Path(name).stem})"] = round(
                        match[0]["time_ratio"], 2)
        rows.append(row)
    return rows


def _round(value: Optional[float], scale: float = 1.0) -> Optional[float]:
    return None if value is None else round(value * scale, 4)


# ---------------------------------------------------------------------------------------------
# Figure


def speed_accuracy_figure(records: Mapping[str, Record], dataset: str = "") -> plt.Figure:
    """Top-1 of the chapter-3 runs against MACs per image and against the records' eval time."""
    use_style()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True)
    for ax, basis, scale, xlabel in (
            (axes[0], "macs", 1e3, "MACs per image (millions)"),
            (axes[1], "eval_time", 1.0, "evaluation time per image (ms, record, batched)")):
        for r in records.values():
            conv = r["config"]["conv"]
            x = r["speed_accuracy"][basis]["cost_per_image"] * scale
            y = r["final"]["test_top1"]
            ax.plot([x], [y], ls="none", marker="o", ms=9, color=conv_color(conv), label=label(conv),
                    mec="white", mew=0.8, alpha=0.9)
        ax.set_xlabel(xlabel)
        ax.margins(x=0.15, y=0.2)
    axes[0].set_ylabel("test top-1 accuracy (%)")
    axes[0].set_title("accuracy against arithmetic")
    axes[1].set_title("accuracy against measured time")
    fig.suptitle("Speed-accuracy trade-off of the chapter-3 runs"
                 + (f" — {dataset}" if dataset else "") + " (up and left is better)",
                 fontweight="bold", fontsize=11, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    handles, texts = axes[0].get_legend_handles_labels()
    fig.legend(handles, texts, loc="upper center", ncol=len(handles), fontsize=8.5, frameon=False,
               bbox_to_anchor=(0.5, 0.95))
    return fig


# ---------------------------------------------------------------------------------------------
# Provenance of the files in figures/


def _pdf_objects(data: bytes) -> Dict[int, Tuple[bytes, bytes]]:
    objects = {}
    for m in re.finditer(rb"(\d+) 0 obj(.*?)endobj", data, re.S):
        body = m.group(2)
        head, _, rest = body.partition(b"stream")
        stream = b""
        if rest:
            raw = rest.lstrip(b"\r\n").rsplit(b"endstream", 1)[0]
            try:
                stream = zlib.decompress(raw) if b"FlateDecode" in head else raw
            except zlib.error:
                stream = raw
        objects[int(m.group(1))] = (head, stream)
    return objects


def _unescape(s: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(s):
        c = s[i]
        if c == 0x5C and i + 1 < len(s):  # backslash
            n = s[i + 1]
            octal = re.match(rb"[0-7]{1,3}", s[i + 1:i + 4])
            if octal:
                out.append(int(octal.group(), 8) & 0xFF)
                i += 1 + len(octal.group())
                continue
            out.append({ord("n"): 10, ord("r"): 13, ord("t"): 9}.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return bytes(out)


def _to_unicode(cmap: bytes) -> Dict[int, str]:
    table: Dict[int, str] = {}
    hexstr = lambda h: bytes.fromhex(h.decode()).decode("utf-16-be", "replace")  # noqa: E731
    for block in re.findall(rb"beginbfchar(.*?)endbfchar", cmap, re.S):
        for src, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            table[int(src, 16)] = hexstr(dst)
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", cmap, re.S):
        pattern = rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*(?:<([0-9A-Fa-f]+)>|\[([^\]]*)\])"
        for lo, hi, dst, array in re.findall(pattern, block):
            codes = range(int(lo, 16), int(hi, 16) + 1)
            if array:  # one destination string per code
                for code, d in zip(codes, re.findall(rb"<([0-9A-Fa-f]+)>", array)):
                    table[code] = hexstr(d)
            else:  # consecutive codes map to consecutive characters
                first = hexstr(dst)
                for k, code in enumerate(codes):
                    table[code] = first[:-1] + chr(ord(first[-1]) + k)
    return table


def pdf_text(path: Path) -> List[str]:
    """The text of each BT…ET block of a matplotlib PDF, decoded through its fonts' ToUnicode maps."""
    objects = _pdf_objects(Path(path).read_bytes())
    fonts: Dict[bytes, Dict[int, str]] = {}
    for head, _ in objects.values():
        for ref in re.findall(rb"/Font (\d+) 0 R", head):
            font_dict = objects.get(int(ref), (b"", b""))[0]
            for name, num in re.findall(rb"/(\w+) (\d+) 0 R", font_dict):
                font = objects.get(int(num), (b"", b""))[0]
                uni = re.search(rb"/ToUnicode (\d+) 0 R", font)
                fonts[name] = _to_unicode(objects[int(uni.group(1))][1]) if uni else {}
    texts = []
    for _, stream in objects.values():
        for block in re.findall(rb"\bBT\b(.*?)\bET\b", stream, re.S):
            current: Dict[int, str] = {}
            pieces = []
            for font, string in re.findall(rb"/(\w+) [\d.]+ Tf|\(((?:\\.|[^\\)])*)\)", block, re.S):
                if font:
                    current = fonts.get(font, {})
                else:
                    pieces.append("".join(current.get(b, chr(b)) for b in _unescape(string)))
            texts.append("".join(pieces))
    return texts


def read_stamp(path: Path) -> Dict[str, str]:
    """The provenance stamp (profile, dataset, commit) of one file in ``figures/``, where it has one."""
    path = Path(path)
    found: Optional[re.Match] = None
    if path.suffix in (".csv", ".md"):
        found = next((m for line in path.read_text().splitlines() for m in [STAMP.search(line)] if m),
                     None)
    elif path.suffix in (".png", ".pdf"):
        pdf = path.with_suffix(".pdf")
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:  # a stamp stored in the PNG's text chunks, if any
                text = " ".join(str(v) for v in getattr(image, "text", {}).values())
            found = STAMP.search(text)
        if found is None and pdf.exists():  # the caption line drawn into the PDF twin
            found = next((m for t in pdf_text(pdf) for m in [STAMP.search(t)] if m), None)
    if found is not None:
        return {"profile": found["profile"], "dataset": found["dataset"],
                "commit": found["commit"], "from": "stamp"}
    bench = path.with_suffix(".json")
    if path.name.startswith(("bench_", "breakdown_")) and bench.exists():  # they name their machine
        first = json.loads(bench.read_text())[0]
        command = "fmd.bench --breakdown" if path.name.startswith("breakdown_") else "fmd.bench"
        return {"profile": "—", "dataset": "none (benchmark)", "commit": first["commit"],
                "from": f"{command}: {first['device']}, {first['threads']} threads"}
    return {"profile": "?", "dataset": "?", "commit": "?", "from": "no stamp found"}


def provenance_rows(folder: Path, kinds: Iterable[str] = (".png", ".pdf", ".csv", ".md", ".json")
                    ) -> List[Dict[str, str]]:
    """One row per file in ``folder``: its name and provenance stamp."""
    kinds = tuple(kinds)
    return [{"file": p.name, **read_stamp(p)} for p in sorted(Path(folder).iterdir())
            if p.is_file() and p.suffix in kinds and not p.name.startswith(".")]


def columns_of(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """Every column that any row has, in first-seen order (rows of a table may differ)."""
    return list(dict.fromkeys(k for r in rows for k in r))
