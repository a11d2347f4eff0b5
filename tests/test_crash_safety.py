"""Crash safety with real processes: SIGKILL at each named write point, then --resume, equals an uninterrupted
run and leaves no temp file; Ctrl-C exits 130 cleanly.

The kills land exactly where named: BODYCOMP_TEST_PAUSE_AT makes the trainer stop at that point and create a
marker file; the test waits for the marker, never for a sleep. The runs are forked from a forkserver that has
imported torch once, so each of the eight processes costs a training epoch, not an interpreter start.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import invoke
from helpers_atomic import wait_for_marker
from helpers_train import make_select_data
from test_estimate_cli import FakeModels, write_series

from bodycomp_cli.engine.checkpoint import load_checkpoint
from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate
from bodycomp_cli.io.atomic import PAUSE_AT, PAUSE_MARKER, TEMP_PREFIX

torch.set_num_threads(1)

OPTIONS = ["--arch", "test_resnet", "--image-size", "32", "-b", "4", "--workers", "0", "--steps-per-epoch", "3"]
OPTIONS += ["--deterministic", "--quiet"]
EPOCHS = 6
PRELOAD = ["torch", "timm", "segmentation_models_pytorch", "bodycomp_cli.cli", "bodycomp_cli.tasks.slice_selection"]

# (where the process is killed, the checkpoint_last epoch on disk afterwards). Each run after the first
# resumes; a kill before checkpoint_last's rename leaves the previous epoch's, which the next run redoes.
KILLS = [
    ("before-rename:checkpoint_best.pt", 1),  # epoch 1: checkpoint_last renamed, best's link still a temp
    ("written:checkpoint_last.pt", 1),  # epoch 2: the whole checkpoint in its temp file, not yet renamed
    ("before-rename:history.csv", 1),  # the history a resume rewrites before it trains
    ("after-rename:checkpoint_last.pt", 2),  # epoch 2: checkpoint in place, history.csv an epoch behind
    ("before:tensorboard", 3),  # epoch 3: every file but TensorBoard's events
    ("before-rename:curves.png", 4),  # epoch 4: curves.png in its temp file
    ("after:tensorboard", 5),  # epoch 5: every file written, the writer not yet done
]


def _run_cli(argv: list[str], env: dict[str, str]) -> None:
    os.environ.update(env)
    from bodycomp_cli.cli import main

    sys.argv = ["bodycomp", *argv]
    main()


@pytest.fixture(scope="module")
def forkserver():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def kill_at(forkserver, target, args, point, marker) -> None:
    """Run target(*args) in a forked process that pauses at `point`, and SIGKILL it there."""
    process = forkserver.Process(target=target, args=args, daemon=True)
    process.start()
    try:
        wait_for_marker(marker, process)
    finally:
        process.kill()
        process.join()
    assert marker.read_text() == point.split("#")[0]
    assert process.exitcode == -signal.SIGKILL
    marker.unlink()


def temp_files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.startswith(TEMP_PREFIX))


def history(run_dir):
    return pd.read_csv(run_dir / "history.csv").drop(columns="seconds")


def test_sigkill_at_every_write_point_then_resume_equals_an_uninterrupted_run(tmp_path, forkserver):
    data = make_select_data(tmp_path / "data", n_series=(2, 1), slices=10)
    models, marker = tmp_path / "models", tmp_path / "paused"
    run_dir = models / "killed"
    train = ["train-select", str(data), str(models), "-a", "killed", "-e", str(EPOCHS), *OPTIONS]
    for number, (point, saved_epoch) in enumerate(KILLS):
        argv = train + (["--resume"] if number else [])
        env = {PAUSE_AT: point, PAUSE_MARKER: str(marker), "OMP_NUM_THREADS": "1"}
        kill_at(forkserver, _run_cli, (argv, env), point, marker)
        assert load_checkpoint(run_dir / "checkpoint_last.pt")["epoch"] == saved_epoch, point
        if point.startswith(("before-rename", "written")):  # the kill did land inside that file's write
            assert any(point.split(":")[1] in name for name in temp_files(run_dir)), point

    resumed = invoke([*train, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    straight = invoke(["train-select", data, models, "-a", "straight", "-e", str(EPOCHS), *OPTIONS])
    assert straight.exit_code == 0, straight.output
    after_resume = history(run_dir)
    assert after_resume["epoch"].tolist() == list(range(1, EPOCHS + 1))
    pd.testing.assert_frame_equal(after_resume, history(models / "straight"))
    assert temp_files(run_dir) == []
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(p.name for p in (models / "straight").iterdir())


def test_save_every_skips_checkpoints_and_a_killed_run_resumes_from_the_last_saved(tmp_path, forkserver):
    data = make_select_data(tmp_path / "data", n_series=(2, 1), slices=10)
    models, marker = tmp_path / "models", tmp_path / "paused"
    train = ["train-select", str(data), str(models), "-e", "5", *OPTIONS]
    point = "after:tensorboard#3"  # epoch 3's files all written
    env = {PAUSE_AT: point, PAUSE_MARKER: str(marker), "OMP_NUM_THREADS": "1"}
    kill_at(forkserver, _run_cli, ([*train, "-a", "every2", "--save-every", "2"], env), point, marker)
    run_dir = models / "every2"
    rows = history(run_dir)
    assert rows["epoch"].tolist() == [1, 2, 3]  # history.csv and curves.png every epoch
    metric = rows[json.loads((run_dir / "config.json").read_text())["best_metric"]]
    # Epoch 3 is saved only as a new best (epoch 1 is one by definition; epoch 2 is due).
    expected = 3 if metric[2] < metric[:2].min() else 2
    saved = load_checkpoint(run_dir / "checkpoint_last.pt")
    assert saved["epoch"] == expected == 2  # (with this data epoch 3 is no new best, so the skip is exercised)
    assert [row["epoch"] for row in saved["history"]] == [1, 2]

    resumed = invoke([*train, "-a", "every2", "--save-every", "2", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    every_epoch = invoke([*train, "-a", "every1"])
    assert every_epoch.exit_code == 0, every_epoch.output
    pd.testing.assert_frame_equal(history(run_dir), history(models / "every1"))  # saving less changes nothing
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        ours, theirs = load_checkpoint(run_dir / name), load_checkpoint(models / "every1" / name)
        assert ours["epoch"] == theirs["epoch"]
        assert all(torch.equal(ours["model"][key], theirs["model"][key]) for key in theirs["model"])
    assert temp_files(run_dir) == []


def _estimate_with_fake_models(paths, out, resume, env) -> None:
    os.environ.update(env)
    options = EstimateOptions(resume=resume, save_masks=True, show_progress=False)
    run_estimate(collect_inputs(paths), FakeModels(), out, options)


def _estimate_outputs(out):
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return files, pd.read_csv(out / "results.csv"), json.loads((out / "results.json").read_text())


# Series a, b, c; each series writes masks/, previews/, then appends its row to results.csv; results.json,
# studies.csv and report.html are written at the end.
ESTIMATE_KILLS = [
    "before-append:results.csv#2",  # b's mask and preview written, its row not: b is done again
    "before-rename:b_L3.png",  # the resumed run, in b's preview
    "appended:results.csv#2",  # b and c appended, the final outputs not yet written
    "before-rename:results.json",  # results.csv rewritten whole at the end, results.json in its temp file
]


def test_estimate_killed_at_write_points_then_resumed_equals_an_uninterrupted_run(tmp_path, forkserver):
    paths = []
    for name, n_slices in [("a", 30), ("b", 31), ("c", 32)]:
        write_series(tmp_path / f"{name}.npz", n_slices=n_slices)
        paths.append(tmp_path / f"{name}.npz")
    out, marker = tmp_path / "out", tmp_path / "paused"
    for number, point in enumerate(ESTIMATE_KILLS):
        env = {PAUSE_AT: point, PAUSE_MARKER: str(marker)}
        kill_at(forkserver, _estimate_with_fake_models, (paths, out, number > 0, env), point, marker)
        if point.startswith("before-rename"):
            assert any(point.split(":")[1].split("#")[0] in name for name in temp_files(out)), point
    _estimate_with_fake_models(paths, out, True, {PAUSE_AT: ""})
    _estimate_with_fake_models(paths, tmp_path / "straight", False, {PAUSE_AT: ""})
    files, results, document = _estimate_outputs(out)
    straight_files, straight_results, straight_document = _estimate_outputs(tmp_path / "straight")
    assert files == straight_files and not temp_files(out)
    pd.testing.assert_frame_equal(results, straight_results)
    assert document == straight_document


def test_ctrl_c_keeps_the_last_epoch_says_how_to_resume_and_exits_130(tmp_path):
    data = make_select_data(tmp_path / "data", n_series=(2, 1), slices=10)
    models = tmp_path / "models"
    command = [sys.executable, "-m", "bodycomp_cli", "train-select", str(data), str(models), "-a", "stopped"]
    process = subprocess.Popen(
        [*command, "-e", "50", *OPTIONS],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    # The interrupt may land anywhere after the first checkpoint: every place must end the same way.
    wait_for_marker(models / "stopped" / "checkpoint_last.pt", process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in out + err
    assert "-a stopped --resume" in err  # the hint, printed once with the exit (not a second `interrupted`)
    assert (out + err).count("interrupted") == 1, out + err
    checkpoint = load_checkpoint(models / "stopped" / "checkpoint_last.pt")
    rows = pd.read_csv(models / "stopped" / "history.csv")
    assert checkpoint["epoch"] == len(rows) == rows["epoch"].iloc[-1] >= 1
    assert temp_files(models / "stopped") == []


def _default_sigint() -> None:
    # A shell starts background jobs (`make test &`, some CI runners) with SIGINT ignored, children inherit
    # that, and Python then installs no KeyboardInterrupt handler: restore the default so Ctrl-C is testable.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
