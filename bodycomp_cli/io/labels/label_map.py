"""--label-map: source label values or names -> bodycomp classes (0 background, 1 muscle, 2 subcutaneous fat,
3 visceral fat).

Written as "muscle=1,2 subcutaneous_fat=5 visceral_fat=7" (values or names, comma separated), or a preset name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bodycomp_cli.errors import BodycompError

CLASSES = {"background": 0, "muscle": 1, "subcutaneous_fat": 2, "visceral_fat": 3}
PRESETS = {
    # TotalSegmentator's tissue_types task: one file per tissue; torso_fat is fat inside the abdominal wall.
    "totalsegmentator": "muscle=skeletal_muscle subcutaneous_fat=subcutaneous_fat visceral_fat=torso_fat",
}


@dataclass(frozen=True)
class LabelMap:
    """Keys are label values (int) or names (str); None means identity (values are already bodycomp classes)."""

    mapping: dict[int | str, int] | None
    unmapped_background: bool = False

    def class_of(self, key: int | str, where: str) -> int:
        if self.mapping is None:
            if isinstance(key, int) and key in CLASSES.values():
                return key
        elif key in self.mapping:
            return self.mapping[key]
        if self.unmapped_background:
            return 0
        raise BodycompError(f"{where}: label {key!r} is present but not in --label-map (or use --unmapped background)")

    def apply(self, values: np.ndarray, where: str) -> np.ndarray:
        """Map an integer label array to uint8 classes; a present unmapped value is refused, naming it."""
        out = np.zeros(values.shape, dtype=np.uint8)
        for value in np.unique(values).tolist():
            if value == 0:
                continue
            out[values == value] = self.class_of(int(value), where)
        return out


def check_integer_labels(values: np.ndarray, what: str) -> None:
    """Refuse label arrays that are not whole numbers: fractional, NaN or inf floats, or non-numeric dtypes."""
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or not np.array_equal(values, np.rint(values)):
            raise BodycompError(f"{what} has fractional, NaN or inf values")
    elif values.dtype.kind not in "iub":
        raise BodycompError(f"{what} dtype {values.dtype} is not integer labels")


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
    for part in text.split():
        name, sep, keys = part.partition("=")
        if not sep or name not in CLASSES or not keys:
            raise BodycompError(
                f"--label-map: {part!r} is not CLASS=LABEL[,LABEL] with CLASS one of {', '.join(CLASSES)}"
                f" (or a preset: {', '.join(PRESETS)})"
            )
        for key in keys.split(","):
            key = key.strip()
            label: int | str = int(key) if key.lstrip("-").isdigit() else key
            if label in mapping and mapping[label] != CLASSES[name]:
                raise BodycompError(f"--label-map: label {key!r} is mapped to two classes")
            mapping[label] = CLASSES[name]
    return LabelMap(mapping, background)
