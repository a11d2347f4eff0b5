"""Checkpoints: safe (weights-only) loading, RNG states as tensors, old files converted, fewer GPUs on resume."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import matplotlib
import matplotlib.text
import numpy as np
import pytest
import torch

from bodycomp_cli.engine import checkpoint as checkpoints
from bodycomp_cli.engine.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from bodycomp_cli.engine.history import curves_figure, draw_curves
from bodycomp_cli.errors import BodycompError

PACKAGE = Path(__file__).resolve().parents[1] / "bodycomp_cli"


def _draws() -> tuple:
    return random.random(), float(np.random.random()), float(torch.rand(1))


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    random.gauss(0, 1)  # a cached gaussian is part of python's state
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state(), "history": [{"val": np.float64(0.5)}]})
    expected = _draws()
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["history"] == [{"val": 0.5}] and type(loaded["history"][0]["val"]) is float
    restore_rng_state(loaded["rng"])
    assert _draws() == expected
    torch.load(tmp_path / "c.pt", weights_only=True)  # no numpy or Python objects inside


class _Payload:
    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_a_checkpoint_with_code_inside_is_refused_not_run(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoints.FORMAT, "model": _Payload()}, path)
    with pytest.raises(BodycompError, match="safe load refuses") as error:
        load_checkpoint(path)
    assert "this ran" not in capsys.readouterr().out
    assert f"python -m bodycomp_cli.engine.checkpoint {path}" in str(error.value)


def _old_format_checkpoint(path) -> tuple:
    """What bodycomp wrote before format 2: numpy and tuple RNG states, pickled as objects."""
    old_rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    expected = _draws()
    weights = {"w": torch.arange(3.0)}
    torch.save({"format": "bodycomp-checkpoint/1", "model": weights, "rng": old_rng, "epoch": 2}, path)
    return expected


def test_old_run_folders_get_one_line_and_the_converter_makes_them_load(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    expected = _old_format_checkpoint(run / "checkpoint_last.pt")
    with pytest.raises(BodycompError) as error:
        load_checkpoint(run / "checkpoint_last.pt")
    assert "\n" not in str(error.value) and "python -m bodycomp_cli.engine.checkpoint" in str(error.value)
    converted = subprocess.run(
        [sys.executable, "-m", "bodycomp_cli.engine.checkpoint", str(run)], capture_output=True, text=True
    )
    assert converted.returncode == 0, converted.stderr
    assert "converted" in converted.stdout
    loaded = load_checkpoint(run / "checkpoint_last.pt")
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.arange(3.0))
    restore_rng_state(loaded["rng"])
    assert _draws() == expected


def test_damaged_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"epoch": 1})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BodycompError, match="unreadable checkpoint"):
        load_checkpoint(path)


def test_load_reads_onto_the_cpu_first(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(2)}})
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (seen.append(k), real_load(*a, **k))[1])
    load_checkpoint(tmp_path / "c.pt", map_location="meta")
    assert seen == [{"map_location": "cpu", "weights_only": True}]


# ----- issue 12 #4: --resume with fewer visible GPUs than the checkpoint saved ---------------------------------
def test_resume_on_fewer_gpus_restores_the_visible_ones_and_warns_once(monkeypatch):
    restored = []

    def set_rng_state(state, device="cuda"):
        if int(device) >= 1:  # what torch does for a device that is not there
            raise IndexError("list index out of range")
        restored.append((int(device), state))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(4, dtype=torch.uint8)])
    state = rng_state()
    state["cuda"] = [torch.full((4,), i, dtype=torch.uint8) for i in range(4)]  # saved on 4 GPUs
    with pytest.warns(RuntimeWarning, match="4 GPUs but 1 are visible") as caught:
        restore_rng_state(state)
    assert len(caught) == 1
    assert len(restored) == 1 and restored[0][0] == 0 and torch.equal(restored[0][1], state["cuda"][0])


def test_no_warning_when_every_saved_gpu_is_visible(monkeypatch):
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append(device))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(4, dtype=torch.uint8)] * 2)
    state = rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restore_rng_state(state)
    assert restored == [0, 1]


# ----- matplotlib: no process-wide backend choice -----------------------------------------------------------
def test_curves_are_drawn_without_choosing_a_process_wide_backend(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("matplotlib.use called by library code")

    monkeypatch.setattr(matplotlib, "use", refuse)
    rows = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 2 / e, "val_mae": 3.0, "lr": 0.1, "seconds": 1.0} for e in (1, 2)
    ]
    draw_curves(tmp_path / "curves.png", rows)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_fixed_margins_keep_every_label_inside_the_image():
    # curves.png uses fixed margins instead of tight_layout (half the drawing time, issue 15 goal 5): the
    # widest tick labels (large losses), axis labels, titles and legends must still lie inside the figure.
    rows = [
        {"epoch": e, "train_loss": 123456.0 / e, "val_loss": 234567.0 / e, "val_dice_subcutaneous_fat": 0.5 + e / 400,
         "val_dice_visceral_fat": math.nan, "val_mae_mm": 12.5 / e, "lr": 0.1, "seconds": 1.0}
        for e in range(1, 101)
    ]  # fmt: skip
    figure = curves_figure(rows)
    figure.canvas.draw()  # places the axis labels beside their tick labels
    renderer = figure.canvas.get_renderer()
    shown = {t.get_text() for axes in figure.axes for t in axes.findobj(matplotlib.text.Text)}
    assert {"loss", "validation Dice", "validation error", "epoch", "dice_subcutaneous_fat", "mae_mm"} <= shown
    for axes in figure.axes:  # everything drawn for the axes: ticks, labels, title, legend
        drawn = axes.get_tightbbox(renderer)
        assert figure.bbox.x0 <= drawn.x0 and drawn.x1 <= figure.bbox.x1, drawn
        assert figure.bbox.y0 <= drawn.y0 and drawn.y1 <= figure.bbox.y1, drawn
    assert len(figure.axes) == 3  # loss, Dice, millimetres: one unit per axis
    assert figure.get_figheight() * figure.dpi == pytest.approx(336)


def test_slice_selection_curves_put_each_unit_on_its_own_axis_in_distinct_colours():
    levels = ["T5", "T8", "T10", "L1", "L3"]
    rows = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 2 / e, "val_phase_mae": 0.3 / e,
         **{f"val_mae_mm_{level}": 10.0 + i / e for i, level in enumerate(levels)}, "val_mae_mm": 11.0 / e,
         **{f"val_selection_error_mm_{level}": 5.0 + i / e for i, level in enumerate(levels[:3])},
         "val_error_mm": 6.0 / e, "lr": 0.1, "seconds": 1.0}
        for e in range(1, 6)
    ]  # fmt: skip
    figure = curves_figure(rows)
    figure.canvas.draw()
    by_title = {axes.get_title(): axes for axes in figure.axes}
    assert set(by_title) == {"loss", "validation error", "validation phase error"}
    millimetres = by_title["validation error"]
    assert millimetres.get_ylabel() == "millimetres" and len(millimetres.lines) == 10
    assert len({line.get_color() for line in millimetres.lines}) == 10  # no colour drawn twice
    assert [line.get_label() for line in by_title["validation phase error"].lines] == ["phase_mae"]
    for axes in figure.axes:  # whole epochs only: 1, 2, ... never 1.5
        ticks = [t for t in axes.get_xticks() if 1 <= t <= 5]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_no_library_module_calls_matplotlib_use_or_pyplot():
    found = subprocess.run(
        ["grep", "-rnE", r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot", str(PACKAGE)],
        capture_output=True,
        text=True,
    )
    assert found.stdout == ""


def test_a_damaged_pickle_is_called_unreadable_not_old(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"format": checkpoints.FORMAT, "epoch": 1}, path)
    with zipfile.ZipFile(path) as archive:  # torch's zip layout: damage the pickle inside, keep the zip valid
        members = {name: archive.read(name) for name in archive.namelist()}
    pickle_name = next(name for name in members if name.endswith("data.pkl"))
    members[pickle_name] = b"\xff"  # no pickle opcode: torch says "Weights only load failed" here too
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(BodycompError, match="unreadable checkpoint") as error:
        load_checkpoint(path)
    assert "convert" not in str(error.value) and "\n" not in str(error.value)
