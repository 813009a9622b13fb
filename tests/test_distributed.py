"""Training on several processes with torchrun + DistributedDataParallel (Gloo on the CPU): the run
finishes with one record, the loss falls, a kill -9 of the launcher stops its workers, --resume
continues from the last checkpoint; SyncBatchNorm reaches the attention trunks."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from fmd.train import build_model, make_config, train

TORCHRUN = Path(sys.executable).with_name("torchrun")
REPO = Path(__file__).resolve().parent.parent
# A fast run: the static ResNet-18 of the smoke recipe, 6 epochs of 512 images on 2 processes.
ARGS = ["-m", "fmd.train", "--recipe", "smoke", "--epochs", "6", "--train-subset", "512",
        "--test-subset", "128", "--no-progress"]


def torchrun(runs, *extra, **popen):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", *ARGS, "--runs-root", str(runs),
               *extra]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)


def children(pid):
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_two_gloo_processes_train_and_resume_after_the_launcher_is_killed(tmp_path):
    # Kill -9 of the launcher once the first epoch's checkpoint is written: its workers (in
    # sessions of their own) notice and stop together at the next iteration.
    launcher = torchrun(tmp_path)
    deadline = time.monotonic() + 120
    checkpoints = tmp_path.glob("*/checkpoints/last.pt")
    while not any(True for _ in checkpoints) and time.monotonic() < deadline:
        assert launcher.poll() is None, launcher.stdout.read()
        time.sleep(0.05)
        checkpoints = tmp_path.glob("*/checkpoints/last.pt")
    workers = children(launcher.pid)
    assert len(workers) == 2
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(w) for w in workers), "the workers ran on without their launcher"
    (ckpt,) = tmp_path.glob("*/checkpoints/last.pt")
    stopped_at = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= stopped_at < 6 and not list(tmp_path.glob("*/record.json"))

    resumed = torchrun(tmp_path, "--resume")
    out, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out
    assert f"resuming after epoch {stopped_at}" in out and "2 processes (gloo)" in out
    (path,) = tmp_path.glob("*/record.json")  # exactly one record, written by rank 0
    record = json.loads(path.read_text())
    assert record["distributed"] == {"world_size": 2, "backend": "gloo", "batch_per_device": 32,
                                     "global_batch": 64}
    assert record["config"]["world_size"] == 2 and record["sessions"] == 2
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3, 4, 5, 6]
    assert record["history"][-1]["train_images"] == 512  # both ranks' images: 2 × 8 batches of 32
    assert record["history"][-1]["train_loss"] < 0.8 * record["history"][0]["train_loss"]
    assert out.count('"name"') == 1  # one summary, from rank 0
    # The key of a two-process run is its own; a single process keeps the committed keys.
    single = make_config("smoke", epochs=6, train_subset=512, test_subset=128)
    assert record["key"] != single.key() and "world_size" not in single.identity()


def test_a_config_for_two_processes_outside_torchrun_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="world_size is 2 but 1 process.*torchrun --nproc_per_node N"):
        train(make_config("smoke", world_size=2), tmp_path, progress=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="world_size is 1 but 2 process"):
        train(make_config("smoke"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="sync_bn needs CUDA devices"):
        train(make_config("smoke", world_size=2, sync_bn=True, device="cpu"), tmp_path, progress=False)


def test_sync_batchnorm_reaches_the_attention_trunks():
    model = build_model(make_config("smoke", conv="fmdconv"), num_classes=10, in_channels=3)
    trunks = sum(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert trunks > 0
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    norms = [m for m in synced.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
