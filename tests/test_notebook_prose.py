"""Notebook prose cannot contradict its outputs: a measured number is printed by a cell, never typed.

A run's accuracy, time, ratio, entropy or commit in a Markdown cell would go stale on the next run on
another profile or machine; the chapters print such numbers from their records (``chNN.*_reading``
writes the prose under a table from its rows). Markdown may hold equations, shapes (``32×32``),
counts and the knobs of a config, which do not change from run to run.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MEASURED = re.compile(
    r"(?<![\w.$^_{])\d+\.\d+\s*(?:%|pp\b|ms\b|s\b|MB\b|GB\b|×|x\b)"   # 84.48%, 0.12 pp, 9.3 ms, 1.62×
    r"|(?<![\w.$^_{])0\.\d{2,}(?![\w.])"                              # 0.987 (an entropy, a share)
    r"|\bcommit [0-9a-f]{7,}\b|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")  # a commit
MATH = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`", re.S)


def measured_numbers(markdown: str) -> list:
    """The measured-looking numbers of a Markdown cell, outside equations and code spans."""
    return MEASURED.findall(MATH.sub(" ", markdown))


def test_the_pattern_finds_what_it_should():
    assert measured_numbers("top-1 84.48%, 0.12 pp apart, 9.3 ms, 1.62× static, mean 0.987")
    assert len(measured_numbers("the figures of commit a8b7408")) == 1
    assert measured_numbers("32×32 inputs, K = 4, 12,000 images, $T_k = 34$, `0.25`, 3 epochs") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_holds_no_measured_number(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    found = {i: measured_numbers("".join(c["source"])) for i, c in enumerate(cells)
             if c["cell_type"] == "markdown"}
    assert not {i: hits for i, hits in found.items() if hits}, \
        f"{path.name}: Markdown cells type measured numbers; print them from a cell instead"


def test_chapter_03s_summary_states_what_its_tables_found():
    from fmd.chapters import ch03_training as ch03

    def row(conv, top1, std, params, macs, speed):
        return {"depth": 18, "conv": conv, "top-1 (%)": top1, "top-1 std (pp)": std, "epochs": 3,
                "Δ top-1 vs static (pp)": round(top1 - 85.0, 2),
                "beyond seed spread": abs(top1 - 85.0) > std + 0.5,
                "params": params, "MACs": macs, "train images/s": speed}

    rows = [row("Static", 85.0, 0.5, 100, 10, 400.0), row("FMDConv", 86.5, 0.5, 400, 20, 100.0),
            row("ODConv", 84.8, 0.4, 380, 21, 80.0)]
    init = [{"depth": 18, "conv": "FMDConv", "torch − official (pp)": 2.0, "seed std, official (pp)": 0.5},
            {"depth": 18, "conv": "ODConv", "torch − official (pp)": 0.1, "seed std, official (pp)": 0.4}]
    text = ch03.summary_reading({"fashion_mnist": rows}, init)
    assert "the best dynamic network is FMDConv at 86.50 ± 0.50%, static 85.00 ± 0.50%" in text
    assert "Above static beyond the seed spread: FMDConv; within the seed spread of static: ODConv." in text
    assert "3.80–4.00× the static network's parameters and 2.00–2.10× its MACs" in text
    assert "moves FMDConv by more than twice its seed std" in text


def test_chapter_04_ranks_k_only_beyond_the_seed_range_as_it_does_t_k():
    from fmd.chapters import ch04_temperature_and_k as ch04

    def record(top1):
        return {"config": {"dataset": "d", "epochs": 3, "kernel_temperature": 34.0},
                "final": {"test_top1": top1, "test_top5": 99.0}}

    temperatures = {1.0: record(80.0), 10.0: record(78.0), 34.0: record(76.0)}
    kernels = {1: record(84.1), 2: record(84.0), 4: record(84.3)}
    text = ch04.figure5_reading(temperatures, kernels, kernels[4], None, seed_range=1.0)
    assert "0 of the 2 gaps between neighbouring initial temperatures and 2 of the 2 gaps between " \
           "neighbouring $K$" in text
    assert "the best and the worst $K$ are 0.30 pp apart, within it: these runs do not rank $K$" in text
