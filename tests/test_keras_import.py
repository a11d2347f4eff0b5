"""import-keras end to end, and training that starts from imported weights (--init-weights, -i)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_user_error, invoke
from helpers_train import make_seg_data, make_select_data

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 on torch: no TensorFlow needed
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

from keras_originals import original_densenet, original_unet, randomise_batch_norm  # noqa: E402

from bodycomp_cli.tasks import load_predictor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras 3's own __array__ on numpy 2
torch.set_num_threads(1)


def saved_unet(tmp_path, **options):
    model = original_unet(size=32, **options)
    randomise_batch_norm(model)
    path = tmp_path / "segmentation_unet.hdf5"
    model.save(path)
    return model, path


def test_import_keras_full_model_gives_a_run_that_load_run_uses(tmp_path):
    keras_model, path = saved_unet(tmp_path)
    result = invoke(["import-keras", path, tmp_path / "models", "-a", "l3_seg"])
    assert result.exit_code == 0, (result.stderr or "") + result.output + repr(result.exception)
    run_dir = tmp_path / "models" / "l3_seg"
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint_best.pt", "config.json"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["task"] == "segmentation" and config["arch"] == "bridge-unet" and config["image_size"] == 32
    assert config["window"] == {"level": 40.0, "width": 400.0}
    # The original's -p input, clip((HU + 160) * 256 / 400, 0, 255), is min(256 x, 255) of our [0, 1] window.
    assert config["arch_options"]["input_gain"] == 256.0 and config["arch_options"]["input_max"] == 255.0
    assert config["imported_from"]["path"] == str(path.resolve()) and config["versions"]["bodycomp"]
    run = load_predictor(run_dir).run
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    with torch.no_grad():
        ours = torch.softmax(run.model(torch.from_numpy(images / 256).permute(0, 3, 1, 2)), 1).permute(0, 2, 3, 1)
    np.testing.assert_allclose(ours.numpy(), keras_model.predict(images, verbose=0), atol=1e-4)
    # The same name again is refused rather than overwritten.
    assert_user_error(invoke(["import-keras", path, tmp_path / "models", "-a", "l3_seg"]), "already exists")


def test_import_keras_weights_file_with_architecture_and_args_json(tmp_path):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    model = original_densenet(size=64, outputs=2, layers_per_block=2, blocks=2)
    randomise_batch_norm(model)
    folder = tmp_path / "original_run"
    folder.mkdir()
    # What the original's training wrote: weights-EE-LOSS.hdf5, architecture.json and args.json side by side.
    with h5py.File(folder / "weights-03-0.0412.hdf5", "w") as h5:
        legacy_h5_format.save_weights_to_hdf5_group(h5, model)
    (folder / "architecture.json").write_text(model.to_json())
    (folder / "args.json").write_text(json.dumps({"levels": ["T5", "L3"], "threshold": 5.0}))
    result = invoke(["import-keras", folder / "weights-03-0.0412.hdf5", tmp_path / "models", "-a", "sel"])
    assert result.exit_code == 0, (result.stderr or "") + result.output + repr(result.exception)
    config = json.loads((tmp_path / "models" / "sel" / "config.json").read_text())
    assert config["task"] == "slice_selection" and config["arch"] == "bridge-densenet"
    assert config["levels"] == ["T5", "L3"] and config["threshold"] == 5.0 and config["image_size"] == 64
    run = load_predictor(tmp_path / "models" / "sel").run
    images = np.random.default_rng(2).integers(0, 256, (3, 64, 64, 1)).astype(np.float32)  # 8-bit values
    with torch.no_grad():
        ours = torch.sigmoid(run.model(torch.from_numpy(images / 255).permute(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(ours, model.predict(images, verbose=0), atol=1e-4)


def test_weights_file_without_its_architecture_is_refused(tmp_path):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(tmp_path / "weights.hdf5", "w") as h5:
        legacy_h5_format.save_weights_to_hdf5_group(h5, original_unet(size=32))
    result = invoke(["import-keras", tmp_path / "weights.hdf5", tmp_path / "models", "-a", "x"])
    assert_user_error(result, "weights.hdf5", "architecture.json does not exist", "--architecture")
    assert not (tmp_path / "models").exists()


def unknown_models():
    layers = keras.layers
    inputs = keras.Input((16, 16, 1))
    inline = layers.Conv2D(4, 3, padding="same", activation="relu", name="fused_conv")(inputs)
    flat = layers.Dense(2, name="head")(layers.Flatten(name="flatten_1")(inputs))
    lone = layers.Conv2D(3, 3, padding="same", name="some_conv")(inputs)
    return [
        (keras.Model(inputs, inline), "layer 'fused_conv' (Conv2D): activation 'relu' inside the conv"),
        (keras.Model(inputs, flat), "layer 'flatten_1' (Flatten): has no counterpart"),
        (keras.Model(inputs, layers.Activation("softmax")(lone)), "layer 'some_conv' (Conv2D): starts neither"),
    ]


def test_unrecognised_models_name_the_first_layer_that_cannot_be_mapped(tmp_path):
    for index, (model, message) in enumerate(unknown_models()):
        path = tmp_path / f"unknown{index}.h5"
        model.save(path)
        result = invoke(["import-keras", path, tmp_path / "models", "-a", f"u{index}"])
        assert_user_error(result, message)
        assert len((result.stderr or result.output).strip().splitlines()) == 1
    assert not (tmp_path / "models").exists()


def test_not_hdf5_is_refused(tmp_path):
    (tmp_path / "model.hdf5").write_text("not a model")
    assert_user_error(invoke(["import-keras", tmp_path / "model.hdf5", tmp_path / "m", "-a", "x"]), "not an HDF5 file")


UNET_OPTIONS = ["-C", "4", "8", "16", "-M", "8", "4", "--image-size", "32"]
FAST = ["-b", "4", "--workers", "0", "--steps-per-epoch", "1", "-g", "0", "--quiet"]


def test_train_seg_starts_from_an_imported_model_and_from_its_hdf5(tmp_path):
    data = make_seg_data(tmp_path / "data", n_train=4, n_val=2, size=32)
    _, path = saved_unet(tmp_path)
    assert invoke(["import-keras", path, tmp_path / "models", "-a", "imported"]).exit_code == 0
    imported = torch.load(tmp_path / "models" / "imported" / "checkpoint_best.pt", weights_only=False)["model"]

    from bodycomp_cli.core.runconfig import RunConfig
    from bodycomp_cli.tasks import task_from_config
    from bodycomp_cli.tasks.init_weights import warm_start

    config = json.loads((tmp_path / "models" / "imported" / "config.json").read_text())
    for source in (tmp_path / "models" / "imported", path):  # a run folder, or the Keras file itself
        state = warm_start(source).weights(task_from_config(RunConfig.from_dict(config)))
        assert all(torch.equal(state[k], imported[k]) for k in imported)
    result = invoke(
        ["train-seg", data, tmp_path / "models", "-a", "tuned", "-e", "1", *UNET_OPTIONS, *FAST, "-w", path]
    )
    assert result.exit_code == 0, (result.stderr or "") + result.output + repr(result.exception)
    tuned = json.loads((tmp_path / "models" / "tuned" / "config.json").read_text())
    assert tuned["init_weights"] == str(path) and tuned["arch_options"] == config["arch_options"]
    # Weights of another shape are refused before anything is written.
    result = invoke(
        ["train-seg", data, tmp_path / "models", "-a", "other", "-C", "4", "8", "-M", "4", *FAST, "-w", path]
    )
    assert_user_error(result, f"--init-weights {path}", "arch_options")
    assert not (tmp_path / "models" / "other").exists()


def test_train_select_initial_epoch_numbers_epochs_and_sets_the_schedule(tmp_path):
    data = make_select_data(tmp_path / "data", size=32)
    args = ["--nb_blocks", "1", "--nb_layers_per_block", "1", "--nb_initial_filters", "4", "--growth_rate", "4"]
    run = ["train-select", data, tmp_path / "m", "-a", "sel", "-e", "4", "-i", "2", "--schedule", "step", "-l", "0.01"]
    result = invoke([*run, *args, "--image-size", "32", *FAST])
    assert result.exit_code == 0, (result.stderr or "") + result.output + repr(result.exception)
    rows = pd.read_csv(tmp_path / "m" / "sel" / "history.csv")
    # Epochs 3 and 4 of 4 (0-based e = 2, 3): as the original's scheduler, x0.1 once e > 50 % (e = 3) and
    # x0.01 once e > 75 % (not reached in 4 epochs).
    assert rows["epoch"].tolist() == [3, 4]
    assert rows["lr"].tolist() == pytest.approx([0.01, 0.001])
    config = json.loads((tmp_path / "m" / "sel" / "config.json").read_text())
    assert config["initial_epoch"] == 2 and config["arch"] == "bridge-densenet"
    assert_user_error(invoke([*run[:-2], "-e", "2", "-i", "2", *args, *FAST]), "-i/--initial-epoch 2", "no epoch")


def phantom_slices(size: int = 64, count: int = 3) -> np.ndarray:
    """A few axial slices of a synthetic CT series around L3 (raw HU)."""
    from bodycomp_cli.phantoms import SeriesRenderer, series_params

    params = series_params(seed=3, index=0, size=size)
    renderer = SeriesRenderer(params)
    z_l3 = params.spine.z_of("L3")
    return np.stack([renderer.render(z_l3 + dz)[0] for dz in np.linspace(-20, 20, count)]).astype(np.float32)


def test_imported_models_predict_phantom_slices_as_the_keras_models(tmp_path):
    from bodycomp_cli.core.preprocess import window_hu

    hu = phantom_slices()
    unet = original_unet(size=64, compression=(4, 8, 16), decompression=(8, 4))
    densenet = original_densenet(size=64)
    for model, name in ((unet, "seg"), (densenet, "sel")):
        randomise_batch_norm(model)
        model.save(tmp_path / f"{name}.hdf5")
        assert invoke(["import-keras", tmp_path / f"{name}.hdf5", tmp_path / "models", "-a", name]).exit_code == 0

    # Segmentation: the original estimator windowed with its -p function, clip((HU + 160) * 256 / 400, 0, 255).
    original_input = np.clip((hu.astype(np.float64) + 160) * 256 / 400, 0, 255)[..., None]
    keras_labels = np.argmax(unet.predict(original_input, verbose=0), axis=-1)
    labels = load_predictor(tmp_path / "models" / "seg").segment(hu)
    assert (labels == keras_labels).mean() > 0.999
    for tissue in (1, 2, 3):
        keras_area = (keras_labels == tissue).sum()
        assert abs(int((labels == tissue).sum()) - int(keras_area)) <= max(1, 0.001 * keras_area)

    # Slice selection: 8-bit windowed slices (the PNGs it was trained on), at the model's input size.
    keras_outputs = densenet.predict(window_hu(hu).astype(np.float32)[..., None], verbose=0)
    outputs = load_predictor(tmp_path / "models" / "sel").outputs(hu)
    np.testing.assert_allclose(outputs, keras_outputs, atol=1e-4)


def test_estimate_with_imported_models_matches_the_keras_models(tmp_path):
    """The same chosen slice and areas within 0.1 % as the Keras models on the same phantom series."""
    from bodycomp_cli import __version__ as bodycomp_version
    from bodycomp_cli.core.preprocess import window_hu
    from bodycomp_cli.core.selection import select_level_slice
    from bodycomp_cli.phantoms import SeriesRenderer, series_params

    params = series_params(seed=5, index=1, size=64)
    renderer = SeriesRenderer(params)
    z_mm = params.spine.z_of("L3") + np.arange(-12, 12) * 5.0
    hu = np.stack([renderer.render(float(z))[0] for z in z_mm]).astype(np.int16)
    spacing = float(params.pixel_spacing_mm)
    np.savez(tmp_path / "phantom.npz", hu=hu, z_mm=z_mm, pixel_spacing=np.array([spacing, spacing]))

    unet = original_unet(size=64, compression=(4, 8, 16), decompression=(8, 4))
    densenet = original_densenet(size=64)
    for model, name in ((unet, "seg"), (densenet, "sel")):
        randomise_batch_norm(model, seed=4)
        model.save(tmp_path / f"{name}.hdf5")
        assert invoke(["import-keras", tmp_path / f"{name}.hdf5", tmp_path / "models", "-a", name]).exit_code == 0
    models = ["--select-model", tmp_path / "models" / "sel", "--seg-model", tmp_path / "models" / "seg"]
    # --no-amp: the import is compared exactly, whatever autocast a CPU with bf16 instructions would add
    models += ["--no-amp", "--min-slices", "5"]
    result = invoke(["estimate", tmp_path / "phantom.npz", *models, "-o", tmp_path / "out"])
    assert result.exit_code == 0, (result.stderr or "") + result.output + repr(result.exception)
    row = pd.read_csv(tmp_path / "out" / "results.csv").iloc[0]

    # The Keras side: the original's inputs, then the same slice rule and pixel counting.
    probabilities = densenet.predict(window_hu(hu).astype(np.float32)[..., None], verbose=0)[:, 0]
    index = select_level_slice(probabilities, z_mm, threshold_mm=10.0).index
    assert row["L3_slice_index"] == index
    original_input = np.clip((hu[index].astype(np.float64) + 160) * 256 / 400, 0, 255)[None, ..., None]
    labels = np.argmax(unet.predict(original_input, verbose=0)[0], axis=-1)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["versions"]["bodycomp"] == bodycomp_version
    assert np.unique(labels).size >= 3  # an untrained model, but the comparison covers several tissues
    for label, tissue in enumerate(("muscle", "subcutaneous_fat", "visceral_fat"), start=1):
        keras_area = (labels == label).sum() * spacing * spacing / 100.0
        assert row[f"L3_{tissue}_area_cm2"] == pytest.approx(keras_area, rel=1e-3, abs=1e-9)

    # evaluate on the imported segmentation run records the same versions as well.
    data = make_seg_data(tmp_path / "seg", n_train=1, n_val=2, size=64)
    result = invoke(["evaluate", tmp_path / "models" / "seg", data, "-o", tmp_path / "eval", "--split", "val"])
    assert result.exit_code == 0, (result.stderr or "") + result.output + repr(result.exception)
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["versions"]["bodycomp"] == bodycomp_version


@pytest.mark.parametrize(
    ("layer_name", "key", "value", "message"),
    [
        ("decompression_0_upsample", "interpolation", "bilinear", "interpolation bilinear; the original uses nearest"),
        ("compression_1_conv_0", "strides", [2, 2], "strides [2, 2]; the original uses (1, 1)"),
        ("compression_0_pool", "pool_size", [3, 3], "pool_size [3, 3]; the original uses (2, 2)"),
    ],
)
def test_a_layer_that_differs_from_the_original_is_named(tmp_path, layer_name, key, value, message):
    import h5py

    _, path = saved_unet(tmp_path)
    with h5py.File(path, "r+") as h5:  # change one setting in the saved config, as another network would have
        config = json.loads(h5.attrs["model_config"])
        layer = next(x for x in config["config"]["layers"] if x["config"]["name"] == layer_name)
        layer["config"][key] = value
        h5.attrs["model_config"] = json.dumps(config)
    result = invoke(["import-keras", path, tmp_path / "models", "-a", "x"])
    assert_user_error(result, f"layer {layer_name!r}", message)
    assert not (tmp_path / "models").exists()


def rewrite_as_keras2(path) -> None:
    """Give a Keras 3 HDF5 file the quirks of one saved by Keras 2 / tf.keras, as the original's were:
    weight names ending in ":0", class "Model", batch_input_shape, a list-valued BN axis, and no
    `interpolation` key on UpSampling2D (Keras before 2.2.3)."""
    import h5py

    with h5py.File(path, "r+") as h5:
        config = json.loads(h5.attrs["model_config"])
        config["class_name"] = "Model"
        for layer in config["config"]["layers"]:
            settings = layer["config"]
            if layer["class_name"] == "InputLayer":
                settings["batch_input_shape"] = settings.pop("batch_shape")
            if layer["class_name"] == "BatchNormalization":
                settings["axis"] = [3]
            settings.pop("interpolation", None)
        h5.attrs["model_config"] = json.dumps(config).encode()  # Keras 2 stored bytes
        h5.attrs["keras_version"] = b"2.3.1"
        weights = h5["model_weights"]
        for name in weights.attrs["layer_names"]:
            group = weights[name]
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            for weight in names:
                group.move(weight, f"{weight}:0")
            group.attrs["weight_names"] = [f"{n}:0".encode() for n in names]


def test_models_saved_by_keras2_import_too(tmp_path):
    keras_model, path = saved_unet(tmp_path)
    rewrite_as_keras2(path)
    result = invoke(["import-keras", path, tmp_path / "models", "-a", "k2"])
    assert result.exit_code == 0, (result.stderr or "") + result.output + repr(result.exception)
    config = json.loads((tmp_path / "models" / "k2" / "config.json").read_text())
    assert config["imported_from"]["keras_version"] == "2.3.1" and config["image_size"] == 32
    images = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    with torch.no_grad():
        logits = load_predictor(tmp_path / "models" / "k2").run.model(
            torch.from_numpy(images / 256).permute(0, 3, 1, 2)
        )
    ours = torch.softmax(logits, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, keras_model.predict(images, verbose=0), atol=1e-4)
