"""What a fresh clone needs: kernel entropies in the records, half-precision weights, visible progress."""
import io
import math
import shutil

import pytest
import torch

from fmd import runs
from fmd.chapters import ch04_temperature_and_k as ch04
from fmd.metrics import kernel_entropies
from fmd.reproduce import ProgressLines
from fmd.checkpoints import WEIGHTS_NAME
from fmd.record import ENTROPY_IMAGES
from fmd.train import (CheckpointError, checkpoint_path, load_trained, make_config, save_weights, train,
                       train_all, weights_path)


def tiny(**overrides):
    values = dict(train_subset=256, test_subset=128, epochs=1, batch_size=32)
    values.update(overrides)
    return make_config("smoke", **values)


def test_a_finished_run_records_its_kernel_entropies(tmp_path):
    config = tiny(conv="fmdconv", kernel_num=4)
    record = train(config, tmp_path, progress=False)
    stored = record["kernel_entropy"]
    assert stored["images"] == min(ENTROPY_IMAGES, record["test_images"])
    model, _ = load_trained(config, tmp_path)
    x = ch04.test_images(config, stored["images"])
    measured = kernel_entropies(model, x)
    assert set(stored["nats"]) == set(measured) and len(measured) == 16  # every block conv of ResNet-18
    for name, value in measured.items():
        assert stored["nats"][name] == pytest.approx(value, rel=1e-5)
        assert 0 <= value <= math.log(4) + 1e-6
    rows = ch04.entropy_rows({"run": record}, "group")
    assert len(rows) == 16 and all(0 <= r["entropy / ln K"] <= 1 + 1e-6 for r in rows)
    static = train(tiny(conv="static"), tmp_path, progress=False)
    assert "kernel_entropy" not in static and ch04.entropy_rows({"s": static}, "g") == []


def test_an_old_record_gets_its_entropy_from_the_model_once(tmp_path, monkeypatch):
    config = tiny(conv="fmdconv")
    record = train(config, tmp_path, progress=False)
    old = {k: v for k, v in record.items() if k != "kernel_entropy"}
    runs.write_record(old, tmp_path)
    monkeypatch.setattr(ch04, "runs_root", lambda profile: tmp_path)  # the chapter's runs folder
    filled = ch04.with_kernel_entropy({"r": config}, {"r": old}, "smoke")["r"]
    assert filled["kernel_entropy"]["nats"] == pytest.approx(record["kernel_entropy"]["nats"], rel=1e-5)
    assert runs.load_record(config.identity(), tmp_path)["final"] == record["final"]  # not retrained


def test_half_precision_weights_replace_a_missing_checkpoint(tmp_path):
    config = tiny(conv="fmdconv")
    record = train(config, tmp_path, progress=False)
    model, _ = load_trained(config, tmp_path)
    path = save_weights(config, tmp_path)
    assert path.name == WEIGHTS_NAME
    assert path.stat().st_size < 0.6 * checkpoint_path(config, tmp_path).stat().st_size
    shutil.rmtree(checkpoint_path(config, tmp_path).parent)  # a fresh clone: records and weights only
    again, again_record = load_trained(config, tmp_path, retrain=True)
    assert again_record == record  # loaded, not trained again
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(again(x), model(x), atol=2e-2, rtol=2e-2)
        assert (again(x).argmax(1) == model(x).argmax(1)).all()
    other = tiny(conv="fmdconv", seed=1)
    train(other, tmp_path, progress=False)
    shutil.copy(path, weights_path(other, tmp_path))
    shutil.rmtree(checkpoint_path(other, tmp_path).parent)
    with pytest.raises(CheckpointError, match="belongs to another run"):
        load_trained(other, tmp_path)
    weights_path(other, tmp_path).write_bytes(path.read_bytes()[:1000])  # cut short
    with pytest.raises(CheckpointError, match="corrupt or unreadable.*delete them"):
        load_trained(other, tmp_path)
    torch.save([1, 2], weights_path(other, tmp_path))
    with pytest.raises(CheckpointError, match="not written by fmd.train.save_weights"):
        load_trained(other, tmp_path)


def test_training_progress_reaches_the_reproduce_output(tmp_path, capsys):
    configs = {"a": tiny(conv="static", epochs=2), "b": tiny(conv="static", epochs=2, seed=1)}
    train_all(configs, tmp_path, verbose=True)
    lines = capsys.readouterr().err.splitlines()
    first_epochs = [line for line in lines if "epoch 1/2" in line]
    assert [line.split()[:2] for line in first_epochs] == [["[run", "1/2]"], ["[run", "2/2]"]]
    assert all("ETA" in line for line in first_epochs)
    train(tiny(conv="static", epochs=4), tmp_path, stop_after=2, progress=False, verbose=True)
    stopped = [line for line in capsys.readouterr().err.splitlines() if "train loss" in line]
    assert "ETA" in stopped[0] and "ETA" not in stopped[1]  # the ETA of this call, which stops at 2
    out = io.StringIO()
    stream = ProgressLines(out)
    for chunk in ("noise\n[run 1/2] epoch 1/2: loss", " 0.5\n", "\rbar 50%|##\n[train] record: x\n"):
        stream.write(chunk)
    assert out.getvalue() == "  [run 1/2] epoch 1/2: loss 0.5\n  [train] record: x\n"


def test_a_fresh_clone_finds_every_quick_run_and_the_weights_it_loads():
    """`make reproduce` on a fresh clone trains nothing: every run the chapters read under `quick`
    is committed, finished, and the models chapters 04 and 06 load have their stored weights
    (:func:`fmd.reproduce.missing_runs` asks for those)."""
    from fmd.chapters import chapter_runs, loaded_runs
    from fmd.profiles import runs_root
    from fmd.reproduce import missing_runs, stored_runs_line

    root = runs_root("quick")
    for chapter, config in chapter_runs("quick").values():
        record = runs.load_record(config.identity(), root)
        assert record is not None, f"chapter {chapter}: {runs.run_name(config.identity())} not committed"
        assert len(record["history"]) == config.epochs
    assert missing_runs("quick") == {}
    assert stored_runs_line(len(chapter_runs("quick")), {}, 2, root).endswith("nothing to train")
    loaded = loaded_runs("quick")
    assert set(loaded) <= set(chapter_runs("quick"))  # missing_runs asks for their weights
    for key in loaded:  # committed, not only a local checkpoint
        assert weights_path(chapter_runs("quick")[key][1], root).is_file(), key


def _probed_runs():
    from fmd.chapters import ch08_paper_figures as ch08
    return {"04": ch04.reference_config("quick"),
            "08": ch08.backbone_configs("quick", (50,), ("fmdconv",), 0)[(50, "fmdconv")]}


@pytest.mark.parametrize("chapter", ["04", "08"])
def test_a_fresh_clone_has_the_batchnorm_probes_the_chapters_read(chapter):
    """Chapter 04's section 7 (its reference run) and chapter 08's anneal section (the backbone
    table's FMDConv ResNet-50) retrain nothing on a fresh clone: the probe of each run's worst fall
    is committed beside its record, for the epochs ch04.fall_probe asks for."""
    from fmd.bnstats import load_probe
    from fmd.chapters.common import worst_fall
    from fmd.profiles import runs_root

    config = _probed_runs()[chapter]
    record = runs.load_record(config.identity(), runs_root("quick"))
    _, epoch = worst_fall(record["history"])
    probe = load_probe(config, runs_root("quick"))
    assert probe is not None and probe["key"] == config.key()
    assert probe["epochs"] == [epoch - 1, epoch, epoch + 1]
    assert ch04.fall_probe(config, record, "quick") == probe  # the stored one, no training


def test_reproduce_only_a_chapter_also_checks_the_runs_whose_weights_it_loads():
    """`make reproduce --only 06` trains nothing itself but loads chapter 05's runs: it checks them
    (and their weights) up front instead of training them inside the notebook."""
    from fmd.chapters import chapter_runs, loaded_runs
    from fmd.reproduce import needed_runs

    gradcam_models = {k for k, chapters in loaded_runs("quick").items() if "06" in chapters}
    assert len(gradcam_models) == 4
    assert set(needed_runs("quick", ["06"])) == gradcam_models
    reference = [k for k, chapters in loaded_runs("quick").items() if "04" in chapters]
    assert len(reference) == 1 and reference[0] in needed_runs("quick", ["04"])
    assert needed_runs("quick") == chapter_runs("quick")


def test_a_run_whose_weights_a_chapter_loads_is_missing_without_them(tmp_path, monkeypatch):
    """`make reproduce` trains a loaded run (chapter 06's Grad-CAM models, chapter 04's reference)
    again when its record is stored but its weights are not; any other run needs its record only."""
    from fmd import reproduce
    from fmd.chapters import ch05_attention_ablation as ch05, loaded_runs
    from fmd.profiles import runs_root

    chapter5 = ch05.default_configs("quick")
    loaded, other = chapter5["input"], chapter5["input+output"]
    assert loaded.key() in loaded_runs("quick") and other.key() not in loaded_runs("quick")
    for config in (loaded, other):  # the committed records, without their weights
        folder = runs.run_dir(config.identity(), tmp_path)
        folder.mkdir(parents=True)
        shutil.copy(runs.run_dir(config.identity(), runs_root("quick")) / "record.json", folder)
    monkeypatch.setattr(reproduce, "runs_root", lambda profile: tmp_path)
    needed = {c.key(): ("05", c) for c in (loaded, other)}
    assert set(reproduce.missing_runs("quick", needed)) == {loaded.key()}
    shutil.copy(weights_path(loaded, runs_root("quick")), weights_path(loaded, tmp_path))
    assert reproduce.missing_runs("quick", needed) == {}


def test_reproduce_estimates_the_runs_to_train_from_stored_runs_of_the_same_networks(tmp_path):
    """The up-front cost line: a missing run of a network that has a stored record is estimated
    from that record's seconds per epoch; one without is counted as not estimated."""
    from fmd.reproduce import estimate_seconds, stored_runs_line

    stored = make_config("smoke", conv="static", epochs=2)
    record = {"name": "r", "key": stored.key(), "config": stored.to_dict(), "wall_time_s": 30.0,
              "history": [{}, {}]}
    folder = runs.run_dir(stored.identity(), tmp_path)
    folder.mkdir(parents=True)
    runs.write_json(folder / runs.RECORD_NAME, record)
    longer, other = make_config("smoke", conv="static", epochs=4, seed=1), make_config("smoke", conv="odconv")
    assert estimate_seconds([longer, other], tmp_path) == (60.0, 1)
    missing = {"a": ("03", longer), "b": ("05", other)}
    line = stored_runs_line(5, missing, 2, tmp_path)
    assert line.startswith("training runs the chapters read: 5, stored 3; to train 2 (chapter 03: 1, "
                           "chapter 05: 1); about 0.0 h at 2 at a time")
    assert "(1 of 2 estimated" in line
    assert "about 0.0 h at 1 at a time" in stored_runs_line(5, {"a": missing["a"]}, 2, tmp_path)
    # a record that times its epochs counts its median epoch: an epoch it spent stopped does not count
    record.update(wall_time_s=620.0, history=[{"epoch_seconds": t} for t in (10.0, 600.0, 10.0)])
    runs.write_json(folder / runs.RECORD_NAME, record)
    assert estimate_seconds([longer], tmp_path) == (40.0, 1)


def test_reproduce_states_what_the_stored_runs_cost_from_scratch(tmp_path):
    """The from-scratch line sums the stored records' epochs at their median epoch time (their wall
    time where the history does not time each epoch); a run not stored adds nothing."""
    from fmd.reproduce import scratch_line

    configs = [make_config("smoke", conv="static", seed=s) for s in (0, 1, 2, 3)]
    # a run whose middle epoch ran while its process was suspended counts three 1800-s epochs
    suspended = [{"epoch_seconds": 1800.0}, {"epoch_seconds": 90000.0}, {"epoch_seconds": 1800.0}]
    for config, seconds, history in zip(configs[:3], (3600.0, 5400.0, 93600.0),
                                        ([{}, {}], [{}, {}], suspended)):
        folder = runs.run_dir(config.identity(), tmp_path)
        folder.mkdir(parents=True)
        runs.write_json(folder / runs.RECORD_NAME, {"name": "r", "key": config.key(),
                                                    "config": config.to_dict(), "wall_time_s": seconds,
                                                    "history": history})
    needed = {c.key(): ("03", c) for c in configs}
    assert scratch_line(needed, 2, tmp_path) == ("from scratch: the 3 stored runs took 4.0 h of training by "
                                                 "their records (each at its median epoch), on the "
                                                 "machines they name (about 2.0 h at 2 at a time)")


def test_reproduce_trains_one_run_at_a_time_unless_each_run_names_its_threads():
    from fmd.reproduce import default_jobs
    from fmd.train import available_cores

    one_thread = [make_config("smoke", conv=c) for c in ("static", "fmdconv")]  # threads=1
    assert default_jobs(one_thread) == (1 if torch.cuda.is_available() else available_cores())
    assert default_jobs([*one_thread, make_config("smoke", threads=None)]) == 1
    assert default_jobs([]) == 1



def test_every_run_of_the_recipe_pilot_is_committed():
    """Chapter 03's pilot table and figure read committed records, whatever the profile: every run
    of ch03.PILOT is stored, and the chosen recipe's static run reached the 93% it was chosen for."""
    from fmd.chapters import ch03_training as ch03

    found = ch03.pilot_records()
    assert list(found) == list(ch03.pilot_configs()) and len(found) == len(ch03.PILOT)
    chosen = found[next(label for label in found if label.startswith("Static · small stem, flip, 15"))]
    assert chosen["final"]["test_top1"] >= 93.0
