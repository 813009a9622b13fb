"""Faults and bad input: one clear line instead of a traceback, and no finished work lost."""
import errno
import gzip
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fmd.checkpoints as checkpoints_module
import fmd.train as train_module
from fmd import bench, data, datasets, reproduce, runs
from fmd.conv import FMDConv2d
from fmd.train import checkpoint_path, load_checkpoint, load_trained, main, train, train_all

REPO = Path(__file__).resolve().parent.parent


def tiny(**overrides):
    values = dict(train_subset=256, test_subset=128, epochs=2, batch_size=32, conv="fmdconv")
    values.update(overrides)
    return train_module.make_config("smoke", **values)


def quiet(config, root, **kwargs):
    return train(config, root, progress=False, verbose=False, **kwargs)


def one_error_line(capsys):
    """What a command printed on stderr, checked to be one line starting 'error: '."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def status(command, args):
    """The exit status of ``command(args)``, whether it returns it or argparse exits with it."""
    try:
        return command(args)
    except SystemExit as done:
        return done.code


def unwritable_folder(tmp_path):
    """A folder this process cannot create files in (root ignores permission bits: use /sys)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").write_bytes(b"")
    except OSError:
        return folder
    return Path("/sys/fmd-test-runs")


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "FMD_PROFILE": "smoke", **(env or {})})


# ---------------------------------------------------------------------------------------------
# An interrupted retrain is finished by the next call


def test_an_interrupted_retrain_is_finished_by_every_entry_point(tmp_path):
    config = tiny()
    finished = quiet(config, tmp_path)
    for finish in (lambda: load_trained(config, tmp_path)[1],
                   lambda: train_all({"run": config}, tmp_path, verbose=False,
                                     checkpoints=True)["run"],
                   lambda: (main(["--recipe", "smoke", "--runs-root", str(tmp_path), "--quiet",
                                  "--resume", *flags(config)]),
                            runs.load_record(config.identity(), tmp_path))[1]):
        # A fresh clone's retrain (the weights are missing) killed after its first epoch:
        assert quiet(config, tmp_path, force=True, stop_after=1) is None
        assert load_checkpoint(checkpoint_path(config, tmp_path), config)["epoch"] == 1
        record = finish()
        assert record["final"] == finished["final"]  # the same run, finished; nothing lost
        assert load_checkpoint(checkpoint_path(config, tmp_path), config)["epoch"] == config.epochs
    assert load_trained(config, tmp_path) is not None


def flags(config):
    """The command-line flags of the tiny config."""
    return ["--conv", config.conv, "--train-subset", str(config.train_subset), "--test-subset",
            str(config.test_subset), "--epochs", str(config.epochs), "--batch-size",
            str(config.batch_size)]


def test_without_resume_an_interrupted_retrain_says_what_to_do(tmp_path, capsys):
    config = tiny()
    quiet(config, tmp_path)
    assert quiet(config, tmp_path, force=True, stop_after=1) is None
    assert main(["--recipe", "smoke", "--runs-root", str(tmp_path), "--quiet", *flags(config)]) == 1
    line = one_error_line(capsys)
    assert "epoch 1 of 2" in line and "--resume" in line and "--force" in line


def test_force_starts_over_past_a_corrupt_checkpoint(tmp_path, capsys):
    config = tiny(epochs=1)
    path = checkpoint_path(config, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    assert main(["--recipe", "smoke", "--runs-root", str(tmp_path), "--quiet", "--resume",
                 *flags(config)]) == 1
    assert "corrupt or unreadable" in one_error_line(capsys)
    assert main(["--recipe", "smoke", "--runs-root", str(tmp_path), "--quiet", "--resume", "--force",
                 *flags(config)]) == 0
    assert load_checkpoint(path, config)["epoch"] == 1


def test_resume_names_the_unfinished_run_whose_flags_differ(tmp_path, capsys):
    config = tiny()
    assert quiet(config, tmp_path, stop_after=1) is None
    args = ["--recipe", "smoke", "--runs-root", str(tmp_path), "--quiet", "--resume", *flags(config)]
    assert main(args + ["--threads", "2"]) == 1
    line = one_error_line(capsys)
    assert "has no checkpoint" in line and "threads (here 2, there 1)" in line
    assert load_checkpoint(checkpoint_path(config, tmp_path), config)["epoch"] == 1  # kept
    assert main(args) == 0  # with the interrupted command's flags it finishes
    other = tiny(epochs=1)
    quiet(other, tmp_path)
    shutil.rmtree(checkpoint_path(other, tmp_path).parent)  # a fresh clone: the record, no weights
    assert quiet(tiny(seed=1), tmp_path, stop_after=1) is None  # an unfinished sibling run
    finished = ["--recipe", "smoke", "--runs-root", str(tmp_path), "--quiet", "--resume",
                *flags(other)]
    assert main(finished) == 0  # a finished run's --resume returns its record


# ---------------------------------------------------------------------------------------------
# Bad input: one line, before any work


@pytest.mark.parametrize("args, message", [
    (["--train-subset", "100000"], "train subset size must be an integer in [1, 1024]"),
    (["--dataset", "fashion_mnist", "--channels", "2"], "channels must be 1 or 3 for fashion_mnist"),
    (["--batch-size", "1"], "batch_size must be at least 2"),
    (["--train-subset", "1"], "train_subset must be at least 2"),
    (["--conv", "deform"], "unknown conv 'deform'"),
    (["--recipe", "fast"], "invalid choice: 'fast'"),
    (["--epochs", "two"], "expected int, got 'two'"),
])
def test_training_cli_refuses_bad_values_in_one_line(tmp_path, capsys, args, message):
    assert status(main, ["--recipe", "smoke", "--runs-root", str(tmp_path), "--quiet", *args]) == 2
    assert message in one_error_line(capsys)
    assert not list(tmp_path.glob("*/record.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data, "get_datasets", lambda *a, **k: pytest.fail("data loaded"))
    assert main(["--recipe", "smoke", "--runs-root", str(tmp_path), "--device", "cuda"]) == 2
    assert "CUDA is not available" in one_error_line(capsys)


def test_an_unwritable_runs_root_is_found_before_the_first_step(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data, "get_datasets", lambda *a, **k: pytest.fail("data loaded"))
    root = unwritable_folder(tmp_path)
    assert main(["--recipe", "smoke", "--runs-root", str(root), "--quiet"]) == 1
    line = one_error_line(capsys)
    assert "cannot write" in line and "choose a folder you can write to" in line


def test_a_corrupt_record_is_one_line(tmp_path, capsys):
    config = tiny(epochs=1)
    path = runs.run_dir(config.identity(), tmp_path) / runs.RECORD_NAME
    path.parent.mkdir(parents=True)
    path.write_text("{ truncated")
    assert main(["--recipe", "smoke", "--runs-root", str(tmp_path), "--quiet", *flags(config)]) == 2
    assert f"run record {path} is not valid JSON" in one_error_line(capsys)


def test_help_lists_the_accepted_values():
    text = cli("-m", "fmd.train", "--help").stdout
    for values in ("static, condconv, dyconv, odconv, fmdconv", "official, paper",
                   "cifar10, cifar100, fashion_mnist, synthetic"):
        assert values in " ".join(text.split())


@pytest.mark.parametrize("args, message", [
    (["--repeats", "0"], "--repeats: expected a positive integer, got 0"),
    (["--sessions", "0"], "--sessions: expected a positive integer, got 0"),
    (["--threads", "0"], "--threads: expected a positive integer, got 0"),
    (["--cases", "r9"], "invalid choice: 'r9'"),
])
def test_benchmark_cli_refuses_bad_counts_in_one_line(capsys, args, message):
    assert status(bench.main, args) == 2 and message in one_error_line(capsys)


def test_benchmark_checks_its_output_folder_before_timing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "measure_case", lambda *a, **k: pytest.fail("timed before the check"))
    root = unwritable_folder(tmp_path)
    assert bench.main(["--cases", "r18w16-cifar-b1-infer", "--out", str(root)]) == 1
    assert "cannot write" in one_error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_benchmark_refuses_cuda_without_a_gpu(capsys):
    assert status(bench.main, ["--device", "cuda"]) == 2
    assert "CUDA is not available here" in one_error_line(capsys)


@pytest.mark.parametrize("env, args", [({"FMD_PROFILE": "Smoke"}, ["--only", "01"]),
                                       ({}, ["--profile", "bogus"])])
def test_a_mistyped_profile_leaves_the_committed_notebooks_alone(env, args):
    before = (REPO / "notebooks" / "01_attention_branches.ipynb").read_bytes()
    done = cli("-m", "fmd.reproduce", *args, env=env, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "smoke" in lines[0], lines
    assert (REPO / "notebooks" / "01_attention_branches.ipynb").read_bytes() == before


def test_a_failing_notebook_keeps_the_committed_one(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('boom')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "01_fails.ipynb"
    nbformat.write(nb, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match=r"01_fails.ipynb failed \(ValueError: boom\)"):
        reproduce.run_notebook(path, "smoke")
    assert path.read_bytes() == before and (tmp_path / "01_fails.failed.ipynb").exists()


# ---------------------------------------------------------------------------------------------
# Data files and downloads


def test_a_truncated_gz_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(bytes(4 + 12 + 28 * 28 * 10))[:-20])
    with pytest.raises(ValueError, match=f"{path} is truncated or corrupt .*delete it"):
        datasets.read_idx(path)


def test_an_offline_download_is_one_clear_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(FileNotFoundError, match="could not download fashion_mnist into .*internet"):
        datasets.load_fashion_mnist(tmp_path, dirs=[tmp_path / "nowhere"], download=True)


# ---------------------------------------------------------------------------------------------
# Faults in the training loop: a full disk, a kill at a random step, Ctrl-C


def test_a_full_disk_keeps_the_last_checkpoint_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    config = tiny(epochs=3)
    straight = quiet(config, tmp_path / "straight")
    writes = []
    real = checkpoints_module.atomic_write_bytes

    def fill_up(path, payload):
        writes.append(Path(path).name)
        if writes.count("last.pt") == 2:  # the second epoch's checkpoint
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, payload)

    monkeypatch.setattr(checkpoints_module, "atomic_write_bytes", fill_up)
    args = ["--recipe", "smoke", "--runs-root", str(tmp_path), "--quiet", *flags(config)]
    assert main(args) == 1
    line = one_error_line(capsys)
    assert "no space left on the device while writing" in line and "run the same command" in line
    path = checkpoint_path(config, tmp_path)
    assert load_checkpoint(path, config)["epoch"] == 1
    assert not [p for p in path.parent.iterdir() if p.name != "last.pt"]  # no temporary file left
    monkeypatch.setattr(checkpoints_module, "atomic_write_bytes", real)
    assert main(args + ["--resume"]) == 0
    assert runs.load_record(config.identity(), tmp_path)["final"] == straight["final"]


def test_a_kill_at_a_random_step_loses_nothing(tmp_path):
    config = tiny(epochs=3)
    straight = quiet(config, tmp_path / "straight")
    args = ["-m", "fmd.train", "--recipe", "smoke", "--runs-root", str(tmp_path), "--quiet",
            *flags(config)]
    started = subprocess.Popen([sys.executable, *args], cwd=REPO, env={**os.environ},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random().uniform(1.0, 6.0))  # somewhere in start-up or training
    started.send_signal(signal.SIGKILL)
    started.wait()
    done = cli(*args, "--resume")
    assert done.returncode == 0, done.stderr
    assert runs.load_record(config.identity(), tmp_path)["final"] == straight["final"]


def test_a_checkpoint_write_killed_midway_leaves_no_file_behind(tmp_path):
    config = tiny(epochs=1)
    folder = checkpoint_path(config, tmp_path).parent
    folder.mkdir(parents=True)
    stale = folder / ".last.k1ll3d.tmp.pt"  # as provenance.atomic_path names its temporary file
    stale.write_bytes(b"half a checkpoint")
    quiet(config, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]


def test_records_and_checkpoints_are_readable_by_others(tmp_path):
    config = tiny(epochs=1)
    quiet(config, tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    for path in (checkpoint_path(config, tmp_path),
                 runs.run_dir(config.identity(), tmp_path) / runs.RECORD_NAME):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_ctrl_c_says_how_to_continue(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_epoch", interrupted)
    assert main(["--recipe", "smoke", "--runs-root", str(tmp_path), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "run the same command with --resume" in err


# ---------------------------------------------------------------------------------------------
# Layers


def test_padding_same_with_a_stride_is_refused_at_construction():
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        FMDConv2d(4, 4, 3, 2, "same")


def test_a_float64_input_into_a_float32_layer_names_both_dtypes():
    with pytest.raises(ValueError, match="float32 weights but got a torch.float64 input"):
        FMDConv2d(4, 4, 3, 1, 1)(torch.randn(2, 4, 5, 5, dtype=torch.float64))


def test_a_notebook_with_a_mistyped_profile_stops_in_its_parameters_cell(tmp_path):
    import papermill
    out = tmp_path / "01.ipynb"
    figures = sorted((REPO / "figures").glob("01_*"))
    before = {p: p.read_bytes() for p in figures}
    with pytest.raises(papermill.PapermillExecutionError, match="unknown profile 'bogus'"):
        papermill.execute_notebook(str(REPO / "notebooks" / "01_attention_branches.ipynb"), str(out),
                                   parameters={"profile": "bogus"}, cwd=str(REPO / "notebooks"),
                                   kernel_name="python3", progress_bar=False)
    assert {p: p.read_bytes() for p in figures} == before


def test_the_paper_profile_lets_the_chapters_download_cifar(monkeypatch):
    from fmd.chapters import common
    seen = {}
    monkeypatch.setattr(common, "train_all", lambda configs, root, **options: seen.update(options))
    for profile, download in (("paper", True), ("quick", False)):
        common.run_all({}, profile)
        assert seen["download"] is download


def test_the_notebook_runner_refuses_a_read_only_folder_and_survives_a_kill(tmp_path, capsys,
                                                                               monkeypatch):
    import shutil
    folder = unwritable_folder(tmp_path)
    monkeypatch.setattr(reproduce, "NOTEBOOKS", folder)
    monkeypatch.setattr(reproduce, "find_notebooks", lambda *a, **k: [folder / "01_x.ipynb"])
    assert reproduce.main(["--profile", "smoke"]) == 1
    assert "cannot write" in one_error_line(capsys)
    # A run killed midway leaves the notebook it was executing as it was.
    copy = tmp_path / "01_attention_branches.ipynb"
    shutil.copy(REPO / "notebooks" / copy.name, copy)
    before = copy.read_bytes()
    started = subprocess.Popen(
        [sys.executable, "-c", f"from fmd import reproduce; from pathlib import Path; "
                               f"reproduce.run_notebook(Path({str(copy)!r}), 'smoke')"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random().uniform(1.0, 4.0))
    started.send_signal(signal.SIGKILL)
    started.wait()
    assert copy.read_bytes() == before


def test_the_notebook_runner_on_a_full_disk_keeps_every_notebook(tmp_path, capsys, monkeypatch):
    import nbformat
    folder = tmp_path / "notebooks"
    folder.mkdir()

    def notebook(name, source):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / name)
        return (folder / name).read_bytes()

    monkeypatch.setattr(reproduce, "NOTEBOOKS", folder)
    # The disk fills while the runner writes the executed notebook.
    before = notebook("01_prints.ipynb", "print('hello')")

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(reproduce, "strip_volatile", full)
    # --only: these notebooks' chapters train nothing (every other chapter's runs would be trained first)
    assert reproduce.main(["--profile", "smoke", "--only", "01"]) == 1
    line = one_error_line(capsys)
    assert "no space left on the device" in line and "run the same command again" in line
    assert (folder / "01_prints.ipynb").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["01_prints.ipynb"]  # no partial copy left
    # The disk fills while a cell writes a figure.
    (folder / "01_prints.ipynb").unlink()
    before = notebook("02_saves.ipynb",
                      "import errno\nraise OSError(errno.ENOSPC, 'No space left on device')")
    assert reproduce.main(["--profile", "smoke", "--only", "02"]) == 1
    line = one_error_line(capsys)
    assert "No space left" in line and "run the same command again" in line and "unchanged" in line
    assert (folder / "02_saves.ipynb").read_bytes() == before
