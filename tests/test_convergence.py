"""Issue 25, item 4: the convergence helpers, the tables' convergence columns and the readings that
name the networks not shown to have finished learning, on records and rows made here."""
import json
from types import SimpleNamespace
from typing import Any, Dict, Sequence

import pytest

from fmd.chapters import common
from fmd.chapters import ch03_training as ch03, ch04_temperature_and_k as ch04
from fmd.chapters import ch05_attention_ablation as ch05, ch08_paper_figures as ch08, ch09_claims as ch09
from fmd.chapters.common import CHECK, CONVERGENCE, GAIN


def history(curve: Sequence[float], losses: Sequence[float] = ()) -> list:
    """Per-epoch rows with the given test top-1 curve (and training losses; default 1.0 each)."""
    losses = losses or [1.0] * len(curve)
    assert len(losses) == len(curve)
    return [{"epoch": i + 1, "test_top1": t, "train_loss": loss, "train_seconds": 1.0, "train_images": 8,
             "temperatures": {"kernel": 1.0}} for i, (t, loss) in enumerate(zip(curve, losses))]


def record(curve: Sequence[float], conv: str = "fmdconv", depth: int = 18, seed: int = 0,
           losses: Sequence[float] = (), **config: Any) -> Dict[str, Any]:
    """A run record with just what the chapters' tables read, ending at the curve's last value."""
    return {"name": f"{conv}-{depth}-{seed}-{len(curve)}", "key": "k", "history": history(curve, losses),
            "final": {"test_top1": curve[-1], "test_top5": 99.0}, "best_test_top1": max(curve),
            "config": {"conv": conv, "depth": depth, "seed": seed, "kernel_num": 4, "preset": "official",
                       "kernel_temperature": 34.0, "dataset": "d", "epochs": len(curve), **config},
            "params": 100, "macs": 200, "num_classes": 10, "wall_time_s": 60.0,
            "speed": {"train_images_per_s": 10.0, "eval_ms_per_image": 1.0, "eval_batch_size": 8}}


def test_last_quarter_gain_compares_the_last_epoch_with_the_one_that_ends_three_quarters():
    assert common.quarter_epoch(4) == 3 and common.quarter_epoch(3) == 2 and common.quarter_epoch(10) == 8
    assert common.last_quarter_gain(history([50.0, 60.0, 70.0, 72.0])) == pytest.approx(2.0)
    assert common.last_quarter_gain(history([50.0, 60.0, 61.0])) == pytest.approx(1.0)
    # 1 or 2 epochs: the epoch that ends three quarters is the last one, no last quarter to measure
    assert common.last_quarter_gain(history([50.0])) is None
    assert common.last_quarter_gain(history([50.0, 60.0])) is None
    assert common.still_rising(0.31) and not common.still_rising(0.3) and not common.still_rising(-5.0)


def test_a_check_run_shows_a_config_finished_within_max_of_seed_std_and_three_tenths():
    mains = [record([80.0, 90.0, 91.0, 92.0 + d]) for d in (-0.1, 0.0, 0.1)]  # std 0.1 → 0.3 pp counts
    assert common.shown_finished(mains, None) is None
    assert common.shown_finished(mains, record([92.25])) is True
    assert common.shown_finished(mains, record([92.35])) is False
    wide = [record([92.0 + d]) for d in (-1.0, 0.0, 1.0)]  # std 1.0
    assert common.shown_finished(wide, record([92.9])) is True
    assert common.check_delta(wide, record([92.9])) == pytest.approx(0.9)


def test_convergence_columns_say_rising_falling_flat_too_short_or_what_the_check_run_found():
    verdict = lambda runs, check=None: common.convergence_columns(runs, check)[CONVERGENCE]  # noqa: E731
    assert verdict([record([70.0, 80.0, 85.0, 88.0])]) == common.STILL_RISING
    assert verdict([record([70.0, 80.0, 85.0, 60.0])]) == common.FALLING
    assert verdict([record([70.0, 80.0, 85.0, 85.2])]) == common.FLAT
    assert verdict([record([70.0, 80.0])]) == common.TOO_SHORT
    mains = [record([70.0, 80.0, 85.0, 88.0])]
    assert verdict(mains, record([88.1])) == common.CHECK_OK
    assert verdict(mains, record([90.0])) == common.CHECK_OFF
    columns = common.convergence_columns([record([70.0, 80.0, 85.0, 88.0]), record([70.0, 80.0, 84.0, 88.0])])
    assert columns[GAIN] == 3.5 and CHECK not in columns
    assert common.convergence_columns(mains, with_check=True)[CHECK] is None


def comparison() -> Dict[tuple, Dict[str, Any]]:
    """Chapter 03's comparison on 3-epoch records: every network still rising, ODConv the most."""
    records = {}
    for seed in (0, 1, 2):
        records[(18, seed, "static")] = record([70.0, 80.0, 85.0 + seed / 10], "static", seed=seed)
        records[(18, seed, "fmdconv")] = record([60.0, 78.0, 84.0 + seed / 10], seed=seed)
        records[(18, seed, "odconv")] = record([10.0, 40.0, 60.0 + seed / 10], "odconv", seed=seed)
    return records


def test_chapter_03_prints_the_convergence_columns_and_names_the_rising_networks():
    rows = ch03.accuracy_rows(comparison())
    gains = {r["conv"]: r[GAIN] for r in rows}
    assert gains == {"Static": 5.1, "FMDConv": 6.1, "ODConv": 20.1}
    assert all(r[CONVERGENCE] == common.STILL_RISING and CHECK not in r for r in rows)
    note = ("Not shown finished — still rising in the last quarter of the run (gain > 0.3 pp): Static, "
            "FMDConv, ODConv; their ranking is provisional.")
    assert note in ch03.comparison_reading(rows)
    assert note in ch03.summary_reading({"d": rows})
    checked = ch03.accuracy_rows(comparison(), {(18, "static"): record([85.15], "static"),
                                                (18, "fmdconv"): record([86.0])})
    assert set(common.CONVERGENCE_COLUMNS) <= set(checked[0])
    by = {r["conv"]: r for r in checked}
    assert by["Static"][CHECK] == 0.05 and by["Static"][CONVERGENCE] == common.CHECK_OK
    assert by["FMDConv"][CHECK] == 1.9 and by["FMDConv"][CONVERGENCE] == common.CHECK_OFF
    assert by["ODConv"][CHECK] is None and by["ODConv"][CONVERGENCE] == common.STILL_RISING
    text = ch03.comparison_reading(checked)
    assert "max(seed std, 0.3 pp) of the mean: FMDConv" in text and "(gain > 0.3 pp): ODConv;" in text


def test_chapter_03_initialisation_table_takes_the_verdict_of_the_run_that_gains_more():
    official = {"fmdconv": record([80.0, 84.0, 84.1]), "odconv": record([50.0, 55.0, 55.1], "odconv")}
    torch_init = {"fmdconv": record([80.0, 84.0, 84.2]), "odconv": record([50.0, 55.0, 59.0], "odconv")}
    rows = ch03.init_rows(official, torch_init, ch03.accuracy_rows(comparison()))
    by = {r["conv"]: r for r in rows}
    assert by["ODConv"]["last-quarter gain, torch (pp)"] == 4.0
    assert by["ODConv"][CONVERGENCE] == common.STILL_RISING
    assert by["FMDConv"][CONVERGENCE] == common.FLAT
    assert "(gain > 0.3 pp): ODConv; their ranking is provisional." in ch03.init_reading(rows)


def test_chapter_04_sweep_rows_and_figure_5_name_the_unfinished_runs():
    temperatures = {1.0: record([70.0, 80.0, 80.1]), 34.0: record([70.0, 75.0, 79.0])}
    kernels = {1: record([70.0, 80.0, 84.0]), 4: record([70.0, 80.0, 80.2])}
    rows = ch04.sweep_rows({"T_k": temperatures, "K": kernels})
    assert [r[GAIN] for r in rows] == [0.1, 4.0, 4.0, 0.2]
    text = ch04.figure5_reading(temperatures, kernels, kernels[4], None, seed_range=None)
    assert "(gain > 0.3 pp): $T_k$ = 34, $K$ = 1; their ranking is provisional." in text


def test_chapter_05_rows_and_reading_name_the_unfinished_sets():
    configs = {"static": SimpleNamespace(conv="static", attentions=()),
               "full": SimpleNamespace(conv="fmdconv", attentions=("input", "kernel"))}
    records = {"static": [record([70.0, 80.0, 80.1 + s], "static", seed=s) for s in (0, 1)],
               "full": [record([70.0, 75.0, 79.0 + s], seed=s) for s in (0, 1)]}
    latency = {"median_ms": 1.0, "min_round_ms": 0.9, "max_round_ms": 1.1}
    rows = ch05.ablation_rows(configs, records, {"static": latency, "full": latency})
    assert [r[GAIN] for r in rows] == [0.6, 4.5]
    assert "(gain > 0.3 pp): static, full; their ranking is provisional." in ch05.accuracy_reading(rows)


def test_chapter_08_backbone_rows_and_reading_name_the_unfinished_backbones():
    records = {(18, "static"): record([80.0, 85.0, 85.1], "static"),
               (18, "fmdconv"): record([80.0, 85.0, 60.0])}
    rows = ch08.backbone_rows(records)
    assert [r[CONVERGENCE] for r in rows] == [common.FLAT, common.FALLING]
    assert "(drop > 0.3 pp): ResNet-18 FMDConv; their ranking is provisional." in ch08.backbone_reading(rows)


def test_chapter_08_backbone_rows_read_a_check_run_where_there_is_one():
    records = {(34, "static"): record([80.0, 85.0, 86.0, 88.0], "static", 34),
               (50, "static"): record([80.0, 85.0, 87.0, 88.0], "static", 50),
               (50, "fmdconv"): record([80.0, 85.0, 87.0, 88.0], "fmdconv", 50)}
    checks = {(34, "static"): record([88.2], "static", 34), (50, "static"): record([90.0], "static", 50)}
    rows = ch08.backbone_rows(records, checks=checks)
    assert [(r[CHECK], r[CONVERGENCE]) for r in rows] == [
        (0.2, common.CHECK_OK), (2.0, common.CHECK_OFF), (None, common.STILL_RISING)]
    text = ch08.backbone_reading(rows)
    assert "of the mean: ResNet-50 Static;" in text and "ResNet-34" not in text.split("Not shown")[1]
    assert CHECK not in ch08.backbone_rows(records)[0]  # no check runs: no column


def test_the_deeper_check_runs_are_the_listed_ones_and_a_fresh_clone_finds_them_stored():
    comparison = ch03.comparison_configs("quick", depths=(18, 50))
    assert set(ch03.comparison_checks(comparison, "quick")) == \
        {(18, c) for c in ch03.CONV_NAMES} | set(ch03.DEEP_CHECKS["quick"])
    assert set(ch03.comparison_checks(ch03.comparison_configs("smoke", depths=(18, 50)), "smoke")) == \
        {(18, c) for c in ch03.CONV_NAMES}
    backbones = ch08.backbone_configs("quick")
    checks = ch08.backbone_checks(backbones, "quick")
    assert set(checks) == set(ch08.BACKBONE_CHECKS["quick"])
    assert all(c.epochs == 53 and c.key() != backbones[k].key() for k, c in checks.items())
    assert ch08.backbone_checks(ch08.backbone_configs("smoke"), "smoke") == {}
    # ResNet-18's are chapter 03's checks of the sweeps' scale: nothing trained twice
    scale = ch03.check_configs(ch03.scale_configs("quick"))
    assert {checks[(18, c)].key() for c in ch03.SCALE_CONVS} == {c.key() for c in scale.values()}
    from fmd.chapters import chapter_runs
    from fmd.train import run_finished
    from fmd.profiles import runs_root
    needed = chapter_runs("quick")
    for config in [*checks.values(), *ch03.comparison_checks(comparison, "quick").values()]:
        assert config.key() in needed and run_finished(config, runs_root("quick")), config.key()


def test_chapter_09_accuracy_verdict_says_which_compared_networks_are_not_shown_finished():
    verdict = ch09.accuracy_verdict(ch03.accuracy_rows(comparison()))
    assert "last-quarter gain FMDConv +6.10 pp, ODConv +20.10 pp" in verdict["measured"]
    assert verdict["verdict"].startswith("holds at this scale on ResNet-18. Not shown finished")
    assert "ResNet-18 FMDConv, ResNet-18 ODConv; their ranking is provisional." in verdict["verdict"]


def test_chapter_03_check_runs_are_the_lowest_seed_at_one_and_a_half_times_the_epochs():
    configs = ch03.comparison_configs("smoke", convs=("static", "fmdconv"), seeds=(2, 1), epochs=3)
    checks = ch03.check_configs(configs)
    assert set(checks) == {(18, "static"), (18, "fmdconv")}
    assert all(c.epochs == 5 and c.seed == 1 for c in checks.values())
    assert checks[(18, "fmdconv")].key() != configs[(18, 1, "fmdconv")].key()


def test_chapter_03_check_rows_set_each_check_run_beside_its_main_runs():
    mains = {(18, s, "fmdconv"): record([80.0, 90.0, 91.0 + 0.2 * s], seed=s) for s in range(3)}
    checks = {(18, "fmdconv"): record([80.0, 90.0, 91.0, 91.5, 91.9], seed=0)}
    row, = ch03.check_rows(mains, checks)
    assert (row["main epochs"], row["check epochs"], row["main top-1 (%)"]) == (3, 5, "91.20 ± 0.20")
    assert row[CHECK] == pytest.approx(0.7) and row["tolerance (pp)"] == 0.3 and row["finished"] is False


def cost_row(depth: int, cost: str, reductions: Sequence[float]) -> Dict[str, Any]:
    return {"backbone": f"ResNet-{depth}", "cost": cost, "computation": "fmd engine (auto)",
            ch09.REDUCTION: sorted(reductions)[len(reductions) // 2], "sessions": len(reductions),
            ch09.LOW: min(reductions), ch09.HIGH: max(reductions),
            **dict(zip((ch09.READ_LOW, ch09.READ_HIGH), ch09.read_range(reductions)))}


def test_chapter_09_cost_verdict_says_within_noise_where_the_sessions_cross_the_threshold():
    # Half the claims: 24.9% (ResNet-18), 21.1% (ResNet-50).
    rows = [cost_row(18, "training step", [30.0, 35.0, 40.0]),
            cost_row(50, "training step", [16.4, 25.0, 29.7]),
            cost_row(50, "batch-1 latency", [5.0, 6.0, 7.0])]
    verdict = ch09.cost_verdict(rows)
    assert verdict["verdict"].startswith("holds only for ResNet-18 training step (fmd engine (auto))")
    assert "in every session" in verdict["verdict"]
    assert "within noise for ResNet-50 training step (fmd engine (auto))" in verdict["verdict"]
    alone = ch09.cost_verdict(rows[1:])["verdict"]
    assert alone.startswith("within noise for ResNet-50 training step") and "not at this scale" not in alone
    assert ch09.cost_verdict(rows[2:])["verdict"].startswith("not at this scale")
    assert "batch-1 latency (fmd engine (auto)) +6.0% (sessions: 5.0 to 7.0)" in verdict["measured"]


def test_chapter_09_cost_verdict_reads_the_sessions_10th_to_90th_percentile_from_ten_on():
    # Issue 25's ResNet-18 training-step reductions (official computation) over 9 logged sessions,
    # then with the six of the next two runs: one of them at 21.9 %, under half the claimed 49.8 %.
    nine = [29.6, 31.6, 34.8, 30.8, 29.3, 31.8, 33.0, 34.7, 39.2]
    fifteen = nine + [38.2, 36.0, 33.3, 21.9, 30.7, 37.7]
    assert ch09.read_range(nine) == (29.3, 39.2)  # below ten sessions: all of them
    assert ch09.read_range(fifteen) == pytest.approx((29.42, 38.0))
    assert ch09.read_range(list(range(10))) == pytest.approx((0.9, 8.1))
    assert ch09.read_range(list(range(20))) == pytest.approx((1.9, 17.1))
    # The same spread sampled more often: the full range widens, the percentiles stay.
    many = [v for v in fifteen for _ in range(4)]
    assert min(many) == min(fifteen) and ch09.read_range(many)[0] == pytest.approx(29.6, abs=0.4)
    verdict = ch09.cost_verdict([cost_row(18, "training step", fifteen)])
    assert verdict["verdict"].startswith("holds only for ResNet-18 training step (fmd engine (auto)) "
                                         "(a reduction at least half the claimed one at the 10th percentile "
                                         "of 15 sessions)")
    assert "(sessions: 21.9 to 39.2; 10th to 90th percentile: 29.4 to 38.0)" in verdict["measured"]
    # Three sessions of 15 under the threshold: the 10th percentile falls below it.
    crossing = ch09.cost_verdict([cost_row(18, "training step", fifteen[:-2] + [20.0, 22.0])])["verdict"]
    assert crossing.startswith("within noise for ResNet-18 training step (fmd engine (auto)) (the sessions' "
                               "10th to 90th percentile crosses")
    # Rows that carry no percentile are read, and named, by their full range.
    bare = {k: v for k, v in cost_row(18, "training step", fifteen).items() if k not in (ch09.READ_LOW,
                                                                                         ch09.READ_HIGH)}
    assert ch09.cost_verdict([bare])["verdict"].startswith("within noise") and "percentile" not in str(
        ch09.cost_verdict([bare]))


def test_chapter_09_cost_sessions_time_each_row_in_fresh_processes(tmp_path):
    log = tmp_path / "timing" / "sessions.json"
    rows = ch09.cost_sessions("smoke", depths=(18,), threads=1, sessions=2, log=log)
    timed = [r for r in rows if r["cost"] in ("batch-1 latency", "training step")]
    assert timed and all(r["sessions"] == 2 and r[ch09.EARLIER] == 0 for r in rows)
    again = ch09.cost_sessions("smoke", depths=(18,), threads=1, sessions=1, log=log)
    assert all(r["sessions"] == 3 and r[ch09.EARLIER] == 2 for r in again)  # pooled with the logged two
    assert len(json.loads(log.read_text())) == 3
    for r in timed:
        assert r[ch09.LOW] <= r[ch09.REDUCTION] <= r[ch09.HIGH]
        assert (r[ch09.READ_LOW], r[ch09.READ_HIGH]) == (r[ch09.LOW], r[ch09.HIGH])  # below ten sessions
    macs = next(r for r in rows if r["cost"] == "MACs")
    assert macs[ch09.LOW] == macs[ch09.REDUCTION] == macs[ch09.HIGH]


def test_chapter_09_pools_only_sessions_of_the_same_cpu_code_and_sizes(tmp_path, monkeypatch):
    log = tmp_path / "sessions.json"

    def session(*computations):
        return [{"backbone": "ResNet-18", "cost": "training step", "setting": "32×32, batch 2",
                 "computation": c, "unit": "ms", ch09.REDUCTION: r} for c, r in computations]

    first = [session(("grouped", 30.0), ("auto", 5.0)), session(("grouped", 31.0), ("auto", 6.0))]
    second = [session(("grouped", 32.0), ("auto", 7.0))]
    assert ch09._pool(log, first, "smoke", (18,), 1) == first
    assert ch09._pool(log, second, "smoke", (18,), 1) == first + second
    assert ch09._pool(log, second, "smoke", (18,), 2) == second  # other threads
    assert ch09._pool(log, second, "smoke", (18, 50), 1) == second  # other backbones
    monkeypatch.setattr(ch09, "timed_code", lambda: "changed")
    assert ch09._pool(log, second, "smoke", (18,), 1) == second  # the timed code changed
    monkeypatch.setattr(ch09, "cpu_identity", lambda: "another CPU, 2 cores")
    assert ch09._pool(log, second, "smoke", (18,), 1) == second
    # Rows are pooled position by position only where every session measures the same rows in order.
    swapped = [session(("auto", 8.0), ("grouped", 33.0))]
    assert ch09._pool(log, swapped, "smoke", (18,), 1) == swapped
    assert ch09._pool(log, second, "smoke", (18,), 1) == [second[0], second[0]]  # the 'changed' ones
    logged = json.loads(log.read_text())
    assert len(logged) == 9
    assert {"cpu", "torch", "code", "setting", "commit", "created", "rows"} <= set(logged[0])
    assert "sessions" not in logged[0]["setting"]  # a run of more sessions measures each alike
    log.write_text("[{")
    with pytest.raises(ValueError, match=r"sessions.json is not valid JSON .*; delete it to start a new one"):
        ch09._pool(log, second, "smoke", (18,), 1)


def test_chapter_03_curves_reading_tells_a_step_limited_run_from_one_that_fits_beyond_the_test_set():
    def with_train(curve, train_top1, **kw):
        r = record(curve, **kw)
        r["history"][-1]["train_top1"] = train_top1
        return r
    close = {(18, 0, "static"): with_train([80.0, 85.0], 86.0, conv="static")}
    assert "stay within 2 pp" not in ch03.curves_reading(close)
    assert "stays within 2 pp of test accuracy" in ch03.curves_reading(close)
    apart = {**close, (18, 0, "fmdconv"): with_train([80.0, 90.0], 97.5)}
    text = ch03.curves_reading(apart)
    assert "ResNet-18 FMDConv 97.50 / 90.00%" in text and "up to 7.5 pp above test accuracy" in text


def test_worst_fall_is_the_largest_drop_below_the_best_earlier_epoch_and_the_readings_name_collapses():
    assert common.worst_fall(history([50.0, 80.0, 70.0, 85.0, 60.0, 90.0])) == (pytest.approx(25.0), 5)
    assert common.worst_fall(history([50.0, 60.0, 70.0])) == (0.0, None)
    runs = [record([50.0, 80.0, 79.0, 85.0], losses=[2.0, 1.0, 0.5, 0.4]),
            record([50.0, 80.0, 20.0, 85.0], seed=1, losses=[2.0, 1.0, 0.9, 0.5])]
    columns = common.convergence_columns(runs)  # the worst seed's fall, and its training loss then
    assert (columns[common.WORST_FALL], columns[common.FALL_EPOCH], columns[common.FALL_LOSS]) == \
        (60.0, 3, pytest.approx(-0.1))
    records = {(18, "static"): record([80.0, 85.0, 84.0], "static"),
               (18, "fmdconv"): record([80.0, 15.0, 85.1, 85.2], losses=[1.0, 0.8, 0.7, 0.6]),
               # falls over two epochs: the loss is read from the best epoch before (epoch 1) to the
               # bottom (epoch 3), not over the last epoch alone (+0.6 and +0.4 there)
               (34, "fmdconv"): record([80.0, 40.0, 15.0, 85.1, 85.2], depth=34,
                                       losses=[1.0, 0.6, 1.2, 0.7, 0.6]),
               (50, "fmdconv"): record([80.0, 40.0, 15.0, 85.0], depth=50, losses=[1.0, 0.5, 0.9, 0.6])}
    text = ch08.backbone_reading(ch08.backbone_rows(records))
    assert ("its final number does not show it): ResNet-18 FMDConv by 65.00 pp at epoch 2 (training loss "
            "-0.200 over the fall), ResNet-34 FMDConv by 65.00 pp at epoch 3 (training loss +0.200 over the "
            "fall), ResNet-50 FMDConv by 65.00 pp at epoch 3 (training loss -0.100 over the fall). Over 2 of "
            "these 3 falls the training loss went down") in text
    assert text.endswith("Chapter 04 (section 7) tests, on the worst fall of its reference run, whether a "
                         "fall like this is the network or BatchNorm's running statistics.")
    rose = {(34, "fmdconv"): records[(34, "fmdconv")]}
    assert ch08.backbone_reading(ch08.backbone_rows(rose)).endswith(
        "Over each of these falls the training loss rose too.")
    assert common.fall_loss(history([80.0, 70.0]), None) is None
    assert common.fall_loss(history([80.0]), 1) is None
    assert "ResNet-18 Static by" not in text  # a fall of 1 pp is no collapse


def test_a_run_at_a_scale_chapter_03_showed_finished_reads_finished_if_it_gains_no_more_than_its_runs():
    verdict = lambda curve, bound: common.convergence_columns(  # noqa: E731
        [record(curve)], scale_gain=bound)[CONVERGENCE]
    assert verdict([70.0, 80.0, 85.0, 88.0], None) == common.STILL_RISING
    assert verdict([70.0, 80.0, 85.0, 88.0], 3.0) == common.SCALE_OK
    assert verdict([70.0, 80.0, 85.0, 88.0], 2.9) == common.STILL_RISING  # gains more than the checked runs
    assert verdict([70.0, 80.0, 85.0, 85.2], 0.5) == common.SCALE_OK
    assert verdict([70.0, 80.0, 85.0, 60.0], 3.0) == common.FALLING
    # a check run of its own decides over the scale
    assert common.convergence_columns([record([70.0, 88.0])], record([90.0]), scale_gain=9.0)[CONVERGENCE] \
        == common.CHECK_OFF
    # chapter 08 lends the scale's verdict to ResNet-18 only, the depth chapter 03 checked
    rows = ch08.backbone_rows({(18, "fmdconv"): record([70.0, 80.0, 85.0, 88.0]),
                               (50, "fmdconv"): record([70.0, 80.0, 85.0, 88.0], depth=50)}, scale_gain=3.0)
    assert [r[CONVERGENCE] for r in rows] == [common.SCALE_OK, common.STILL_RISING]
    rising = [70.0, 80.0, 85.0, 88.0]
    paper, official = {34.0: record(rising)}, record(rising)
    verdict = lambda bound: ch09.temperature_verdict(paper, official, 0.5, scale_gain=bound)["verdict"]  # noqa: E731
    assert "Not shown finished" in verdict(None) and "Not shown finished" not in verdict(3.0)
    assert ".. " not in verdict(None)


def test_chapter_03_scale_gain_is_the_largest_gain_of_the_scale_runs_once_all_are_shown_finished(monkeypatch):
    mains = {(18, s, c): record([80.0, 88.0, 89.0, 89.0 + 0.1 * s], c, seed=s)
             for s in (0, 1) for c in ch03.SCALE_CONVS}
    checks = {(18, c): record([80.0, 88.0, 89.0, 89.0, 89.05], c) for c in ch03.SCALE_CONVS}
    stored = {True: checks}
    monkeypatch.setattr(ch03, "stored_records",
                        lambda configs, profile: stored[True] if set(configs) == set(checks) else mains)
    assert ch03.scale_gain("smoke") == pytest.approx(0.1)
    stored[True] = {**checks, (18, "fmdconv"): record([80.0, 92.0])}  # its check run ends far off
    assert ch03.scale_gain("smoke") is None


def test_chapter_03_scale_reading_says_which_length_every_network_finished_at():
    def row(epochs, conv, delta, tolerance):
        return {"main epochs": epochs, "conv": conv, CHECK: delta, "tolerance (pp)": tolerance,
                "finished": abs(delta) <= tolerance}

    rows = [row(15, "Static", 0.05, 0.3), row(15, "FMDConv", 0.39, 0.36),
            row(35, "Static", -0.46, 0.51), row(35, "FMDConv", 0.16, 0.3)]
    text = ch03.scale_reading(rows, 12000, 35)
    assert "12,000 training images" in text
    assert "* **15 epochs**: Static finished (check Δ +0.05 pp against ±0.30); FMDConv not shown" in text
    assert text.endswith("The sweeps train 35 epochs: the shortest length tried at which every network is "
                         "shown finished.")
    assert ch03.scale_reading(rows[:2], None, 15).endswith("not every network is shown finished there.")
    assert ch03.scale_reading(rows[2:3], None, 35).endswith("not every network is shown finished there.")
    # the sweeps' own length is the one judged, whichever length the rows list last
    assert ch03.scale_reading(rows, None, 15).endswith("The sweeps train 15 epochs: not every network is "
                                                       "shown finished there.")
    assert ch03.scale_reading([], None, 35) == "No run of the sweeps' scale is stored."


def test_the_sweeps_scale_is_its_static_and_fmdconv_runs_at_every_seed_with_check_runs():
    configs = ch03.scale_configs("smoke")
    assert set(configs) == {(18, s, c) for s in (0, 1) for c in ch03.SCALE_CONVS}
    from fmd.profiles import ablation_config
    assert configs[(18, 0, "fmdconv")].key() == ablation_config("smoke", conv="fmdconv").key()
    assert {c.epochs for c in ch03.check_configs(configs).values()} == {2}  # 1.5 × 1 epoch, rounded up


def test_chapter_08_anneal_rows_count_the_anneal_in_steps_and_give_each_runs_worst_fall():
    short = record([80.0, 85.0, 30.0, 86.0], batch_size=2, anneal_epochs=3.0, losses=[1.0, 0.8, 0.9, 0.6])
    long = record([80.0, 85.0, 84.0, 88.0], batch_size=2, anneal_epochs=15.0)
    rows = ch08.anneal_rows({"short": short, "long": long})
    assert [(r["anneal steps"], r[common.WORST_FALL], r[common.FALL_EPOCH]) for r in rows] == \
        [(12, 55.0, 3), (60, 1.0, 3)]  # 8 images per epoch at batch 2: 4 steps an epoch
    assert ch08.anneal_reading(rows).startswith(
        "**Reading** (one seed each; from the table above): annealed over 3 epochs (12 steps) it fell 55.00"
        " pp at epoch 3 (training loss +0.100 over the fall)")


def test_chapter_03_deep_pilot_reads_the_resnet50s_at_both_lengths_with_their_seed_spread(monkeypatch):
    configs = ch03.comparison_configs("quick", "fashion_mnist", depths=(18, 50))
    longer = ch03.deep_configs("quick", configs)
    # the pilot's runs: the comparison's ResNet-50 config at its check run's length, at the listed seeds
    assert set(longer) == {(50, s, "static") for s in (0, 1, 2)} | {(50, 0, "dyconv")}
    assert {c.epochs for c in longer.values()} == {common.check_config(configs[(50, 0, "static")]).epochs}
    assert longer[(50, 2, "static")].seed == 2 and ch03.deep_configs("smoke", configs) == {}

    def run(curve, conv, seed=0, train=99.9):
        r = record(curve, conv, depth=50, seed=seed)
        r["history"][-1]["train_top1"] = train
        return r

    records = {(50, 0, "static"): run([80.0, 88.0], "static"),
               (50, 0, "dyconv"): run([80.0, 88.3], "dyconv", train=98.0),
               (50, 0, "condconv"): run([80.0, 87.0], "condconv"),
               (18, 0, "static"): record([80.0, 93.0], "static")}
    checks = {(50, "static"): run([80.0, 90.0, 90.02], "static"),
              (50, "dyconv"): run([80.0, 88.1, 88.2], "dyconv"),
              (50, "condconv"): run([87.1], "condconv")}
    pilot = {(50, s, "static"): run([85.0, 89.0, 89.4 + 0.3 * s], "static", s) for s in (0, 1, 2)}
    pilot_check = {(50, "static"): run([85.0, 88.0, 89.0, 89.5], "static")}
    monkeypatch.setattr(ch03, "stored_records",
                        lambda cs, profile: pilot if set(cs) == set(longer) else pilot_check)
    rows = ch03.deep_rows("quick", configs, records, checks)
    # CondConv is not piloted, ResNet-18 is not deep; the DynamicConv pilot has no stored run here
    assert [(r["conv"], r["main epochs"], r["seeds"]) for r in rows] == \
        [("Static", 2, 1), ("DynamicConv", 2, 1), ("Static", 3, 3)]
    assert [r["check top-1 (%)"] for r in rows] == [90.02, 88.2, 89.5]  # each beside its own check run
    assert [r["main train top-1 (%)"] for r in rows] == [99.9, 98.0, 99.9]
    assert rows[0]["lowest seed top-1 (%)"] is None and rows[2]["lowest seed top-1 (%)"] == 89.4
    assert rows[2][CHECK] == pytest.approx(-0.2) and rows[2]["finished"] and not rows[0]["finished"]
    assert rows[1]["finished"]
    text = ch03.deep_reading("quick", configs, rows)
    assert "12,000 training images" in text
    assert "* **ResNet-50 Static, 2 epochs** (1 seed): not shown finished (check run at 3 epochs: Δ +2.02" \
        in text
    assert "* **3 epochs**: no run with a check run stored for ResNet-50 DynamicConv." in text
    assert "the 3 seeds of the Static at 3 epochs end at 89.40–90.00 %; its check run's 89.50 % lies " \
        "within their range." in text
    assert "training top-1 of 98.00–99.90 %." in text
    # the longer length has every row finished but lacks the DynamicConv: no length is every network's
    assert text.endswith("Lengths at which every network tried is shown finished: none.")
    rows[0]["finished"] = True
    assert ch03.deep_reading("quick", configs, rows).endswith("shown finished: 2 epochs.")
    # a tried network with no row at all still counts: the Static alone, finished at both lengths
    assert ch03.deep_reading("quick", configs, [rows[0], rows[2]]).endswith("shown finished: none.")
    below = [dict(rows[2], **{"check top-1 (%)": 89.3})]
    assert "lies below all of them" in ch03.deep_reading("quick", configs, below)
    assert ch03.deep_reading("quick", configs, []) == "No run of the deeper pilot is stored."
