"""train-seg and train-select hand every engine option to EngineConfig by name (no locals() lookup)."""

from __future__ import annotations

import pytest
from conftest import invoke

import bodycomp_cli.tasks.segmentation as segmentation
import bodycomp_cli.tasks.slice_selection as slice_selection
from bodycomp_cli.engine.config import EngineConfig

ENGINE_OPTIONS = [
    "-e", "7", "-b", "6", "-l", "0.25", "--schedule", "step", "-g", "0", "--no-amp", "--seed", "11",
    "--deterministic", "--workers", "3", "--steps-per-epoch", "5", "--quiet", "--resume", "--save-every", "4",
]  # fmt: skip
EXPECTED = EngineConfig(
    epochs=7, batch_size=6, learning_rate=0.25, schedule="step", gpus=0, amp=False, seed=11, deterministic=True,
    workers=3, steps_per_epoch=5, quiet=True, resume=True, save_every=4,
)  # fmt: skip


@pytest.mark.parametrize("command", ["train-seg", "train-select"])
def test_every_engine_option_reaches_the_engine_config(tmp_path, monkeypatch, command):
    received = {}

    def capture(data_dir, models_dir, settings, engine, name, start):
        received["engine"] = engine

    monkeypatch.setattr(segmentation, "train_segmentation", capture)
    monkeypatch.setattr(slice_selection, "train_slice_selection", capture)
    result = invoke([command, tmp_path, tmp_path / "models", "-a", "wired", *ENGINE_OPTIONS])
    assert result.exit_code == 0, (result.stderr or "") + result.output + repr(result.exception)
    assert received["engine"] == EXPECTED


@pytest.mark.parametrize("command", ["train-seg", "train-select"])
@pytest.mark.parametrize(
    ("flags", "amp", "window"),
    [
        ([], None, (None, None)),  # unset: the library decides (AMP on CUDA only; the data's window)
        (["--amp", "--window-level", "50", "--window-width", "350"], True, (50.0, 350.0)),
        (["--no-amp"], False, (None, None)),
    ],
)
def test_amp_and_window_reach_the_engine_and_the_task_as_given(tmp_path, monkeypatch, command, flags, amp, window):
    received = {}

    def capture(data_dir, models_dir, settings, engine, name, start):
        received.update(settings=settings, engine=engine)

    monkeypatch.setattr(segmentation, "train_segmentation", capture)
    monkeypatch.setattr(slice_selection, "train_slice_selection", capture)
    result = invoke([command, tmp_path, tmp_path / "models", "-a", "tri", "-g", "0", *flags])
    assert result.exit_code == 0, (result.stderr or "") + result.output + repr(result.exception)
    assert received["engine"].amp is amp
    assert (received["settings"].window_level, received["settings"].window_width) == window
