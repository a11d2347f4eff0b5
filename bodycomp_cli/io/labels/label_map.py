"""--label-map: source label values or names -> bodycomp classes (0 background, 1 muscle, 2 subcutaneous fat,
3 visceral fat).

Written as "muscle=1,2 subcutaneous_fat=5 visceral_fat=7" (values or names, comma separated), or a preset name.
Names (file names, SEG segment labels, RTSTRUCT ROI names) match whatever their case, with spaces, hyphens and
underscores alike, so "muscle=Skeletal_muscle" maps the segment "Skeletal muscle"; a part runs from its CLASS= to
the next, so names may keep their spaces ("muscle=Skeletal muscle visceral_fat=VAT"; ";" between parts is allowed
too). Without --label-map, names that
are bodycomp's own class names ("muscle", "subcutaneous fat", "visceral fat", as estimate --dicom-seg writes its
segments) map to those classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from bodycomp_cli.errors import BodycompError

CLASSES = {"background": 0, "muscle": 1, "subcutaneous_fat": 2, "visceral_fat": 3}
PRESETS = {
    # TotalSegmentator's tissue_types task: one file per tissue; torso_fat is fat inside the abdominal wall.
    "totalsegmentator": "muscle=skeletal_muscle subcutaneous_fat=subcutaneous_fat visceral_fat=torso_fat",
    # SliceOmatic's Alberta protocol tags (TomoVision's Alberta Protocol help): 1 skeletal muscle, 2 IMAT
    # (intermuscular fat), 5 visceral fat, 7 subcutaneous fat. bodycomp's muscle class is the muscle compartment:
    # estimate finds IMAT inside it by HU, and --hu-ranges alberta gives the protocol's TAG-1 muscle area. So IMAT
    # joins muscle here; "muscle=1 background=2 visceral_fat=5 subcutaneous_fat=7" leaves it out instead.
    "sliceomatic-alberta": "muscle=1,2 visceral_fat=5 subcutaneous_fat=7",
}


def name_key(name: str) -> str:
    """A label name as matched: lower case, runs of spaces, hyphens and underscores as one underscore."""
    return "_".join(name.lower().replace("-", " ").replace("_", " ").split())


@dataclass(frozen=True)
class LabelMap:
    """Keys are label values (int) or names (str); None means identity (values are already bodycomp classes)."""

    mapping: dict[int | str, int] | None
    unmapped_background: bool = False

    def class_of(self, label: int | str, where: str) -> int:
        key = name_key(label) if isinstance(label, str) else label
        if self.mapping is None:
            if isinstance(key, int) and key in CLASSES.values():
                return key
            if isinstance(key, str) and key in CLASSES and key != "background":
                return CLASSES[key]
        elif key in self.mapping:
            return self.mapping[key]
        if self.unmapped_background:
            return 0
        raise BodycompError(
            f"{where}: label {label!r} is present but not in --label-map (or use --unmapped background)"
        )

    def class_of_named(self, name: str, number: int, where: str) -> int:
        """A named label that also has a number (a SEG segment): by its name, or by its number when only that is
        in --label-map."""
        if self.mapping is not None and name_key(name) not in self.mapping and number in self.mapping:
            return self.mapping[number]
        return self.class_of(name, where)

    def apply(self, values: np.ndarray, where: str) -> np.ndarray:
        """Map an integer label array to uint8 classes; a present unmapped value is refused, naming it."""
        out = np.zeros(values.shape, dtype=np.uint8)
        for value in np.unique(values).tolist():
            if value == 0:
                continue
            out[values == value] = self.class_of(int(value), where)
        return out


def paint_class(classes: np.ndarray, pixels: np.ndarray, label: int, what: str) -> None:
    """Give `pixels` (bool, the shape of classes) the class `label`, refusing any a different class already holds:
    every source's masks must agree, never be layered silently."""
    claimed = pixels & (classes != 0) & (classes != label)
    if claimed.any():
        raise BodycompError(f"{what} overlaps another class on {int(claimed.sum())} pixels")
    classes[pixels] = label


def check_integer_labels(values: np.ndarray, what: str) -> None:
    """Refuse label arrays that are not whole numbers: fractional, NaN or inf floats, or non-numeric dtypes."""
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or not np.array_equal(values, np.rint(values)):
            raise BodycompError(f"{what} has fractional, NaN or inf values")
    elif values.dtype.kind not in "iub":
        raise BodycompError(f"{what} dtype {values.dtype} is not integer labels")


# A part starts at a class name and '='; names may hold spaces ("muscle=Skeletal muscle visceral_fat=VAT").
PART_START = re.compile(r"(?:^|[\s;])(" + "|".join(CLASSES) + r")=")


def _parts(text: str) -> list[tuple[str, str]]:
    """(class name, its comma-separated labels) for each CLASS=LABEL[,LABEL] part of --label-map."""
    starts = list(PART_START.finditer(text))
    ends = [match.start() for match in starts[1:]] + [len(text)] if starts else []
    parts = [(match.group(1), text[match.end() : end].strip(" \t;")) for match, end in zip(starts, ends, strict=True)]
    leading = (text[: starts[0].start()] if starts else text).strip(" \t;")
    bad = [leading] if leading or not starts else [f"{name}={keys}" for name, keys in parts if not keys or "=" in keys]
    if bad:
        raise BodycompError(
            f"--label-map: {bad[0]!r} is not CLASS=LABEL[,LABEL] with CLASS one of {', '.join(CLASSES)}"
            f" (or a preset: {', '.join(PRESETS)})"
        )
    return parts


def parse_label_map(text: str | None, unmapped: str = "refuse") -> LabelMap:
    """Parse --label-map (None: identity) and --unmapped (refuse | background).

    Example: `parse_label_map("muscle=1,2 visceral_fat=7").mapping  # {1: 1, 2: 1, 7: 3}`
    """
    if unmapped not in ("refuse", "background"):
        raise BodycompError(f"--unmapped must be refuse or background, got {unmapped!r}")
    background = unmapped == "background"
    if text is None or not text.strip():
        return LabelMap(None, background)
    text = PRESETS.get(text.strip().lower(), text)
    mapping: dict[int | str, int] = {}
    for name, keys in _parts(text):
        for key in keys.split(","):
            key = key.strip()
            label: int | str = int(key) if key.lstrip("-").isdigit() else name_key(key)
            if label in mapping and mapping[label] != CLASSES[name]:
                raise BodycompError(f"--label-map: label {key!r} is mapped to two classes")
            mapping[label] = CLASSES[name]
    return LabelMap(mapping, background)
