"""Re-estimating BatchNorm statistics, and the probe that retrains a run to the epochs of a fall."""
import json

import pytest
import torch
from torch import nn

import fmd.bnstats as bnstats
from fmd import runs
from fmd.bnstats import PROBE_FILE, load_probe, probe_fall, probe_rows, reestimate_bn
from fmd.checkpoints import checkpoint_path, load_checkpoint
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
    probe = probe_fall(config, record, [2, 1], tmp_path / "runs")

    assert probe["threads"] == config.threads == 1 and torch.get_num_threads() == threads

    assert probe["epochs"] == [1, 2] and [r["epoch"] for r in probe["rows"]] == [1, 2]
    assert probe["key"] == config.key()
    path = runs.run_dir(config.identity(), tmp_path / "runs") / PROBE_FILE
    assert json.loads(path.read_text()) == probe == load_probe(config, tmp_path / "runs")
    assert not (path.parent / "checkpoints" / "bn-probe").exists()  # the retraining is removed
    # On the CPU the retraining reproduces the run: its state after epoch 2 is the record's.
    row = probe["rows"][1]
    assert row["trained top-1"] == pytest.approx(record["history"][1]["test_top1"], abs=0.01)
    assert row["record top-1"] == record["history"][1]["test_top1"]
    # ... and the re-estimated number is that state evaluated after reestimate_bn.
    again = tmp_path / "again"
    train(config, again, stop_after=2, progress=False)
    model = build_model(config, record["num_classes"], record["input_size"][1])
    model.load_state_dict(load_checkpoint(checkpoint_path(config, again), config)["model"])
    fixed = evaluate(reestimate_bn(model, eval_loader(config, "train")), eval_loader(config))
    assert row["re-estimated top-1"] == pytest.approx(fixed["top1"], abs=0.01)
    assert row["temperatures"] == sorted({round(float(b), 3) for n, b in model.named_buffers()
                                          if n.endswith("temperature")})
    table = probe_rows(probe)
    change = row["re-estimated top-1"] - row["trained top-1"]
    assert table[1]["change (pp)"] == pytest.approx(change, abs=0.011)


def test_a_stored_probe_is_returned_and_an_interrupted_one_finished(tmp_path, monkeypatch):
    config = tiny()
    record = train(config, tmp_path, progress=False)
    real = bnstats._probe_row
    calls = []

    def row_then_crash(epoch, *args):
        calls.append(epoch)
        if epoch == 2:
            raise KeyboardInterrupt
        return real(epoch, *args)

    monkeypatch.setattr(bnstats, "_probe_row", row_then_crash)
    with pytest.raises(KeyboardInterrupt):
        probe_fall(config, record, [1, 2], tmp_path)
    assert load_probe(config, tmp_path) is None
    monkeypatch.setattr(bnstats, "_probe_row", lambda epoch, *args: calls.append(epoch) or real(epoch, *args))
    probe = probe_fall(config, record, [1, 2], tmp_path)
    assert calls == [1, 2, 2]  # epoch 1's row was kept, epoch 2 measured again
    assert [r["epoch"] for r in probe["rows"]] == [1, 2]

    monkeypatch.setattr(bnstats, "train", lambda *a, **k: pytest.fail("a stored probe retrained"))
    assert probe_fall(config, record, [1, 2], tmp_path) == probe


@pytest.mark.parametrize("epochs", [[], [0, 1], [4]])
def test_probe_epochs_outside_the_run_are_refused(tmp_path, epochs):
    config = tiny()
    with pytest.raises(ValueError, match=r"epochs to probe must lie in 1\.\.3"):
        probe_fall(config, {"history": []}, epochs, tmp_path)


def _probe(rows):
    names = ("epoch", "record top-1", "trained top-1", "re-estimated top-1", "temperatures")
    return {"rows": [dict(zip(names, r + ([1.0, 34.0] if r[0] > 2 else [10.667, 34.0],))) for r in rows]}


def test_the_reading_says_whether_re_estimating_removes_the_fall():
    from fmd.chapters.ch04_temperature_and_k import fall_probe_reading
    rows = [(2, 83.6, 83.9, 84.1), (3, 67.1, 68.7, 83.9), (4, 83.6, 85.8, 85.9)]
    removed = fall_probe_reading(_probe(rows), 3)
    assert "falls at epoch 3 as its record did: 68.70% test top-1 (the record: 67.10%)" in removed
    assert "83.90% (+15.20 pp), against 84.10% at epoch 2" in removed
    assert ("the fall is BatchNorm's running statistics (averaged over the epoch in which the layers' "
            "temperatures went from 10.667, 34 to 1, 34), not a network") in removed
    assert "epochs (2, 4) re-estimating moved the test top-1 by at most 0.20 pp." in removed
    kept = fall_probe_reading(_probe([(2, 83.6, 83.9, 84.1), (3, 40.0, 41.0, 60.0)]), 3)
    assert "The fall stays above 10 pp: it is not (only) BatchNorm's statistics." in kept
    assert "BatchNorm's running statistics, averaged" not in kept


def test_fall_probe_probes_around_the_worst_fall_only(tmp_path, monkeypatch):
    from fmd.chapters import ch04_temperature_and_k as ch04
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
    from fmd.chapters.ch04_temperature_and_k import fall_probe_reading
    rows = [{"epoch": e, "record top-1": t, "trained top-1": t, "re-estimated top-1": 84.0 + e,
             "temperatures": [1.0, 34.0]} for e, t in ((3, 84.0), (4, 60.0))]
    text = fall_probe_reading({"rows": rows}, 4)
    assert "the fall is BatchNorm's running statistics, not a network" in text
