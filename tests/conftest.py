"""Shared test helpers. Every test makes its own tiny data in tmp_path."""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bodycomp_cli.cli import build_command

# Test modules import their helpers as `tests.<module>`. This folder has no __init__.py, so an installed regular
# package named `tests` would win that import: rt-utils 1.2.7's wheel installs one into site-packages. Binding the
# name to this folder first keeps every `from tests.x import ...` here.
sys.modules["tests"] = types.ModuleType("tests")
sys.modules["tests"].__path__ = [str(Path(__file__).resolve().parent)]


def invoke(args: Sequence[str]) -> Result:
    """Run `bodycomp ARGS` in-process, with stderr kept apart from stdout."""
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 always keeps them apart
        runner = CliRunner()
    return runner.invoke(build_command(), [str(a) for a in args], catch_exceptions=True)


@pytest.fixture
def cli():
    return invoke


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit 2, no traceback, and a message that contains every fragment."""
    text = (result.stderr or "") + (result.output or "")
    assert result.exit_code == 2, f"exit {result.exit_code}: {text}\n{result.exception!r}"
    assert "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


@pytest.fixture(scope="session")  # shared by the estimate tests: trained once per run
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Phantom series, their prepared data, and 1-epoch 32 px models trained through the typed functions."""
    from bodycomp_cli.engine.config import EngineConfig
    from bodycomp_cli.phantoms.writer import generate_phantoms
    from bodycomp_cli.prepare.seg import prepare_seg
    from bodycomp_cli.prepare.slices import prepare_slices
    from bodycomp_cli.tasks.segmentation import SegmentationSettings, train_segmentation
    from bodycomp_cli.tasks.slice_selection import SliceSelectionSettings, train_slice_selection

    root = tmp_path_factory.mktemp("trained")
    generate_phantoms(root / "phantoms", n_series=4, size=64, seg_slices=2, workers=1, progress=False)
    prepare_seg(root / "phantoms" / "seg.csv", root / "seg_data", size=32)
    prepare_slices(root / "phantoms" / "series.csv", root / "slice_data", levels=["L3"], workers=1)
    engine = {"epochs": 1, "workers": 0, "quiet": True, "gpus": 0, "tensorboard": False}
    seg = train_segmentation(
        root / "seg_data",
        root / "models",
        SegmentationSettings(encoder="resnet18", image_size=32),
        EngineConfig(batch_size=8, **engine),
        name="seg",
    )
    select = train_slice_selection(
        root / "slice_data",
        root / "models",
        SliceSelectionSettings(levels=["L3"], arch="resnet10t", image_size=32),
        EngineConfig(batch_size=16, steps_per_epoch=2, learning_rate=1e-4, **engine),
        name="select",
    )
    return {"root": root, "seg": seg, "select": select, "series_csv": root / "phantoms" / "series.csv"}
