"""Crash safety with real processes: SIGKILL then --resume equals an uninterrupted run; Ctrl-C exits 130 cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import torch
from conftest import invoke
from helpers_train import make_select_data

torch.set_num_threads(1)

OPTIONS = ["--arch", "resnet10t", "--image-size", "32", "-b", "4", "--workers", "1", "--steps-per-epoch", "6"]
OPTIONS += ["--deterministic", "--quiet"]


def start(data, models, name, *extra):
    command = [sys.executable, "-m", "bodycomp_cli", "train-select", str(data), str(models), "-a", name]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*command, *OPTIONS, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    # A shell starts background jobs (`make test &`, some CI runners) with SIGINT ignored, children inherit
    # that, and Python then installs no KeyboardInterrupt handler: restore the default so Ctrl-C is testable.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(path, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def history(run_dir):
    return pd.read_csv(run_dir / "history.csv").drop(columns="seconds")


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = make_select_data(tmp_path / "data", n_series=(2, 1), slices=10)
    models = tmp_path / "models"
    victim = start(data, models, "killed", "-e", "3")
    wait_for(models / "killed" / "checkpoint_last.pt", victim)
    time.sleep(0.3)  # somewhere inside epoch 2 (or while writing its files)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    done = len(pd.read_csv(models / "killed" / "history.csv"))
    assert 1 <= done < 3, "the kill came too late to test anything"

    resumed = invoke(["train-select", data, models, "-a", "killed", "-e", "3", "--resume", *OPTIONS])
    assert resumed.exit_code == 0, resumed.output
    straight = invoke(["train-select", data, models, "-a", "straight", "-e", "3", *OPTIONS])
    assert straight.exit_code == 0, straight.output
    after_resume = history(models / "killed")
    assert after_resume["epoch"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(after_resume, history(models / "straight"))
    assert not [p.name for p in (models / "killed").iterdir() if p.name.startswith(".")]  # no temp files left


def test_ctrl_c_keeps_the_last_epoch_says_how_to_resume_and_exits_130(tmp_path):
    data = make_select_data(tmp_path / "data", n_series=(2, 1), slices=10)
    models = tmp_path / "models"
    process = start(data, models, "stopped", "-e", "50")
    wait_for(models / "stopped" / "checkpoint_last.pt", process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in out + err
    assert "-a stopped --resume" in out
    checkpoint = torch.load(models / "stopped" / "checkpoint_last.pt", weights_only=False)
    rows = pd.read_csv(models / "stopped" / "history.csv")
    assert checkpoint["epoch"] == len(rows) == rows["epoch"].iloc[-1] >= 1
    assert not [p.name for p in (models / "stopped").iterdir() if p.name.startswith(".")]
