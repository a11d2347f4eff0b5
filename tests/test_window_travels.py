"""The HU window typed at prepare time travels with the data: dataset.json -> config.json -> evaluate/estimate.

Before issue 21, train-select always recorded L40/W400, so estimate windowed raw HU other than the PNGs the
model had learned from, and nothing said so.
"""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pandas as pd
from conftest import assert_user_error, invoke
from test_prepare_slices import make_series, write_manifest

from bodycomp_cli.core.preprocess import window_hu
from bodycomp_cli.tasks import load_predictor

TRAIN = ["--arch", "resnet18", "--image-size", "32", "-e", "1", "--steps-per-epoch", "1", "-b", "4"]
TRAIN += ["--no-series-head", "--workers", "0", "--quiet", "-L", "L3"]


def _prepared(tmp_path, *window: str):
    made = make_series(tmp_path, n_series=4, slices=6, size=32)
    rows = [
        {"series": f"S{i}", "path": f"s{i}.npz", "z_L3": 92.0 + i, "split": split}
        for i, split in enumerate(("train", "train", "val", "test"))
    ]
    manifest = write_manifest(tmp_path / "series.csv", rows)
    out = tmp_path / "slices"
    result = invoke(["prepare-slices", manifest, out, "--workers", "1", *window])
    assert result.exit_code == 0, result.output + result.stderr
    return made, out


def test_estimate_on_raw_ct_feeds_the_pixels_evaluate_reads_from_the_pngs(tmp_path):
    made, data = _prepared(tmp_path, "--window-level", "50", "--window-width", "350")
    result = invoke(["train-select", data, tmp_path / "models", "-a", "sel", *TRAIN])
    assert result.exit_code == 0, result.output + result.stderr
    assert "window L50/W350 from" in result.stdout
    run = tmp_path / "models" / "sel"
    assert json.loads((run / "config.json").read_text())["window"] == {"level": 50.0, "width": 350.0}

    meta = pd.read_csv(data / "meta" / "test.csv", index_col=0)
    pngs = np.stack([iio.imread(data / "images" / "test" / f"{i:06d}.png") for i in meta.index])
    hu, z = made["S3"]
    # The PNGs are the CT at L50/W350; at the old L40/W400 the model would be fed other pixels.
    np.testing.assert_array_equal(pngs, window_hu(hu[meta["slice_index"]], 50, 350))
    assert not np.array_equal(pngs, window_hu(hu[meta["slice_index"]], 40, 400))

    predictor = load_predictor(run)
    from_pngs = predictor.outputs_8bit(pngs)  # what evaluate computes
    from_raw_ct = predictor.outputs(hu[meta["slice_index"]], z[meta["slice_index"]])  # what estimate computes
    np.testing.assert_array_equal(from_raw_ct, from_pngs)


def test_a_layout_without_dataset_json_trains_at_the_original_window_and_says_so(tmp_path):
    _, data = _prepared(tmp_path)
    (data / "dataset.json").unlink()  # the original toolkit's layout has none
    result = invoke(["train-select", data, tmp_path / "models", "-a", "sel", *TRAIN])
    assert result.exit_code == 0, result.output + result.stderr
    assert "assuming window L40/W400" in result.stdout
    assert json.loads((tmp_path / "models" / "sel" / "config.json").read_text())["window"] == {
        "level": 40.0,
        "width": 400.0,
    }
    result = invoke(["train-select", data, tmp_path / "models", "-a", "sel2", *TRAIN, "--window-level", "30"])
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads((tmp_path / "models" / "sel2" / "config.json").read_text())["window"]["level"] == 30.0


def test_a_window_that_contradicts_the_pngs_is_refused(tmp_path):
    _, data = _prepared(tmp_path, "--window-level", "50", "--window-width", "350")
    result = invoke(["train-select", data, tmp_path / "models", "-a", "sel", *TRAIN, "--window-level", "40"])
    assert_user_error(result, "dataset.json")
    assert not (tmp_path / "models" / "sel").exists()
