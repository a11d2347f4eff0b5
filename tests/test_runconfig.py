"""The typed, versioned run config: one writer (the trainer), one reader; old config.json files still load."""

from __future__ import annotations

import json

import pytest
import torch

from bodycomp_cli.core.runconfig import SCHEMA_VERSION, RunConfig, Window, read_run_config
from bodycomp_cli.engine.checkpoint import save_checkpoint
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.tasks import load_predictor
from bodycomp_cli.tasks.segmentation import SegmentationPredictor, build_segmentation_model
from bodycomp_cli.tasks.slice_selection.outputs import input_channels

# A segmentation config.json as bodycomp wrote it before the schema version (keys, order and nulls as then).
OLD_SEGMENTATION = {
    "task": "segmentation", "window": {"level": 40.0, "width": 400.0}, "image_size": 32, "arch": "unet",
    "encoder": "resnet18", "classes": ["background", "muscle", "subcutaneous_fat", "visceral_fat"],
    "thoracic": False, "levels": None, "threshold": None, "context_mm": None,
    "augmentation": {"rotation_deg": 5.0, "shift": 0.05, "scale": 0.05, "intensity": 0.03},
    "name": "seg", "data_dir": "data", "epochs": 2, "batch_size": 4, "learning_rate": 0.001, "schedule": "cosine",
    "seed": 0, "deterministic": False, "workers": 0, "steps_per_epoch": 2, "low_memory": False, "amp": False,
    "devices": "the CPU", "world_size": 1, "best_metric": "val_dice_mean", "versions": {"torch": "2.5.1"},
}  # fmt: skip
OLD_SELECTION = {
    **OLD_SEGMENTATION, "task": "slice_selection", "arch": "resnet10t", "encoder": None, "classes": None,
    "thoracic": None, "levels": ["T5", "L3"], "threshold": 10.0, "context_mm": 0.0, "best_metric": "val_error_mm",
}  # fmt: skip


def test_a_version_less_config_loads_with_its_values_and_defaults(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OLD_SEGMENTATION))
    config = read_run_config(tmp_path)
    assert config.schema_version == SCHEMA_VERSION
    assert (config.task, config.arch, config.encoder, config.image_size) == ("segmentation", "unet", "resnet18", 32)
    assert config.window == Window(40.0, 400.0) and config.classes == OLD_SEGMENTATION["classes"]
    assert config.context_mm == 0.0 and config.threshold is None and input_channels(config) == 1
    selection = RunConfig.from_dict(OLD_SELECTION)
    assert selection.levels == ["T5", "L3"] and selection.threshold == 10.0 and input_channels(selection) == 1
    assert input_channels(RunConfig.from_dict({**OLD_SELECTION, "context_mm": 5})) == 3


def test_written_config_keeps_the_old_keys_and_round_trips():
    config = RunConfig.from_dict(OLD_SELECTION)
    written = json.loads(config.to_json())
    assert list(written)[0] == "schema_version" and written["schema_version"] == SCHEMA_VERSION
    assert set(OLD_SELECTION) <= set(written)
    assert {key: written[key] for key in OLD_SELECTION} == OLD_SELECTION
    assert RunConfig.from_dict(written) == config


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({**OLD_SEGMENTATION, "schema_version": SCHEMA_VERSION + 1}, "newer than this bodycomp reads"),
        ({**OLD_SEGMENTATION, "task": "detection"}, "unknown task 'detection'"),
        ({key: v for key, v in OLD_SEGMENTATION.items() if key != "image_size"}, "missing 'image_size'"),
        ({**OLD_SEGMENTATION, "image_size": "big"}, "wrong type"),
        ({**OLD_SEGMENTATION, "window": [40, 400]}, "wrong type"),
        ([1, 2], "a JSON object is expected"),
    ],
)
def test_bad_configs_are_refused_naming_the_file(tmp_path, content, fragment):
    (tmp_path / "config.json").write_text(json.dumps(content))
    with pytest.raises(BodycompError, match=fragment) as error:
        read_run_config(tmp_path / "config.json")
    assert "config.json" in str(error.value)


def test_an_old_run_folder_loads_and_predicts(tmp_path):
    config = RunConfig.from_dict(OLD_SEGMENTATION)
    torch.manual_seed(0)
    model = build_segmentation_model(config)
    save_checkpoint(tmp_path / "checkpoint_best.pt", {"model": model.state_dict(), "config": OLD_SEGMENTATION})
    (tmp_path / "config.json").write_text(json.dumps(OLD_SEGMENTATION))
    predictor = load_predictor(tmp_path)
    assert predictor.run.config == config and isinstance(predictor, SegmentationPredictor)
    labels = predictor.segment(torch.zeros(2, 48, 48).numpy())
    assert labels.shape == (2, 48, 48) and int(labels.max()) <= 3
