"""The training loop on the synthetic set: learning, exact resume, checkpoint safety, run records."""
import json
import math
import shutil

import pytest
import torch

import fmd.loop as loop_module
from fmd.attention import iter_tempered
from test_temperature_metrics import official_get_temperature
import fmd.train as train_module
from fmd import runs
from fmd.profiles import get_profile
from fmd.complexity import count_macs, count_params
from fmd.metrics import speed_accuracy
from fmd.train import (CheckpointError, NonFiniteLossError, TrainConfig, build_model,
                       checkpoint_path, load_checkpoint, lr_factor, main, make_config, train)


def tiny(**overrides):
    """A run of a few seconds: 256 synthetic images, two epochs of 8 iterations."""
    values = dict(train_subset=256, test_subset=128, epochs=2, batch_size=32)
    values.update(overrides)
    return make_config("smoke", **values)


def quiet(config, root, **kwargs):
    return train(config, root, progress=False, **kwargs)


def metrics(record):
    """Each epoch's numbers, without wall-clock timings."""
    timed = {"train_seconds", "train_images_per_s", "eval_seconds", "eval_images_per_s",
             "epoch_seconds"}
    return [{k: v for k, v in row.items() if k not in timed} for row in record["history"]]


def test_training_lowers_the_loss_and_beats_chance(tmp_path):
    record = quiet(make_config("smoke", conv="static", epochs=3), tmp_path)
    history = record["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert history[-1]["train_top1"] > history[0]["train_top1"]
    assert record["final"]["test_top1"] > 40.0  # 10 classes: chance is 10%
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at zero


def test_resume_equals_an_uninterrupted_run(tmp_path):
    config = tiny(conv="fmdconv")
    straight = quiet(config, tmp_path / "a")

    assert quiet(config, tmp_path / "b", stop_after=1) is None
    ckpt = checkpoint_path(config, tmp_path / "b")
    assert load_checkpoint(ckpt, config)["epoch"] == 1
    assert runs.load_record(config.identity(), tmp_path / "b") is None
    with pytest.raises(CheckpointError, match="resume=True"):
        quiet(config, tmp_path / "b")  # an unfinished run is never silently restarted
    resumed = quiet(config, tmp_path / "b", resume=True)

    assert resumed["sessions"] == 2 and straight["sessions"] == 1
    assert metrics(resumed) == metrics(straight)
    assert resumed["final"] == straight["final"]
    a = load_checkpoint(checkpoint_path(config, tmp_path / "a"), config)
    b = load_checkpoint(ckpt, config)
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    # The temperatures followed the official FMDConv schedule: T_k fixed, T_io annealed to 1.
    temperatures = [row["temperatures"] for row in straight["history"]]
    assert temperatures == [{"kernel": 34.0, "gate": 1.0}] * 2


def test_a_tuned_run_records_its_strategies_and_a_resumed_run_keeps_them(tmp_path):
    config = tiny(conv="fmdconv", strategy="tune")
    assert config.key() == tiny(conv="fmdconv").key()  # how a run computes is not what it computes
    assert quiet(config, tmp_path, stop_after=1) is None
    ckpt = checkpoint_path(config, tmp_path)
    state = load_checkpoint(ckpt, config)
    dynamic = [name for name, m in build_model(config, 10, 3).named_modules()
               if isinstance(m, loop_module.DynamicConv2dBase)]
    assert sorted(state["strategies"]) == sorted(dynamic)
    # Whatever the first step picked, a resumed run computes as the checkpoint says.
    state["strategies"] = {name: "kfold_im2col" for name in dynamic}
    train_module.save_checkpoint(ckpt, state)
    resumed = quiet(config, tmp_path, resume=True)
    assert resumed["strategies"] == state["strategies"]
    assert resumed["config"]["strategy"] == "tune"


@pytest.mark.parametrize("conv,role", [("fmdconv", "gate"), ("odconv", "kernel")])
def test_the_official_clock_follows_the_official_loop_step_for_step(tmp_path, monkeypatch, conv, role):
    # The official loop: before step i of epoch e, get_temperature(i + 1, e, iters); an evaluation
    # after the epoch runs at the value set before its last step.
    config = tiny(conv=conv, epochs=3, anneal_epochs=1.5)
    assert config.temperature_clock == "official"
    seen = []  # (training?, temperature) at every forward of the first dynamic layer
    original = loop_module.train_epoch

    def watch(model, *args, **kwargs):
        layer = next(m for m in model.modules() if isinstance(m, loop_module.DynamicConv2dBase))
        branch = next(b for b in iter_tempered(layer) if b.temperature_role == role)
        hook = layer.register_forward_pre_hook(
            lambda m, _: seen.append((m.training, branch.temperature.item())))
        try:
            return original(model, *args, **kwargs)
        finally:
            hook.remove()
    monkeypatch.setattr(train_module, "train_epoch", watch)
    record = quiet(config, tmp_path)
    iters = 256 // 32
    expected = [official_get_temperature(i + 1, e, iters, temp_epoch=1.5)
                for e in range(3) for i in range(iters)]
    assert [t for training, t in seen if training] == pytest.approx(expected, rel=1e-6)
    ends = [row["temperatures"][role] for row in record["history"]]
    assert ends == pytest.approx([official_get_temperature(iters, e, iters, temp_epoch=1.5)
                                  for e in range(3)], rel=1e-6)
    # The records trained before the clock existed were one step behind, and keep their keys.
    behind = tiny(conv=conv, epochs=3, anneal_epochs=1.5, temperature_clock="fmd")
    assert behind.key() != config.key() and "temperature_clock" not in behind.identity()


def test_corrupt_checkpoint_is_refused_with_a_clear_error(tmp_path):
    config = tiny()
    quiet(config, tmp_path, stop_after=1)
    ckpt = checkpoint_path(config, tmp_path)
    good = ckpt.read_bytes()
    for damaged in (b"not a checkpoint", good[: len(good) // 2]):
        ckpt.write_bytes(damaged)
        with pytest.raises(CheckpointError, match="corrupt or unreadable") as info:
            quiet(config, tmp_path, resume=True)
        assert str(ckpt) in str(info.value) and "force=True" in str(info.value)
    assert ckpt.read_bytes() == damaged  # refused, not overwritten by a fresh start


def test_checkpoint_of_another_config_is_refused(tmp_path):
    ours, theirs = tiny(lr=0.05), tiny(lr=0.02)
    quiet(theirs, tmp_path, stop_after=1)
    target = checkpoint_path(ours, tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copy(checkpoint_path(theirs, tmp_path), target)
    with pytest.raises(CheckpointError, match=r"different configuration.*\['lr'\]"):
        quiet(ours, tmp_path, resume=True)


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny()
    real_loss, calls = loop_module.training_loss, []

    def loss_that_breaks_in_epoch_2(logits, targets, label_smoothing):
        calls.append(1)
        loss = real_loss(logits, targets, label_smoothing)
        return loss * float("nan") if len(calls) > 8 + 2 else loss  # 8 iterations per epoch

    monkeypatch.setattr(loop_module, "training_loss", loss_that_breaks_in_epoch_2)
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 2, iteration 3/8"):
        quiet(config, tmp_path)
    ckpt = checkpoint_path(config, tmp_path)
    assert load_checkpoint(ckpt, config)["epoch"] == 1
    assert runs.load_record(config.identity(), tmp_path) is None

    # The kept checkpoint is good: the run finishes from it and matches an uninterrupted run.
    monkeypatch.setattr(loop_module, "training_loss", real_loss)
    resumed = quiet(config, tmp_path, resume=True)
    assert metrics(resumed) == metrics(quiet(config, tmp_path / "straight"))


def test_a_diverging_run_stops_before_writing_anything(tmp_path):
    config = tiny(lr=1e12, momentum=0.0, weight_decay=0.0)
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        quiet(config, tmp_path)
    assert not checkpoint_path(config, tmp_path).exists()


def test_record_is_reused_unless_forced(tmp_path, monkeypatch):
    config = tiny()
    first = quiet(config, tmp_path)
    calls = []
    real_run = train_module._run
    monkeypatch.setattr(train_module, "_run", lambda *a, **k: calls.append(1) or real_run(*a, **k))

    assert quiet(config, tmp_path) == first and calls == []
    # Knobs the static conv never reads, or a cosine schedule's milestones, do not make a new run.
    same_run = tiny(preset="paper", kernel_num=8, attentions=("input",), milestones=(1,))
    assert same_run.key() == config.key() and quiet(same_run, tmp_path) == first and calls == []

    again = quiet(config, tmp_path, force=True)
    assert calls == [1]
    assert metrics(again) == metrics(first)  # the same seed gives the same run
    assert runs.read_record(runs.run_dir(config.identity(), tmp_path)) == again


def test_record_holds_what_figures_need(tmp_path):
    config = tiny(conv="fmdconv", epochs=1)
    record = quiet(config, tmp_path)
    on_disk = json.loads((runs.run_dir(config.identity(), tmp_path) / "record.json").read_text())
    assert on_disk == record
    assert record["config"] == config.to_dict() and record["key"] == config.key()
    model = build_model(config, num_classes=10, in_channels=3)
    assert record["params"] == count_params(model)
    assert record["input_size"] == [1, 3, 32, 32]
    assert record["macs"] == count_macs(model, input_size=(1, 3, 32, 32))
    top1 = record["final"]["test_top1"]
    by_macs = record["speed_accuracy"]["macs"]
    assert by_macs["cost_per_image"] == record["macs"] / 1e9 and by_macs["unit"] == "GMACs"
    assert by_macs["rcs"] == speed_accuracy(top1, record["macs"] / 1e9)["rcs"]
    by_time = record["speed_accuracy"]["eval_time"]
    assert by_time["cost_per_image"] == pytest.approx(1000 / record["speed"]["eval_images_per_s"])
    assert record["speed"]["train_images_per_s"] > 0
    assert set(record["versions"]) >= {"python", "torch", "torchvision", "numpy", "fmd"}
    commit = record["git_commit"]
    assert commit == "unknown" or (len(commit) == 40 and int(commit, 16) >= 0)
    assert record["device"].startswith("cpu") and record["threads"] == config.threads == 1
    assert record["train_images"] == 256 and record["test_images"] == 128
    row = record["history"][0]
    assert row["train_images"] == 256 and math.isfinite(row["test_loss"])
    assert runs.find(tmp_path, conv="fmdconv", dataset="synthetic") == [record]
    assert runs.find(tmp_path, conv={"static", "fmdconv"}) == [record]
    assert runs.find(tmp_path, conv="static") == []


def test_bad_names_and_values_list_the_choices():
    with pytest.raises(ValueError, match="unknown recipe 'fast'.*paper.*cifar.*quick.*smoke"):
        make_config("fast")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet1k'.*fashion_mnist.*synthetic.*imagenet"):
        make_config("smoke", dataset="imagenet1k")
    with pytest.raises(ValueError, match="transform must be 'imagenet' for dataset imagenet"):
        make_config("smoke", dataset="imagenet", transform="cifar")
    assert make_config("quick", dataset="imagenet").transform == "imagenet"
    with pytest.raises(ValueError, match="unknown amp 'fp8'.*none.*bf16.*fp16"):
        make_config("smoke", amp="fp8")
    with pytest.raises(ValueError, match="sync_bn must be False for a single process"):
        make_config("smoke", sync_bn=True)
    with pytest.raises(ValueError, match="unknown conv 'xconv'.*fmdconv"):
        make_config("smoke", conv="xconv")
    with pytest.raises(ValueError, match="unknown lr_schedule 'linear'.*step.*cosine"):
        make_config("smoke", lr_schedule="linear")
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['learning_rate'\].*'lr'"):
        make_config("smoke", learning_rate=0.1)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        make_config("smoke", epochs=0)
    with pytest.raises(ValueError, match="epochs must be an integer"):
        make_config("smoke", epochs=2.5)
    with pytest.raises(ValueError, match="attentions must be a subset"):
        make_config("smoke", attentions=("input", "spatial"))
    # A schedule that cannot run is refused with the config, before any data is loaded.
    with pytest.raises(ValueError, match="kernel_temperature must be ≡ 1 \\(mod 3\\), got 30"):
        make_config("smoke", conv="fmdconv", preset="paper", kernel_temperature=30)
    with pytest.raises(TypeError, match="make_config"):
        train({"conv": "static"})


def test_config_values_are_normalised_so_equal_runs_share_a_key():
    a = make_config("smoke", lr=1, milestones=[3, 6])
    b = make_config("smoke", lr=1.0, milestones=(3, 6))
    assert a == b and a.key() == b.key()
    assert TrainConfig.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert make_config("smoke", seed=1).key() != a.key()
    # The same branches in any order, or repeated, are the same run.
    ab = make_config("smoke", conv="fmdconv", attentions=("input", "kernel"))
    for other in (("kernel", "input"), ("input", "kernel", "kernel")):
        same = make_config("smoke", conv="fmdconv", attentions=other)
        assert same == ab and same.key() == ab.key()


def test_git_state_ignores_what_runs_rewrite(tmp_path):
    import subprocess
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True,  # noqa: E731
                                    capture_output=True)
    git("init", "-q")
    for name in ("figures/table.md", "data/runs/r/record.json", "data/timing/log.json", "fmd/code.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("v1")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "figures/table.md").write_text("v2")
    (tmp_path / "data/runs/r/record.json").write_text("v2")
    (tmp_path / "data/timing/log.json").write_text("v2")  # chapter 09's cost sessions
    assert train_module.git_state(tmp_path)["dirty"] is False
    (tmp_path / "fmd/code.py").write_text("v2")
    assert train_module.git_state(tmp_path)["dirty"] is True


def test_python_m_fmd_train_starts_without_a_runpy_warning():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "fmd.train",
                           "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_learning_rate_schedules():
    step = make_config("paper")  # ×0.1 at epochs 30, 60 and 90
    assert [lr_factor(step, e) for e in (0, 29.99, 30, 59.5, 60, 95)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.001])
    cosine = make_config("quick", epochs=4, warmup_epochs=0.0)
    assert [lr_factor(cosine, e) for e in (0, 2, 4)] == pytest.approx([1, 0.5, 0])


def test_command_line_trains_reuses_and_reports_bad_names(tmp_path, capsys):
    argv = ["--recipe", "smoke", "--train-subset", "128", "--test-subset", "64", "--epochs", "1",
            "--runs-root", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == first  # the stored record, not a new run
    assert len(runs.list_records(tmp_path)) == 1

    assert main(["--recipe", "quick", "--threads", "none", "--milestones", "5,10",
                 "--attentions", "input,output", "--print-config"]) == 0
    printed = capsys.readouterr().out
    config = json.loads(printed[:printed.rindex("}") + 1])
    assert config["threads"] is None and config["milestones"] == [5, 10]
    assert config["attentions"] == ["input", "output"] and config["recipe"] == "quick"

    with pytest.raises(SystemExit) as info:
        main(["--recipe", "bogus"])
    assert info.value.code == 2
    assert "paper" in capsys.readouterr().err

    (tmp_path / "b").mkdir()
    assert main(argv[:-3] + ["--runs-root", str(tmp_path / "b"), "--quiet", "--conv", "odconv",
                             "--lr", "1e12", "--momentum", "0", "--weight-decay", "0"]) == 1
    assert "loss became" in capsys.readouterr().err


def test_runs_keys_queries_and_atomic_writes(tmp_path):
    config = {"dataset": "synthetic", "conv": "static", "lr": 0.1, "milestones": [1, 2]}
    reordered = {"milestones": (1, 2), "lr": 0.1, "conv": "static", "dataset": "synthetic"}
    assert runs.config_key(config) == runs.config_key(reordered)
    assert runs.config_key({**config, "lr": 0.2}) != runs.config_key(config)
    assert runs.run_name(config).startswith("synthetic-static-")

    path = runs.write_record({"config": config, "final": {"test_top1": 50.0}}, tmp_path)
    assert path == runs.run_dir(config, tmp_path) / "record.json"
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temporary files left
    assert runs.load_record(reordered, tmp_path)["final"] == {"test_top1": 50.0}
    assert runs.find(tmp_path, milestones=(1, 2), lr=0.1)[0]["config"] == config
    assert runs.find(tmp_path, lr=0.2) == [] and runs.find(tmp_path, missing_field=1) == []
    assert runs.list_records(tmp_path / "none") == []
    path.write_text("{ broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        runs.read_record(path)


def test_train_all_continues_an_interrupted_run_and_shares_equal_configs(tmp_path):
    config = tiny(conv="dyconv")
    assert quiet(config, tmp_path, stop_after=1) is None
    records = train_module.train_all({"a": config, "b": tiny(conv="dyconv")}, tmp_path, verbose=False)
    assert records["a"]["sessions"] == 2  # resumed from epoch 1, not restarted
    assert records["a"] == records["b"]
    assert len(runs.list_records(tmp_path)) == 1


def test_train_all_in_parallel_processes_trains_what_one_process_trains(tmp_path, capsys):
    """jobs=2: two runs at once in spawned processes, each computing what it computes alone; a
    stored run is fetched, not trained again."""
    a, b, stored = tiny(conv="static"), tiny(conv="fmdconv"), tiny(conv="dyconv")
    alone = {name: quiet(c, tmp_path / "alone") for name, c in (("a", a), ("b", b))}
    quiet(stored, tmp_path / "both")
    both = train_module.train_all({"a": a, "b": b, "c": stored, "d": tiny(conv="static")},
                                  tmp_path / "both", jobs=2)
    assert {n: metrics(both[n]) for n in alone} == {n: metrics(r) for n, r in alone.items()}
    assert both["d"] == both["a"] and both["c"]["sessions"] == 1
    err = capsys.readouterr().err
    assert "1 of 3 runs stored; training 2, 2 at a time" in err and "2 of 2 trained" in err
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        train_module.train_all({"a": a}, tmp_path, jobs=0)


def test_train_all_in_parallel_starts_no_run_after_one_fails(tmp_path, capsys):
    """jobs=2: a diverging run fails; the run beside it finishes, the queued one never starts, and
    the failure is raised."""
    bad, beside, queued = tiny(lr=1e12, momentum=0.0, weight_decay=0.0), tiny(), tiny(conv="dyconv")
    with pytest.raises(NonFiniteLossError):
        train_module.train_all({"bad": bad, "beside": beside, "queued": queued}, tmp_path, jobs=2)
    assert runs.load_record(beside.identity(), tmp_path) is not None
    assert runs.load_record(queued.identity(), tmp_path) is None
    assert not checkpoint_path(queued, tmp_path).exists()
    assert "failed: NonFiniteLossError" in capsys.readouterr().err


def test_load_trained_returns_the_trained_weights_and_retrains_a_missing_checkpoint(tmp_path):
    config = tiny(conv="fmdconv")
    record = quiet(config, tmp_path)
    model, loaded_record = train_module.load_trained(config, tmp_path)
    assert not model.training and loaded_record == record
    state = load_checkpoint(checkpoint_path(config, tmp_path), config)["model"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    checkpoint_path(config, tmp_path).unlink()  # as on a fresh clone: record kept, weights gone
    assert train_module.load_trained(config, tmp_path, retrain=False) is None
    model, again = train_module.load_trained(config, tmp_path)
    assert checkpoint_path(config, tmp_path).is_file()
    assert metrics(again) == metrics(record)  # CPU training is deterministic for a seed
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_train_all_with_checkpoints_retrains_runs_whose_weights_are_missing(tmp_path, monkeypatch):
    config = tiny(conv="dyconv")
    record = quiet(config, tmp_path)
    checkpoint_path(config, tmp_path).unlink()  # a fresh clone: the record without its weights
    calls = []
    real_train = train_module.train
    monkeypatch.setattr(train_module, "train",
                        lambda *a, **k: calls.append(k.get("force", False)) or real_train(*a, **k))
    assert train_module.train_all({"a": config}, tmp_path, verbose=False)["a"] == record
    assert calls == [False] and not checkpoint_path(config, tmp_path).is_file()  # fetched as it is
    again = train_module.train_all({"a": config}, tmp_path, verbose=False, checkpoints=True)["a"]
    assert calls == [False, True] and checkpoint_path(config, tmp_path).is_file()
    assert metrics(again) == metrics(record)
    train_module.train_all({"a": config}, tmp_path, verbose=False, checkpoints=True)
    assert calls == [False, True, False]  # weights present: nothing is trained


def test_every_committed_record_keeps_its_run_key():
    from fmd.runs import RUNS_ROOT, list_records, run_name
    records = list_records(RUNS_ROOT)
    assert len(records) >= 25
    for record in records:
        config = TrainConfig.from_dict(record["config"])
        assert config.key() == record["key"] and run_name(config.identity()) == record["name"]


def test_chapter_08_looks_up_chapter_04s_grids_and_chapter_05s_knobs():
    from fmd.chapters import ch04_temperature_and_k as ch04, ch05_attention_ablation as ch05

    sweeps = ch04.sweep_configs("quick")
    assert sorted(sweeps["T_k"]) == sorted(float(t) for t in ch04.TEMPERATURES)
    assert sorted(sweeps["K"]) == sorted(ch04.KERNEL_NUMS)
    assert sorted(ch04.sweep_configs("smoke")["T_k"]) == sorted(float(t) for t in ch04.SMOKE_TEMPERATURES)
    assert sweeps["K"][ch04.KERNEL_NUM].key() == sweeps["reference"].key()
    assert [c.seed for c in sweeps["seeds"].values()] == list(get_profile("quick").seeds)
    full = ch05.default_configs("quick")["input+kernel+output"]
    assert {k: getattr(full, k) for k in ch05.DEFAULTS} == ch05.DEFAULTS
    assert ch05.default_configs("quick", kernel_num=2)["kernel"].kernel_num == 2


def test_warmup_raises_the_lr_linearly_then_hands_over_to_the_schedule():
    config = make_config("quick", epochs=3, warmup_epochs=0.5)
    assert lr_factor(config, 0.0) == 0.0
    assert lr_factor(config, 0.25) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.25 / 3)))
    plain = make_config("quick", epochs=3, warmup_epochs=0.0)
    assert lr_factor(config, 1.0) == lr_factor(plain, 1.0)
    assert "warmup_epochs" not in plain.identity() and config.identity()["warmup_epochs"] == 0.5
    with pytest.raises(ValueError, match="warmup_epochs must be in"):
        make_config("quick", epochs=3, warmup_epochs=3)


def test_label_smoothing_enters_the_key_only_when_set_and_is_checked():
    plain, smoothed = make_config("quick", label_smoothing=0.0), make_config("quick", label_smoothing=0.1)
    assert "label_smoothing" not in plain.identity() and smoothed.identity()["label_smoothing"] == 0.1
    assert plain.key() == make_config("quick", label_smoothing=0).key() != smoothed.key()
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        make_config("quick", label_smoothing=1.0)


def test_every_committed_record_fits_the_typed_run_record():
    import typing

    optional = {"kernel_entropy", "loader_workers", "precision", "distributed", "strategies"}
    required = set(typing.get_type_hints(runs.RunRecord)) - optional
    rows = set(typing.get_type_hints(runs.HistoryRow))
    final = set(typing.get_type_hints(runs.FinalMetrics))
    records = runs.list_records()
    assert records
    for record in records:
        assert required <= set(record) <= required | optional, record["name"]
        assert set(record["final"]) == final
        assert all(set(row) == rows for row in record["history"]), record["name"]


def test_a_profile_can_train_one_depth_of_chapter_03_at_another_scale(monkeypatch):
    from dataclasses import replace
    from fmd import profiles

    smaller = replace(profiles.PROFILES["smoke"], main={"epochs": 3},
                      main_by_depth={50: {"train_subset": 64}})
    monkeypatch.setitem(profiles.PROFILES, "smoke", smaller)
    deep, shallow = profiles.main_config("smoke", depth=50), profiles.main_config("smoke", depth=18)
    assert (deep.train_subset, deep.epochs) == (64, 3) and (shallow.train_subset, shallow.epochs) == (None, 3)
    assert profiles.main_config("smoke", depth=50, train_subset=32).train_subset == 32  # a caller's wins
