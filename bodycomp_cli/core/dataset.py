"""dataset.json: the description a prepared data folder carries (nnU-Net's dataset.json, for bodycomp).

prepare-slices and prepare-seg write it inside their output folder; training reads it (`resolve_window`), so
the HU window that shaped the pixels is typed once, at prepare time, and recorded in the run's config.json for
inference. A folder without one (the original toolkit's layout) is still read, at Window()'s L40/W400.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bodycomp_cli.core.runconfig import Window
from bodycomp_cli.errors import BodycompError, reason

DATASET_FILE = "dataset.json"
DATASET_SCHEMA_VERSION = 1
DATASET_KINDS = ("slice_selection", "segmentation")  # prepare-slices, prepare-seg


@dataclass(frozen=True)
class DatasetDescription:
    kind: str  # "slice_selection" (prepare-slices) or "segmentation" (prepare-seg)
    window: Window  # the HU window the PNGs were windowed with, or the raw-HU arrays are to be windowed with
    levels: list[str] | None  # prepare-slices: the levels of the meta CSVs, in order; prepare-seg: None
    counts: dict[str, dict[str, int]]  # per split: {"series": n, "slices": n} (prepare-seg: {"slices": n})
    source_manifest: str  # the manifest path as given
    bodycomp_version: str  # bodycomp_cli.__version__ of the prepare that wrote it
    thoracic: bool | None = None  # prepare-seg: -t (labels 0-2, no visceral fat); prepare-slices: None
    schema_version: int = DATASET_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """dataset.json's content, schema_version first; window as {level, width}."""
        described = {name: value for name, value in asdict(self).items() if name != "schema_version"}
        return {"schema_version": self.schema_version, **described}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = DATASET_FILE) -> DatasetDescription:
        """Check and type a dataset.json dict; refuses bad content, or a newer schema, naming source."""
        if not isinstance(data, dict):
            raise BodycompError(f"{source}: not a dataset description (a JSON object is expected)")
        _check_schema_version(data.get("schema_version"), source)
        if data.get("kind") not in DATASET_KINDS:
            raise BodycompError(
                f"{source}: unknown kind {data.get('kind')!r}; valid choices: {', '.join(DATASET_KINDS)}"
            )
        try:
            window = data["window"]
            if not isinstance(window, dict):
                raise TypeError("window is not an object {level, width}")
            window = Window(float(window["level"]), float(window["width"]))
            levels = data.get("levels")
            if levels is not None:
                if not isinstance(levels, list):
                    raise TypeError("levels is not a list")
                levels = [str(level) for level in levels]
            counts = {
                str(split): {str(name): _count(value) for name, value in numbers.items()}
                for split, numbers in data["counts"].items()
            }
            thoracic = data.get("thoracic")
            if thoracic is not None and not isinstance(thoracic, bool):
                raise TypeError(f"thoracic is {thoracic!r}, not true or false")
            description = cls(
                kind=data["kind"],
                window=window,
                levels=levels,
                counts=counts,
                source_manifest=str(data["source_manifest"]),
                bodycomp_version=str(data["bodycomp_version"]),
                thoracic=thoracic,
            )
        except KeyError as error:
            raise BodycompError(f"{source}: missing {error.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise BodycompError(f"{source}: a value has the wrong type ({reason(error)})") from None
        check_window(description.window, f"{source}: window")
        return description


def _check_schema_version(version: Any, source: str | Path) -> None:
    # Unlike config.json, dataset.json was versioned from its first release: no version 0 to read.
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BodycompError(f"{source}: schema_version {version!r} is not a positive integer")
    if version > DATASET_SCHEMA_VERSION:
        raise BodycompError(
            f"{source}: schema_version {version} is newer than this bodycomp reads ({DATASET_SCHEMA_VERSION}); "
            "upgrade bodycomp"
        )


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"count {value!r} is not a whole number >= 0")
    return value


def window_label(window: Window) -> str:
    """A window as messages show it: L50/W350."""
    return f"L{window.level:g}/W{window.width:g}"


def check_window(window: Window, what: str) -> None:
    """Refuse a window whose level is not finite or whose width is not a positive finite number."""
    if not math.isfinite(window.level):
        raise BodycompError(f"{what}: level {window.level:g} is not a finite number of HU")
    if not (math.isfinite(window.width) and window.width > 0):
        raise BodycompError(f"{what}: width {window.width:g} must be a positive finite number of HU")


def read_dataset_description(data_dir: Path) -> DatasetDescription | None:
    """A data folder's dataset.json, checked and typed; None when it has none (the original toolkit's layout)."""
    path = Path(data_dir) / DATASET_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BodycompError(f"{path}: not valid JSON ({reason(error)})") from None
    except OSError as error:
        raise BodycompError(f"{path}: cannot be read ({reason(error)})") from None
    return DatasetDescription.from_dict(data, path)


def resolve_window(
    data_dir: Path | None, level: float | None, width: float | None, *, images_windowed: bool
) -> tuple[Window, str]:
    """The window a training run records, and one line saying where it came from.

    level/width: --window-level/--window-width as given (None: not given). Without either, the window is
    dataset.json's, or Window() (L40/W400) for a folder without one. A given one fills the other from the same
    place. images_windowed: the images are PNGs windowed already, so a window other than dataset.json's is
    refused; otherwise (raw-HU arrays, windowed at train time) the given window overrides dataset.json's.
    """
    path = None if data_dir is None else Path(data_dir) / DATASET_FILE
    described = None if data_dir is None else read_dataset_description(Path(data_dir))
    base = described.window if described is not None else Window()
    if level is None and width is None:
        if described is not None:
            return base, f"window {window_label(base)} from {path}"
        if data_dir is None:
            return base, f"window {window_label(base)} (the default)"
        layout = "PNG layout" if images_windowed else "array layout"
        return (
            base,
            f"no {DATASET_FILE} in {data_dir}: assuming window {window_label(base)} (the original toolkit's {layout})",
        )
    given = Window(base.level if level is None else float(level), base.width if width is None else float(width))
    check_window(given, "--window-level/--window-width")
    if described is None:
        return given, f"window {window_label(given)} as given"
    if given == described.window:
        return given, f"window {window_label(given)} as given (the same as {path})"
    if images_windowed:
        raise BodycompError(
            f"{path}: the images were windowed at {window_label(described.window)}, but the options ask for "
            f"{window_label(given)}; drop --window-level/--window-width, or prepare the data again at that window"
        )
    return given, f"window {window_label(given)} as given, overriding {window_label(described.window)} from {path}"
