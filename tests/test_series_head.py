"""The series-level head of slice selection: grid resampling, reading a level from context along z, the run
folder it lives in, and the per-slice mode it leaves selectable."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import assert_user_error, invoke
from helpers_train import make_select_data

from bodycomp_cli.core.metrics import outputs_from_offsets
from bodycomp_cli.core.selection import select_level_slice
from bodycomp_cli.nets import SELECTION_NETS
from bodycomp_cli.tasks.slice_selection.series_head import (
    HeadSettings,
    SeriesFeatures,
    classifier_features,
    predict_offsets_mm,
    to_grid,
    train_heads,
)

torch.set_num_threads(1)

FAST = ["--arch", "resnet10t", "--image-size", "32", "-b", "4", "--workers", "0", "--steps-per-epoch", "2"]


def test_to_grid_resamples_each_feature_linearly_in_mm():
    z = np.array([0.0, 1.0, 3.0, 4.5])
    values = np.stack([z * 2.0, -z], axis=1)
    grid, resampled = to_grid(z, values, grid_mm=1.5)
    np.testing.assert_allclose(grid, [0.0, 1.5, 3.0, 4.5])
    np.testing.assert_allclose(resampled, [[0.0, 0.0], [3.0, -1.5], [6.0, -3.0], [9.0, -4.5]])


def _landmark_series(rng: np.random.Generator, spacing: float) -> SeriesFeatures:
    """Features that say nothing at the level itself: only a landmark 70 mm above it marks where it is."""
    level = rng.uniform(-40.0, 40.0)
    z = np.arange(level - rng.uniform(60, 120), level + rng.uniform(100, 160), spacing)
    landmark = np.exp(-0.5 * ((z - (level + 70.0)) / 6.0) ** 2)
    features = np.stack([landmark, rng.normal(0, 0.1, len(z)), np.ones_like(z)], axis=1).astype(np.float32)
    return SeriesFeatures(z, features, np.array([level]))


def test_the_head_finds_a_level_from_a_landmark_elsewhere_along_z():
    # A per-slice model cannot do this: the slices at the level look like every other one.
    rng = np.random.default_rng(0)
    train = [_landmark_series(rng, spacing) for spacing in rng.choice([1.0, 2.5, 5.0], 24)]
    settings = HeadSettings(feature_levels=["L3"], grid_mm=2.0, steps=250, members=1, min_crop_mm=200.0)
    heads = train_heads(train, settings, seed=0)
    errors = []
    for entry in (_landmark_series(rng, spacing) for spacing in (1.0, 2.0, 3.0, 5.0, 2.5, 1.5)):
        offsets = predict_offsets_mm(heads, entry.z_mm, entry.features)[:, 0]
        choice = select_level_slice(outputs_from_offsets(offsets, 10.0), entry.z_mm, 10.0)
        errors.append(abs(entry.z_mm[choice.index] - entry.level_z_mm[0]))
    assert max(errors) <= 6.0, errors


def test_prediction_does_not_depend_on_slice_order():
    rng = np.random.default_rng(1)
    entry = _landmark_series(rng, 2.0)
    heads = train_heads([entry], HeadSettings(feature_levels=["L3"], steps=3, members=2), seed=1)
    order = rng.permutation(len(entry.z_mm))
    ordered = predict_offsets_mm(heads, entry.z_mm, entry.features)
    shuffled = predict_offsets_mm(heads, entry.z_mm[order], entry.features[order])
    np.testing.assert_allclose(shuffled, ordered[order], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch", ["resnet10t", "bridge-densenet"])
def test_classifier_features_are_what_the_final_linear_layer_reads(arch):
    torch.manual_seed(0)
    if arch in SELECTION_NETS:
        model = SELECTION_NETS[arch](2, 1, layers_per_block=1, blocks=2, initial_filters=8).eval()
    else:
        model = timm.create_model(arch, pretrained=False, in_chans=1, num_classes=2).eval()
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        outputs, features = classifier_features(model, images)
        linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.testing.assert_close(outputs, model(images))
        torch.testing.assert_close(linear(features), outputs)
    assert features.shape == (3, linear.in_features)


def _train(tmp_path, data, *options, name="sel"):
    result = invoke(["train-select", data, tmp_path / "models", "-a", name, "-e", "1", "--quiet", *FAST, *options])
    assert result.exit_code == 0, result.output + str(result.exception)
    return tmp_path / "models" / name


def test_train_select_adds_a_series_head_trained_on_every_level_of_the_data(tmp_path):
    data = make_select_data(tmp_path / "data", levels=("T12", "L3"), n_series=(3, 2), slices=10)
    run = _train(tmp_path, data, "-L", "L3")
    config = json.loads((run / "config.json").read_text())
    assert config["levels"] == ["L3"]
    assert config["series_head"]["feature_levels"] == ["L3", "T12"]  # asked first, then the rest of the data's
    assert {"series_head.pt", "series_head.json"} <= {p.name for p in run.iterdir()}
    report = json.loads((run / "series_head.json").read_text())
    assert report["levels"]["L3"]["n_series"] == 2
    history = pd.read_csv(run / "history.csv")
    assert {"val_mae_mm_L3", "val_mae_mm_T12", "val_mae_mm", "val_phase_mae"} <= set(history.columns)
    best = torch.load(run / "checkpoint_best.pt", weights_only=True)["best"]
    assert best["metric"] == "val_loss"  # the CNN is chosen on every val slice, not on a few series
    # T12 and L3 tell every slice between them its vertebral phase: two more CNN outputs learn it.
    assert config["series_head"]["phase_outputs"] == 2
    assert config["context_mm"] == 10.0  # the head's default: neighbours tell the phase
    weights = torch.load(run / "checkpoint_best.pt", weights_only=True)["model"]
    assert [tuple(v.shape) for k, v in weights.items() if k.endswith("bias")][-1] == (2 + 2,)

    from bodycomp_cli.tasks import load_predictor

    loaded = load_predictor(run)
    volume, z = np.zeros((7, 40, 40), np.int16), np.arange(7) * 2.5
    outputs = loaded.outputs(volume, z_mm=z)
    assert outputs.shape == (7, 1) and np.isfinite(outputs).all()
    assert loaded.heads is not None and len(loaded.heads) == HeadSettings().members
    with pytest.raises(Exception, match="z_mm per slice"):  # the head (and its context slices) need z
        loaded.outputs(volume)
    # The CNN pass alone gives what evidence() compares, and the head run on its features gives the same output.
    volume = np.random.default_rng(0).integers(-200, 300, (7, 40, 40)).astype(np.int16)
    evidence = loaded.evidence(volume, z)
    cnn, features, phase = loaded.series_features(volume, z)
    assert features.shape[0] == 7 and phase is not None and phase.shape == (7, 2)
    np.testing.assert_array_equal(cnn, evidence.cnn_outputs)
    np.testing.assert_array_equal(phase, evidence.phase)
    again = outputs_from_offsets(predict_offsets_mm(loaded.heads, z, features, phase), config["threshold"])
    np.testing.assert_allclose(again[:, :1], evidence.outputs[:, :1], atol=1e-6)

    evaluated = invoke(["evaluate", run, data, "--split", "val", "-o", tmp_path / "eval"])
    assert evaluated.exit_code == 0, evaluated.output + str(evaluated.exception)
    select = json.loads(next((tmp_path / "eval").glob("*.json")).read_text())
    assert select["levels"]["L3"]["selection"]["n_series"] == 2


@pytest.mark.parametrize(("level", "phase_outputs"), [("L3", 2), ("carina", 0)])
def test_one_labelled_level_trains_a_head_with_a_phase_if_it_is_a_vertebra(tmp_path, level, phase_outputs):
    data = make_select_data(tmp_path / "data", levels=(level,), n_series=(2, 2), slices=8)
    run = _train(tmp_path, data, "-L", level)
    config = json.loads((run / "config.json").read_text())
    assert config["series_head"]["feature_levels"] == [level]
    assert config["series_head"]["phase_outputs"] == phase_outputs
    weights = torch.load(run / "checkpoint_best.pt", weights_only=True)["model"]
    assert [tuple(v.shape) for k, v in weights.items() if k.endswith("bias")][-1] == (1 + phase_outputs,)
    assert ("val_phase_mae" in pd.read_csv(run / "history.csv").columns) is bool(phase_outputs)
    evaluated = invoke(["evaluate", run, data, "--split", "val", "-o", tmp_path / "eval"])
    assert evaluated.exit_code == 0, evaluated.output + str(evaluated.exception)
    report = json.loads(next((tmp_path / "eval").glob("*.json")).read_text())
    assert report["levels"][level]["selection"]["n_series"] == 2


def test_no_series_head_is_the_original_per_slice_model(tmp_path):
    data = make_select_data(tmp_path / "data", n_series=(2, 1), slices=8)
    run = _train(tmp_path, data, "--no-series-head")
    assert json.loads((run / "config.json").read_text())["series_head"] is None
    assert not (run / "series_head.pt").exists()
    assert "val_mae_mm" not in pd.read_csv(run / "history.csv").columns


def test_meta_csvs_without_series_train_per_slice_and_refuse_an_explicit_head(tmp_path):
    data = make_select_data(tmp_path / "data", plain_column=True, n_series=(2, 1), slices=8)
    for split in ("train", "val"):
        path = data / "meta" / f"{split}.csv"
        path.write_text(pd.read_csv(path).drop(columns=["series", "z_mm"]).to_csv(index=False))
    run = _train(tmp_path, data)
    assert json.loads((run / "config.json").read_text())["series_head"] is None
    refused = invoke(["train-select", data, tmp_path / "m2", "-a", "x", "-e", "1", *FAST, "--series-head"])
    assert_user_error(refused, "train.csv", "--series-head needs series and z_mm")
    assert not (tmp_path / "m2" / "x").exists()


def test_an_explicit_head_names_the_meta_csv_at_fault(tmp_path):
    data = make_select_data(tmp_path / "data", n_series=(2, 1), slices=8)
    val = data / "meta" / "val.csv"
    val.write_text(pd.read_csv(val).drop(columns=["z_mm"]).to_csv(index=False))  # train.csv still has both
    refused = invoke(["train-select", data, tmp_path / "m", "-a", "x", "-e", "1", *FAST, "--series-head"])
    assert_user_error(refused, "val.csv: --series-head needs series and z_mm")
    val.unlink()  # a missing CSV is reported as missing, not as lacking columns
    refused = invoke(["train-select", data, tmp_path / "m", "-a", "x", "-e", "1", *FAST, "--series-head"])
    assert_user_error(refused, "val.csv")
    assert "needs series" not in refused.output
    assert not (tmp_path / "m" / "x").exists()


def test_a_run_killed_before_its_head_is_refused_then_finished_by_resume(tmp_path):
    data = make_select_data(tmp_path / "data", n_series=(2, 1), slices=8)
    run = _train(tmp_path, data)
    head_bytes = (run / "series_head.pt").read_bytes()
    (run / "series_head.pt").unlink()
    volume = tmp_path / "volume.npy"
    np.save(volume, np.zeros((6, 40, 40), np.int16))
    from bodycomp_cli.tasks import load_predictor

    with pytest.raises(Exception, match="series head was never trained"):
        load_predictor(run)
    result = invoke(["train-select", data, tmp_path / "models", "-a", "sel", "-e", "1", *FAST, "--resume"])
    assert result.exit_code == 0, result.output + str(result.exception)
    # The stage shows its progress (minutes on a loaded CPU), then its summary line.
    assert "series head: CNN features" in result.stderr and "series head: training" in result.stderr
    assert "series head: val selection L3 median" in result.stdout
    assert (run / "series_head.pt").read_bytes() != b""
    assert len((run / "series_head.pt").read_bytes()) == pytest.approx(len(head_bytes), rel=0.05)
    assert load_predictor(run).heads is not None


def test_head_settings_round_trip_through_config_json():
    settings = replace(HeadSettings(), feature_levels=["L3", "L1"], dilations=(1, 3))
    assert HeadSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings


def test_head_training_reports_its_progress_to_the_end():
    entry = _landmark_series(np.random.default_rng(2), 2.0)
    seen: list[tuple[int, int]] = []
    train_heads(
        [entry], HeadSettings(feature_levels=["L3"], steps=3, members=2), seed=1, progress=lambda *a: seen.append(a)
    )
    total = seen[-1][1]
    assert seen[-1] == (total, total) and [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert len(seen) == total + 1 and total >= 2  # every step of every member, then the end


def test_ctrl_c_in_the_head_stage_says_how_to_finish(tmp_path, monkeypatch):
    from bodycomp_cli.tasks.slice_selection import head_fit

    def interrupted(*args):  # noqa: ANN002
        raise KeyboardInterrupt

    monkeypatch.setattr(head_fit, "_fit_series_head", interrupted)
    with pytest.raises(KeyboardInterrupt, match=r"series head.*-a run --resume"):
        head_fit.fit_series_head(tmp_path / "run", HeadSettings(), {}, seed=0, quiet=True)
