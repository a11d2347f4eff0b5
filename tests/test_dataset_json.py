"""dataset.json: the description a prepared folder carries (core/dataset.py), and the prepare commands writing it."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from conftest import assert_user_error, invoke
from test_prepare_slices import make_series, no_output_left, write_manifest

from bodycomp_cli import __version__
from bodycomp_cli.core.dataset import (
    DATASET_FILE,
    DATASET_SCHEMA_VERSION,
    DatasetDescription,
    read_dataset_description,
    resolve_window,
)
from bodycomp_cli.core.runconfig import Window
from bodycomp_cli.errors import BodycompError

SLICES = DatasetDescription(
    kind="slice_selection",
    window=Window(50.0, 350.0),
    levels=["L3", "T5"],
    counts={"train": {"series": 2, "slices": 12}, "val": {"series": 1, "slices": 6}},
    source_manifest="series.csv",
    bodycomp_version=__version__,
)


def write_description(folder, description: DatasetDescription = SLICES):
    folder.mkdir(exist_ok=True)
    (folder / DATASET_FILE).write_text(description.to_json())
    return folder


def refused(call, *fragments: str) -> str:
    with pytest.raises(BodycompError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# ----- the file --------------------------------------------------------------------------------------------------
def test_round_trip_through_json(tmp_path):
    seg = DatasetDescription(
        "segmentation", Window(-600.0, 1500.0), None, {"train": {"slices": 3}}, "m.csv", "0.1", True
    )
    for description in (SLICES, seg):
        data = json.loads(description.to_json())
        assert list(data)[0] == "schema_version" and data["schema_version"] == DATASET_SCHEMA_VERSION
        assert DatasetDescription.from_dict(data, "x") == description
        assert read_dataset_description(write_description(tmp_path / description.kind, description)) == description
    assert json.loads(SLICES.to_json())["window"] == {"level": 50.0, "width": 350.0}


def test_no_file_is_none(tmp_path):
    assert read_dataset_description(tmp_path) is None


def test_a_newer_schema_is_refused_in_one_line(tmp_path):
    data = {**SLICES.to_dict(), "schema_version": DATASET_SCHEMA_VERSION + 1}
    (tmp_path / DATASET_FILE).write_text(json.dumps(data))
    refused(lambda: read_dataset_description(tmp_path), str(tmp_path / DATASET_FILE), "newer", "upgrade bodycomp")


def test_bad_json_is_refused_naming_the_file(tmp_path):
    (tmp_path / DATASET_FILE).write_text('{"schema_version": 1, "kind": ')
    refused(lambda: read_dataset_description(tmp_path), str(tmp_path / DATASET_FILE), "not valid JSON")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"kind": "mystery"}, "unknown kind 'mystery'"),
        ({"window": {"level": 40}}, "missing 'width'"),
        ({"window": {"level": 40, "width": 0}}, "width 0 must be a positive"),
        ({"window": "L40/W400"}, "wrong type"),
        ({"counts": {"train": {"slices": -1}}}, "wrong type"),
        ({"schema_version": "1"}, "not a positive integer"),
        ({"thoracic": "yes"}, "wrong type"),
    ],
)
def test_bad_content_is_refused_naming_the_source(change, fragment):
    refused(
        lambda: DatasetDescription.from_dict({**SLICES.to_dict(), **change}, "d/dataset.json"),
        "d/dataset.json",
        fragment,
    )
    refused(lambda: DatasetDescription.from_dict([], "d/dataset.json"), "d/dataset.json", "JSON object")


# ----- resolve_window: every branch --------------------------------------------------------------------------------
def test_the_data_window_without_options(tmp_path):
    data = write_description(tmp_path / "slices")
    for images_windowed in (True, False):
        assert resolve_window(data, None, None, images_windowed=images_windowed) == (
            Window(50.0, 350.0),
            f"window L50/W350 from {data / DATASET_FILE}",
        )


def test_no_dataset_json_assumes_the_original_window(tmp_path):
    assert resolve_window(tmp_path, None, None, images_windowed=True) == (
        Window(40.0, 400.0),
        f"no dataset.json in {tmp_path}: assuming window L40/W400 (the original toolkit's PNG layout)",
    )
    assert resolve_window(tmp_path, None, None, images_windowed=False) == (
        Window(40.0, 400.0),
        f"no dataset.json in {tmp_path}: assuming window L40/W400 (the original toolkit's array layout)",
    )
    assert resolve_window(None, None, None, images_windowed=True) == (Window(), "window L40/W400 (the default)")


def test_options_without_dataset_json_are_taken_and_filled_from_the_default(tmp_path):
    for images_windowed in (True, False):
        assert resolve_window(tmp_path, 30.0, None, images_windowed=images_windowed) == (
            Window(30.0, 400.0),
            "window L30/W400 as given",
        )
        assert resolve_window(tmp_path, None, 350.5, images_windowed=images_windowed) == (
            Window(40.0, 350.5),
            "window L40/W350.5 as given",
        )


def test_options_that_agree_with_dataset_json(tmp_path):
    data = write_description(tmp_path / "slices")
    path = data / DATASET_FILE
    for images_windowed in (True, False):
        assert resolve_window(data, 50.0, 350.0, images_windowed=images_windowed) == (
            Window(50.0, 350.0),
            f"window L50/W350 as given (the same as {path})",
        )
        # The missing one is filled from dataset.json, not from Window().
        assert resolve_window(data, None, 350.0, images_windowed=images_windowed)[0] == Window(50.0, 350.0)
        assert resolve_window(data, 50.0, None, images_windowed=images_windowed)[0] == Window(50.0, 350.0)


def test_options_that_contradict_windowed_pngs_are_refused(tmp_path):
    data = write_description(tmp_path / "slices")
    for level, width, asked in ((40.0, None, "L40/W350"), (None, 400.0, "L50/W400"), (40.0, 400.0, "L40/W400")):
        refused(
            lambda level=level, width=width: resolve_window(data, level, width, images_windowed=True),
            str(data / DATASET_FILE),
            "windowed at L50/W350",
            f"ask for {asked}",
        )


def test_options_override_the_window_of_raw_hu_arrays(tmp_path):
    data = write_description(tmp_path / "seg", replace(SLICES, kind="segmentation", levels=None))
    assert resolve_window(data, 40.0, None, images_windowed=False) == (
        Window(40.0, 350.0),
        f"window L40/W350 as given, overriding L50/W350 from {data / DATASET_FILE}",
    )


@pytest.mark.parametrize(
    ("level", "width"), [(40.0, 0.0), (40.0, -5.0), (40.0, math.inf), (None, math.nan), (math.nan, 400.0)]
)
def test_a_bad_window_is_refused(tmp_path, level, width):
    for images_windowed in (True, False):
        refused(
            lambda windowed=images_windowed: resolve_window(tmp_path, level, width, images_windowed=windowed),
            "--window-level/--window-width",
        )


# ----- the prepare commands write it -------------------------------------------------------------------------------
def test_prepare_slices_records_its_window_levels_and_counts(tmp_path):
    make_series(tmp_path, n_series=3, slices=4, size=8)
    rows = [
        {"series": f"S{i}", "path": f"s{i}.npz", "z_L3": 90.0, "z_T5": 95.0, "split": split}
        for i, split in enumerate(("train", "val", "train"))
    ]
    manifest = write_manifest(tmp_path / "series.csv", rows)
    out = tmp_path / "slices"
    result = invoke(
        ["prepare-slices", manifest, out, "-L", "T5", "-L", "L3", "--window-level", "50", "--window-width", "350"]
    )
    assert result.exit_code == 0, result.output + result.stderr
    data = json.loads((out / DATASET_FILE).read_text())
    assert data == {
        "schema_version": 1,
        "kind": "slice_selection",
        "window": {"level": 50.0, "width": 350.0},
        "levels": ["T5", "L3"],
        "counts": {"train": {"series": 2, "slices": 8}, "val": {"series": 1, "slices": 4}},
        "source_manifest": str(manifest),
        "bodycomp_version": __version__,
        "thoracic": None,
    }
    assert resolve_window(out, None, None, images_windowed=True)[0] == Window(50.0, 350.0)


def test_prepare_slices_defaults_to_window_and_refuses_a_bad_width_writing_nothing(tmp_path):
    make_series(tmp_path, n_series=1, slices=2, size=8)
    manifest = write_manifest(tmp_path / "m.csv", [{"series": "S0", "path": "s0.npz", "z_L3": 90, "split": "test"}])
    assert invoke(["prepare-slices", manifest, tmp_path / "out"]).exit_code == 0
    description = read_dataset_description(tmp_path / "out")
    assert description.window == Window() and description.levels == ["L3"]
    assert description.counts == {
        "train": {"series": 0, "slices": 0},
        "val": {"series": 0, "slices": 0},
        "test": {"series": 1, "slices": 2},
    }
    result = invoke(["prepare-slices", manifest, tmp_path / "bad", "--window-width", "0"])
    assert_user_error(result, "--window-level/--window-width", "width 0")
    no_output_left(tmp_path / "bad")


def test_prepare_seg_records_the_window_training_applies(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i, split in enumerate(("train", "train", "val")):
        np.save(tmp_path / f"{i}_img.npy", rng.integers(-1000, 1000, (8, 8)).astype(np.int16))
        np.save(tmp_path / f"{i}_mask.npy", rng.integers(0, 3, (8, 8)).astype(np.uint8))
        rows.append({"image": f"{i}_img.npy", "mask": f"{i}_mask.npy", "split": split})
    manifest = write_manifest(tmp_path / "seg.csv", rows)
    out = tmp_path / "seg"
    result = invoke(
        ["prepare-seg", manifest, out, "--size", "8", "-t", "--window-level", "-600", "--window-width", "1500"]
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads((out / DATASET_FILE).read_text()) == {
        "schema_version": 1,
        "kind": "segmentation",
        "window": {"level": -600.0, "width": 1500.0},
        "levels": None,
        "counts": {"train": {"slices": 2}, "val": {"slices": 1}},
        "source_manifest": str(manifest),
        "bodycomp_version": __version__,
        "thoracic": True,
    }
    assert invoke(["prepare-seg", manifest, tmp_path / "default", "--size", "8"]).exit_code == 0
    description = read_dataset_description(tmp_path / "default")
    assert description.window == Window() and description.thoracic is False
    result = invoke(["prepare-seg", manifest, tmp_path / "bad", "--size", "8", "--window-width", "-1"])
    assert_user_error(result, "--window-level/--window-width", "width -1")
    no_output_left(tmp_path / "bad")
