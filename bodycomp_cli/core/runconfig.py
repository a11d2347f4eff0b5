"""The run configuration: written once by the trainer (config.json), read by resume, `evaluate` and `estimate`.

Every default lives here. A config.json from before versioning (no schema_version, the same keys) loads as
version 0; one from a newer bodycomp is refused with a line that says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bodycomp_cli.errors import BodycompError, reason

SCHEMA_VERSION = 1
TASKS = ("segmentation", "slice_selection")
CONFIG_FILE = "config.json"
# Settings that decide the model's tensors: --init-weights needs the same in its source (tasks/init_weights.py).
WEIGHT_FIELDS = ("task", "arch", "encoder", "arch_options", "classes", "levels", "context_mm", "series_head")
# Settings that define the model: a resumed run must keep them, inference rebuilds the model from them.
MODEL_FIELDS = (*WEIGHT_FIELDS, "threshold", "image_size", "window")


@dataclass(frozen=True)
class Window:
    level: float = 40.0  # HU at the middle of the window
    width: float = 400.0  # HU from the window's black to its white


@dataclass(frozen=True)
class RunConfig:
    # ----- the model (MODEL_FIELDS), set by the task
    task: str  # "segmentation" or "slice_selection"
    arch: str  # smp architecture (segmentation) or timm model (slice selection), or a bodycomp one
    image_size: int  # model input: slices resized to image_size x image_size
    window: Window = field(default_factory=Window)  # HU window of the model input
    encoder: str | None = None  # segmentation: smp encoder (None for a bodycomp_cli.nets architecture)
    arch_options: dict[str, Any] | None = None  # a bodycomp_cli.nets architecture's options (None: smp/timm)
    classes: list[str] | None = None  # segmentation: names in label order, background first
    thoracic: bool | None = None  # segmentation: labels 0-2, no visceral fat
    input_windowed: bool | None = None  # segmentation: trained on arrays already windowed to 0-255 (window 128/256)
    levels: list[str] | None = None  # slice selection: the model's outputs, in order
    threshold: float | None = None  # slice selection: target = sigmoid(offset_mm / threshold), in mm
    context_mm: float = 0.0  # slice selection: > 0 feeds the slices nearest z -+ context_mm as channels
    # slice selection: the series-level head's settings (engine/series_head.py), its `feature_levels` the CNN's
    # outputs; None: the per-slice model alone (the original's mode)
    series_head: dict[str, Any] | None = None
    augmentation: dict[str, float] | None = None  # training augmentation half-ranges, for the record
    # ----- how it was trained, set by the engine (None until then)
    name: str | None = None
    data_dir: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    schedule: str | None = None
    seed: int | None = None
    deterministic: bool | None = None
    workers: int | None = None
    steps_per_epoch: int | None = None
    low_memory: bool | None = None
    amp: bool | None = None
    devices: str | None = None
    world_size: int | None = None
    best_metric: str | None = None
    versions: dict[str, str | None] | None = None
    init_weights: str | None = None  # --init-weights: the run folder or Keras model the weights started from
    initial_epoch: int | None = None  # -i: epochs counted as done before this run's first
    imported_from: dict[str, Any] | None = None  # import-keras: the Keras file and version
    schema_version: int = SCHEMA_VERSION

    def model_settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in MODEL_FIELDS}

    def with_training(self, **values: Any) -> RunConfig:
        """This config with the engine's fields filled in (names as in the dataclass)."""
        return replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        """config.json's content: the schema version, then every field (window as {level, width})."""
        values = asdict(self)
        return {"schema_version": values.pop("schema_version"), **values}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = CONFIG_FILE) -> RunConfig:
        """Check and type a config dict (config.json, or a checkpoint's copy); refuses bad content naming source."""
        if not isinstance(data, dict):
            raise BodycompError(f"{source}: not a run config (a JSON object is expected)")
        version = data.get("schema_version", 0)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise BodycompError(
                f"{source}: schema_version {version!r} is newer than this bodycomp reads ({SCHEMA_VERSION}); "
                "upgrade bodycomp"
            )
        if data.get("task") not in TASKS:
            raise BodycompError(f"{source}: unknown task {data.get('task')!r}; valid choices: {', '.join(TASKS)}")
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known and value is not None}
        try:
            values["window"] = Window(**{k: float(v) for k, v in (data.get("window") or {}).items()})
            values["image_size"] = int(data["image_size"])
            values["arch"] = str(data["arch"])
            for key, kind in (("threshold", float), ("context_mm", float)):
                if key in values:
                    values[key] = kind(values[key])
            for key in ("classes", "levels"):
                if key in values:
                    values[key] = [str(item) for item in values[key]]
        except KeyError as error:
            raise BodycompError(f"{source}: missing {error.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise BodycompError(f"{source}: a value has the wrong type ({reason(error)})") from None
        values["schema_version"] = SCHEMA_VERSION  # upgraded on reading: version 0 holds the same keys
        return cls(**values)


def read_run_config(path: Path) -> RunConfig:
    """Read a run's config.json (path: the file or its run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.is_file():
        raise BodycompError(f"{path.parent}: not a trained run (no {CONFIG_FILE})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BodycompError(f"{path}: not valid JSON ({error})") from None
    return RunConfig.from_dict(data, path)
