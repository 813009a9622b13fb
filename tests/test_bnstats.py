"""Re-estimating BatchNorm statistics, and the probe that retrains a run to the epochs of a fall."""
import json

import pytest
import torch
from torch import nn

import fmd.bnstats as bnstats
from fmd import runs
from fmd.bnstats import PROBE_FILE, load_probe, probe_fall, probe_rows, reestimate_bn
from fmd.checkpoints import CheckpointError
from fmd.checkpoints import checkpoint_path, load_checkpoint
from fmd.chapters import ch04_temperature_and_k as ch04
from fmd.data import eval_loader
from fmd.loop import build_model, evaluate
from fmd.train import make_config, train


def tiny(**overrides):
    values = dict(conv="fmdconv", train_subset=256, test_subset=128, epochs=3, batch_size=32)
    values.update(overrides)
    return make_config("smoke", **values)


def test_reestimate_gives_the_data_statistics_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    norm = model[1]
    norm.running_mean.fill_(7.0)
    norm.running_var.fill_(9.0)
    batches = [(torch.randn(5, 3, 6, 6) * 2 + 1, torch.zeros(5)) for _ in range(3)]

    fixed = reestimate_bn(model, batches)

    with torch.no_grad():  # a cumulative average of each batch's statistics (equal batches)
        outs = [model[0](x) for x, _ in batches]
    mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.var(dim=(0, 2, 3)) for o in outs]).mean(0)
    assert torch.allclose(fixed[1].running_mean, mean, atol=1e-5)
    assert torch.allclose(fixed[1].running_var, var, rtol=1e-4)
    assert not fixed.training
    assert torch.all(norm.running_mean == 7.0) and torch.all(norm.running_var == 9.0)  # the original
    assert norm.momentum == fixed[1].momentum == 0.1


def test_probe_retrains_the_run_and_evaluates_each_state_both_ways(tmp_path):
    config = tiny()
    record = train(config, tmp_path / "runs", progress=False)
    threads = torch.get_num_threads()
    probe = probe_fall(config, record, [3, 2], tmp_path / "runs")  # the last epoch too

    assert probe["threads"] == config.threads == 1 and torch.get_num_threads() == threads
    assert probe["epochs"] == [2, 3] and [r["epoch"] for r in probe["rows"]] == [2, 3]
    assert probe["key"] == config.key() and probe["record_created"] == record["created"]
    path = runs.run_dir(config.identity(), tmp_path / "runs") / PROBE_FILE
    assert json.loads(path.read_text()) == probe == load_probe(config, tmp_path / "runs")
    assert not (path.parent / "checkpoints" / "bn-probe").exists()  # the retraining is removed
    assert runs.list_records(tmp_path / "runs") == [record]  # the retraining left no record
    # On the CPU the retraining reproduces the run: its state after epoch 2 is the record's.
    row = probe["rows"][0]
    assert row["trained top-1"] == pytest.approx(record["history"][1]["test_top1"], abs=0.01)
    assert row["record top-1"] == record["history"][1]["test_top1"]
    # ... and the re-estimated number is that state evaluated after reestimate_bn.
    again = tmp_path / "again"
    train(config, again, stop_after=2, progress=False)
    model = build_model(config, record["num_classes"], record["input_size"][1])
    model.load_state_dict(load_checkpoint(checkpoint_path(config, again), config)["model"])
    fixed = evaluate(reestimate_bn(model, eval_loader(config, "train")), eval_loader(config))
    assert row["re-estimated top-1"] == pytest.approx(fixed["top1"], abs=0.01)
    gates = sorted({round(float(b), 3) for n, b in model.named_buffers() if n.endswith("temperature")
                    and "kernel" not in n})
    assert set(row["temperatures"]) == {"gate", "kernel"} and row["temperatures"]["gate"] == gates
    table = probe_rows(probe)
    change = row["re-estimated top-1"] - row["trained top-1"]
    assert table[0]["change (pp)"] == pytest.approx(change, abs=0.011)
    assert table[0]["temperatures"].startswith("gate ") and ", kernel 34" in table[0]["temperatures"]
    assert set(ch04.PROBE_COLUMNS) <= set(table[0])
    # Each row keeps the engine strategies the retraining computed with: on one CPU, the run's.
    assert all(r["strategies"] == record["strategies"] and r["strategies as run"] for r in probe["rows"])


def test_a_run_started_with_given_strategies_computes_with_them(tmp_path):
    config = tiny(epochs=1)
    tuned = train(config, tmp_path / "a", progress=False)["strategies"]
    # In every layer another exact strategy than the one tune picked (both compute the same function).
    chosen = {name: "kfold_conv" if picked == "grouped" else "grouped" for name, picked in tuned.items()}
    again = train(config, tmp_path / "b", progress=False, strategies=chosen)
    assert again["strategies"] == chosen


def test_the_probe_retrains_with_the_record_s_strategies_even_over_a_scratch_state_of_others(tmp_path):
    config = tiny()
    record = train(config, tmp_path, progress=False)
    other = {name: "kfold_conv" if picked == "grouped" else "grouped"
             for name, picked in record["strategies"].items()}
    # An interrupted probe's scratch state that computed with tune's strategies, not the record's:
    scratch = runs.run_dir(config.identity(), tmp_path) / "checkpoints" / "bn-probe"
    train(config, scratch, stop_after=1, progress=False)
    probe = probe_fall(config, dict(record, strategies=other), [1, 2], tmp_path)
    assert all(r["strategies"] == other and r["strategies as run"] for r in probe["rows"])
    # A record that names no strategies: the rows keep what was used and claim nothing.
    bare = {k: v for k, v in record.items() if k != "strategies"}
    probe = probe_fall(config, dict(bare, created="again"), [2], tmp_path)
    assert "strategies as run" not in probe["rows"][0] and probe["rows"][0]["strategies"]


def test_a_stored_probe_is_returned_and_an_interrupted_one_finished(tmp_path, monkeypatch):
    config = tiny()
    record = train(config, tmp_path, progress=False)
    real = bnstats._measure
    calls = []

    def measure_then_crash(epoch, *args):
        calls.append(epoch)
        if epoch == 2:
            raise KeyboardInterrupt
        return real(epoch, *args)

    monkeypatch.setattr(bnstats, "_measure", measure_then_crash)
    with pytest.raises(KeyboardInterrupt):
        probe_fall(config, record, [1, 2], tmp_path)
    assert load_probe(config, tmp_path) is None
    monkeypatch.setattr(bnstats, "_measure", lambda epoch, *args: calls.append(epoch) or real(epoch, *args))
    probe = probe_fall(config, record, [1, 2], tmp_path)
    assert calls == [1, 2, 2]  # epoch 1's row was kept, epoch 2 measured again
    assert [r["epoch"] for r in probe["rows"]] == [1, 2]

    monkeypatch.setattr(bnstats, "train", lambda *a, **k: pytest.fail("a stored probe retrained"))
    assert probe_fall(config, record, [1, 2], tmp_path) == probe


def test_a_stale_probe_is_made_again_and_a_state_past_the_epoch_starts_over(tmp_path, capsys):
    config = tiny()
    record = train(config, tmp_path, progress=False)
    first = probe_fall(config, record, [2], tmp_path)
    # Other epochs of the same record: probed again. The scratch checkpoint is at epoch 2 after the
    # first row, so epoch 1 is trained again from the start.
    scratch = runs.run_dir(config.identity(), tmp_path) / "checkpoints" / "bn-probe"
    train(config, scratch, stop_after=2, progress=False)
    probe = probe_fall(config, record, [1], tmp_path)
    assert "the stored BatchNorm probe" in capsys.readouterr().out
    assert probe["epochs"] == [1] and load_probe(config, tmp_path) == probe
    assert probe["rows"][0]["trained top-1"] == pytest.approx(record["history"][0]["test_top1"], abs=0.01)
    # A newer record of the run: probed again too.
    newer = dict(record, created="2099-01-01T00:00:00Z")
    assert probe_fall(config, newer, [2], tmp_path)["rows"] == first["rows"]
    assert load_probe(config, tmp_path)["record_created"] == "2099-01-01T00:00:00Z"


def test_a_damaged_scratch_checkpoint_names_the_folder_to_delete(tmp_path):
    config = tiny()
    record = train(config, tmp_path, progress=False)
    scratch = runs.run_dir(config.identity(), tmp_path) / "checkpoints" / "bn-probe"
    path = checkpoint_path(config, scratch)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"or delete {scratch} to probe again from the start"):
        probe_fall(config, record, [1], tmp_path)


@pytest.mark.parametrize("epochs", [[], [0, 1], [4]])
def test_probe_epochs_outside_the_run_are_refused(tmp_path, epochs):
    config = tiny()
    with pytest.raises(ValueError, match=r"epochs to probe must lie in 1\.\.3"):
        probe_fall(config, {"history": []}, epochs, tmp_path)


def _probe(rows, device="cpu: test"):
    names = ("epoch", "record top-1", "trained top-1", "re-estimated top-1")
    gates = {1: [30.0], 2: [10.667], 3: [1.0], 4: [1.0]}
    return {"device": device, "rows": [
        dict(zip(names, r), temperatures={"gate": gates[r[0]], "kernel": [34.0]}) for r in rows]}


def test_the_reading_says_how_much_of_the_fall_re_estimating_recovers():
    rows = [(2, 83.6, 83.9, 84.1), (3, 67.1, 68.7, 83.9), (4, 83.6, 85.8, 85.9)]
    removed = ch04.fall_probe_reading(_probe(rows), 3)
    assert removed.startswith("**Reading.** Retrained (cpu: test), the run scores 68.70% test top-1 at "
                              "epoch 3 against 83.90% at epoch 2 (its record: 67.10% at epoch 3).")
    assert ("it scores 83.90% (+15.20 pp), against 84.10% at epoch 2 re-estimated the same way: 0.20 pp of "
            "the 15.20 pp fall remain.") in removed
    assert ("the fall is BatchNorm's running statistics (running averages kept while the gate temperature "
            "went from 10.667 to 1), not weights") in removed
    assert removed.endswith("At the other probed epochs (2, 4) re-estimating moved the test top-1 by at most "
                            "0.20 pp.")
    part = ch04.fall_probe_reading(_probe([(2, 83.6, 83.9, 84.1), (3, 40.0, 41.0, 75.0)]), 3)
    assert "9.10 pp of the 42.90 pp fall remain" in part
    assert ("Re-estimating recovers most of the fall: BatchNorm's statistics explain it in part, and the "
            "9.10 pp that remain they do not explain.") in part
    less = ch04.fall_probe_reading(_probe([(2, 83.6, 83.9, 84.1), (3, 40.0, 41.0, 60.0)]), 3)
    assert "Re-estimating recovers part of the fall" in less
    assert "running statistics (" not in part and "other probed epoch (2)" in part
    kept = ch04.fall_probe_reading(_probe([(2, 83.6, 83.9, 84.1), (3, 40.0, 41.0, 40.0)]), 3)
    assert "Re-estimating does not recover it" in kept


def test_the_reading_says_when_the_retraining_does_not_fall():
    text = ch04.fall_probe_reading(_probe([(2, 83.6, 83.9, 84.1), (3, 60.0, 83.5, 83.6)]), 3)
    assert text.endswith("It does not fall by more than 10 pp this time: the probe cannot test the fall.")
    assert "BatchNorm's running statistics" not in text
    with pytest.raises(ValueError, match=r"the probe has epochs \[2, 3\], not the fall's epoch 4"):
        ch04.fall_probe_reading(_probe([(2, 83.6, 83.9, 84.1), (3, 60.0, 83.5, 83.6)]), 4)


def test_the_reading_says_whether_the_retraining_computed_with_the_run_s_strategies():
    rows = [(2, 83.6, 83.9, 84.1), (3, 67.1, 68.7, 83.9), (4, 83.6, 85.8, 85.9)]
    old = ch04.fall_probe_reading(_probe(rows), 3)
    assert "strategies" not in old  # a probe made before they were kept says nothing
    probe = _probe(rows)
    for row in probe["rows"]:
        row["strategies as run"] = True
    assert ch04.fall_probe_reading(probe, 3).endswith(
        "0.20 pp. The retraining computed with the run's own engine strategies at every probed epoch.")
    probe["rows"][1]["strategies as run"] = probe["rows"][2]["strategies as run"] = False
    assert ch04.fall_probe_reading(probe, 3).endswith(
        "0.20 pp. At epochs 3, 4 the retraining computed with other engine strategies than the run (they "
        "agree to about 1e-6, not bit for bit).")


def test_the_reading_follows_a_retraining_that_falls_one_epoch_later():
    # Chapter 08's FMDConv ResNet-50 probe at 9ec15b9: the record fell at epoch 3, the retraining at 4.
    probe = _probe([(2, 75.84, 75.89, 78.26), (3, 24.14, 75.13, 74.56), (4, 71.55, 48.99, 72.66)])
    text = ch04.fall_probe_reading(probe, 3)
    assert text.startswith("**Reading.** Retrained (cpu: test), the run scores 75.13% test top-1 at epoch 3 "
                           "against 75.89% at epoch 2 (its record: 24.14% at epoch 3). It does not fall "
                           "there this time but at epoch 4: 48.99% against 75.89% at epoch 2 (its record: "
                           "71.55%)")
    assert "it scores 72.66% (+23.67 pp), against 78.26% at epoch 2" in text
    assert "5.60 pp of the 26.90 pp fall remain. Re-estimating recovers most of the fall" in text
    assert text.endswith("At the other probed epochs (2, 3) re-estimating moved the test top-1 by at most "
                         "2.37 pp.")
    steady = _probe([(2, 75.84, 75.89, 78.26), (3, 24.14, 75.13, 74.56), (4, 71.55, 70.0, 72.66)])
    assert ch04.fall_probe_reading(steady, 3).endswith("the probe cannot test the fall.")


def test_fall_probe_probes_around_the_worst_fall_only(tmp_path, monkeypatch):
    config = tiny(epochs=6)
    asked = []
    monkeypatch.setattr(ch04, "probe_fall", lambda c, r, epochs, root, progress: asked.append(epochs) or "p")
    history = [{"test_top1": t} for t in (50, 80, 85, 60, 84, 86)]
    assert ch04.fall_probe(config, {"history": history}, "smoke") == "p"
    assert asked == [[3, 4, 5]]
    steady = [{"test_top1": t} for t in (50, 80, 85, 79, 84, 86)]  # a 6 pp fall is no collapse
    assert ch04.fall_probe(config, {"history": steady}, "smoke") is None
    last = [{"test_top1": t} for t in (50, 80, 85, 84, 84, 60)]
    ch04.fall_probe(config, {"history": last}, "smoke")
    assert asked[-1] == [5, 6]  # no epoch past the run's last


def test_the_reading_names_a_temperature_change_only_where_there_was_one():
    text = ch04.fall_probe_reading(_probe([(3, 84.0, 84.0, 87.0), (4, 60.0, 60.0, 88.0)]), 4)
    assert "the fall is BatchNorm's running statistics, not weights" in text
