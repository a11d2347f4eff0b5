"""Every option of the original train_segmentation.py / train_slice_selection.py, in both spellings.

The wiring tests capture what the command hands to the typed training function, without training.
"""

from __future__ import annotations

import pytest
from conftest import assert_user_error, invoke

import bodycomp_cli.tasks.segmentation as segmentation
import bodycomp_cli.tasks.slice_selection as slice_selection


@pytest.fixture
def captured(monkeypatch):
    calls = {}

    def capture(data_dir, models_dir, settings, engine, name, start):
        calls.update(data_dir=data_dir, settings=settings, engine=engine, name=name, start=start)

    monkeypatch.setattr(segmentation, "train_segmentation", capture)
    monkeypatch.setattr(slice_selection, "train_slice_selection", capture)
    return calls


def run_ok(args):
    result = invoke(args)
    assert result.exit_code == 0, (result.stderr or "") + result.output + repr(result.exception)
    return result


SEG_UNDERSCORE = [
    "--epochs", "7", "--batch_size", "4", "--learning_rate", "0.01", "--name", "orig", "--gpus", "0",
    "--thoracic_model", "--apply_window_function", "--compression_channels", "8", "16", "32",
    "--decompression_channels", "16", "8", "--activation", "elu", "--num_convs", "2", "--load_weights",
]  # fmt: skip
SEG_DASH = [
    "-e", "7", "-b", "4", "-l", "0.01", "-a", "orig", "-g", "0", "-t", "-p", "-C", "8", "16", "32",
    "-M", "16", "8", "-A", "elu", "-N", "2", "-w",
]  # fmt: skip


@pytest.mark.parametrize("spelling", [SEG_UNDERSCORE, SEG_DASH], ids=["underscore", "short"])
def test_train_seg_takes_every_original_option(tmp_path, captured, spelling):
    weights = tmp_path / "previous_run"
    weights.mkdir()
    run_ok(["train-seg", tmp_path / "data", tmp_path / "models", *spelling, weights])
    settings, engine, start = captured["settings"], captured["engine"], captured["start"]
    assert (engine.epochs, engine.batch_size, engine.learning_rate, engine.gpus) == (7, 4, 0.01, 0)
    assert captured["name"] == "orig" and settings.thoracic
    assert settings.arch == "bridge-unet"  # -C/-M/-N/-A pick the original U-Net
    assert settings.arch_options == {
        "compression_channels": [8, 16, 32],
        "decompression_channels": [16, 8],
        "num_convs": 2,
        "activation_name": "elu",
        "input_gain": 256.0,
        "input_max": 255.0,
    }
    assert start.source == str(weights) and start.initial_epoch == 0


def test_train_seg_dash_spellings_of_the_underscore_options(tmp_path, captured):
    args = ["--learning-rate", "0.5", "--batch-size", "3", "--thoracic-model", "--compression-channels", "4", "8"]
    run_ok(["train-seg", tmp_path / "d", tmp_path / "m", *args, "--decompression-channels", "4", "--num-convs", "1"])
    assert captured["engine"].learning_rate == 0.5 and captured["engine"].batch_size == 3
    assert captured["settings"].arch_options["compression_channels"] == [4, 8]


def test_train_seg_bridge_unet_defaults_are_the_originals(tmp_path, captured):
    run_ok(["train-seg", tmp_path / "d", tmp_path / "m", "--arch", "bridge-unet"])
    assert captured["settings"].arch_options == {
        "compression_channels": [16, 32, 64, 128, 256, 512],
        "decompression_channels": [256, 128, 64, 32, 16],
        "num_convs": 1,
        "activation_name": "relu",
        "input_gain": 256.0,
        "input_max": 255.0,
    }
    run_ok(["train-seg", tmp_path / "d", tmp_path / "m"])  # no original option: our default arch
    assert captured["settings"].arch == "unet" and captured["settings"].arch_options == {}


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["-d", "20"], ["-d/--decay_half_time", "ignored", "--schedule step"]),
        (["--decay_half_time", "20"], ["-d/--decay_half_time"]),
        (["--arch", "fpn", "-C", "8", "16"], ["-C", "--arch bridge-unet"]),
        (["-C", "8", "16", "-M", "8", "4"], ["-M has 2 values and -C 2"]),
        (["-A", "crelu"], ["-A/--activation 'crelu'", "valid choices"]),
    ],
)
def test_train_seg_refuses_options_with_no_meaning_here(tmp_path, captured, args, fragments):
    assert_user_error(invoke(["train-seg", tmp_path / "d", tmp_path / "m", *args]), *fragments)
    assert not (tmp_path / "m").exists()


SELECT_UNDERSCORE = [
    "--epochs", "9", "--name", "sel", "--gpus", "0", "--batch_size", "8", "--learning_rate", "0.001",
    "--threshold", "5", "--initial_epoch", "3", "--nb_layers_per_block", "3", "--nb_blocks", "2",
    "--levels", "T5", "L3", "--nb_initial_filters", "8", "--growth_rate", "4", "--compression_rate", "0.25",
    "--initializer", "he_normal", "--activation", "elu", "--omit_batch_norm", "--load_weights",
]  # fmt: skip
SELECT_DASH = [
    "-e", "9", "-a", "sel", "-g", "0", "-b", "8", "-l", "0.001", "-t", "5", "-i", "3", "--nb-layers-per-block", "3",
    "--nb-blocks", "2", "-L", "T5", "L3", "--nb-initial-filters", "8", "--growth-rate", "4",
    "--compression-rate", "0.25", "-I", "he_normal", "-A", "elu", "-B", "-w",
]  # fmt: skip


@pytest.mark.parametrize("spelling", [SELECT_UNDERSCORE, SELECT_DASH], ids=["underscore", "short"])
def test_train_select_takes_every_original_option(tmp_path, captured, spelling):
    weights = tmp_path / "weights-05-0.1234.hdf5"
    weights.write_bytes(b"")
    run_ok(["train-select", tmp_path / "data", tmp_path / "models", *spelling, weights])
    settings, engine, start = captured["settings"], captured["engine"], captured["start"]
    assert (engine.epochs, engine.batch_size, engine.learning_rate, engine.gpus) == (9, 8, 0.001, 0)
    assert captured["name"] == "sel" and settings.levels == ["T5", "L3"] and settings.threshold_mm == 5
    assert settings.arch == "bridge-densenet"
    assert settings.arch_options == {
        "layers_per_block": 3,
        "blocks": 2,
        "initial_filters": 8,
        "growth_rate": 4,
        "compression_rate": 0.25,
        "activation_name": "elu",
        "initializer": "he_normal",
        "use_batch_norm": False,
        "input_gain": 255.0,
        "input_max": 255.0,
    }
    assert start.source == str(weights) and start.initial_epoch == 3


def test_train_select_bridge_densenet_defaults_are_the_originals(tmp_path, captured):
    run_ok(["train-select", tmp_path / "d", tmp_path / "m", "--arch", "bridge-densenet"])
    assert captured["settings"].arch_options == {
        "layers_per_block": 12,
        "blocks": 4,
        "initial_filters": 16,
        "growth_rate": 12,
        "compression_rate": 0.5,
        "activation_name": "relu",
        "initializer": "glorot_uniform",
        "use_batch_norm": True,
        "input_gain": 255.0,
        "input_max": 255.0,
    }


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--arch", "resnet18", "-B"], ["-B", "--arch bridge-densenet"]),
        (["-I", "orthogonal"], ["-I/--initializer 'orthogonal'", "valid choices"]),
        (["-w", "nowhere.txt"], ["--init-weights nowhere.txt", "run folder or a Keras"]),
    ],
)
def test_train_select_refusals(tmp_path, captured, args, fragments):
    assert_user_error(invoke(["train-select", tmp_path / "d", tmp_path / "m", *args]), *fragments)


def test_init_weights_and_initial_epoch_are_not_resume(tmp_path):
    result = invoke(["train-select", tmp_path / "d", tmp_path / "m", "--resume", "-i", "2", "-g", "0"])
    assert_user_error(result, "--init-weights and -i start a new run", "--resume continues")
    result = invoke(["train-seg", tmp_path / "d", tmp_path / "m", "--resume", "-w", tmp_path, "-g", "0"])
    assert_user_error(result, "--init-weights and -i start a new run")


def test_bridge_archs_train_and_load_with_low_memory(tmp_path):
    """Both original networks train (activation recomputation on) and load back for inference."""
    import json

    import torch
    from helpers_train import make_seg_data, make_select_data

    from bodycomp_cli.inference.run import load_run
    from bodycomp_cli.nets import BridgeDenseNet, BridgeUNet
    from bodycomp_cli.tasks.segmentation import build_segmentation_model
    from bodycomp_cli.tasks.slice_selection import build_selection_model

    torch.set_num_threads(1)
    fast = ["-e", "1", "-b", "2", "--workers", "0", "--steps-per-epoch", "1", "-g", "0", "--quiet", "--low-memory"]
    seg = make_seg_data(tmp_path / "seg", n_train=2, n_val=1, size=32)
    run_ok(["train-seg", seg, tmp_path / "m", "-a", "u", "-C", "4", "8", "-M", "4", "--image-size", "32", *fast])
    sel = make_select_data(tmp_path / "sel", n_series=(1, 1), slices=4, size=32)
    args = ["--nb_blocks", "2", "--nb_layers_per_block", "1", "--growth_rate", "4", "--nb_initial_filters", "4"]
    run_ok(["train-select", sel, tmp_path / "m", "-a", "d", "-B", *args, "--image-size", "32", *fast])
    assert isinstance(load_run(tmp_path / "m" / "u", build_segmentation_model).model, BridgeUNet)
    densenet = load_run(tmp_path / "m" / "d", build_selection_model).model
    assert isinstance(densenet, BridgeDenseNet)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in densenet.modules())  # -B
    assert json.loads((tmp_path / "m" / "d" / "config.json").read_text())["arch_options"]["use_batch_norm"] is False


def test_resume_with_other_architecture_options_is_refused(tmp_path):
    from helpers_train import make_seg_data

    seg = make_seg_data(tmp_path / "seg", n_train=2, n_val=1, size=32)
    fast = ["-b", "2", "--workers", "0", "--steps-per-epoch", "1", "-g", "0", "--quiet", "--image-size", "32"]
    run_ok(["train-seg", seg, tmp_path / "m", "-a", "u", "-e", "1", "-C", "4", "8", "-M", "4", *fast])
    result = invoke(
        ["train-seg", seg, tmp_path / "m", "-a", "u", "-e", "2", "-C", "4", "16", "-M", "4", *fast, "--resume"]
    )
    assert_user_error(result, "checkpoint_last.pt", "arch_options", "resume with the run's original settings")


def test_help_shows_the_libraries_defaults():
    """The defaults the help names are the ones UNetOptions and DenseNetOptions hold (the commands cannot import
    the nets, which need torch, to word their help)."""
    from typing import get_type_hints

    from bodycomp_cli.commands.original_options import DenseNetFlags, UNetFlags
    from bodycomp_cli.nets.bridge_densenet import DenseNetOptions
    from bodycomp_cli.nets.bridge_unet import UNetOptions

    for flags, defaults in [(UNetFlags, UNetOptions()), (DenseNetFlags, DenseNetOptions())]:
        for name, option in get_type_hints(flags, include_extras=True).items():
            if name == "omit_batch_norm":  # a switch: its default is use_batch_norm=True
                continue
            value = getattr(defaults, name)
            shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
            assert f"\\[default: {shown}]" in option.__metadata__[0].help, name
