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

from bodycomp_cli.engine.inference import load_run  # noqa: E402

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
    assert config["input_scale"] == "original" and config["window"] == {"level": 40.0, "width": 400.0}
    assert config["imported_from"]["path"] == str(path.resolve()) and config["versions"]["bodycomp"]
    run = load_run(run_dir)
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    with torch.no_grad():
        ours = torch.softmax(run.model(torch.from_numpy(images).permute(0, 3, 1, 2)), 1).permute(0, 2, 3, 1)
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
    run = load_run(tmp_path / "models" / "sel")
    images = np.random.default_rng(2).uniform(0, 1, (3, 64, 64, 1)).astype(np.float32)
    with torch.no_grad():
        ours = torch.sigmoid(run.model(torch.from_numpy(images).permute(0, 3, 1, 2))).numpy()
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

    from bodycomp_cli.tasks import task_from_config
    from bodycomp_cli.tasks.init_weights import warm_start

    config = json.loads((tmp_path / "models" / "imported" / "config.json").read_text())
    for source in (tmp_path / "models" / "imported", path):  # a run folder, or the Keras file itself
        state = warm_start(source).weights(task_from_config(config))
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
    # Epochs 3 and 4 of 4 (0-based e = 2, 3): the step schedule gives x0.1 from e >= 50% and x0.01 from e >= 75%.
    assert rows["epoch"].tolist() == [3, 4]
    assert rows["lr"].tolist() == pytest.approx([0.001, 0.0001])
    config = json.loads((tmp_path / "m" / "sel" / "config.json").read_text())
    assert config["initial_epoch"] == 2 and config["arch"] == "bridge-densenet"
    assert_user_error(invoke([*run[:-2], "-e", "2", "-i", "2", *args, *FAST]), "-i/--initial-epoch 2", "no epoch")
