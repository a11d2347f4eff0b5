"""The slice-selection layout (images/<split>/NNNNNN.png, meta/<split>.csv): validation and dataset."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from bodycomp_cli.core.metacsv import SliceMeta, read_meta_csv
from bodycomp_cli.core.preprocess import context_rows, selection_input
from bodycomp_cli.core.vertebrae import phase_targets, vertebral_coordinate
from bodycomp_cli.data.augment import AffineRanges, augment_image
from bodycomp_cli.errors import BodycompError, BodycompWarning
from bodycomp_cli.io.arrays import read_png

SPLITS = ("train", "val")


@dataclass(frozen=True)
class SliceSplit:
    image_dir: Path
    meta: SliceMeta  # the split's meta CSV: offsets per level, and series / z_mm when present

    @property
    def count(self) -> int:
        return self.meta.count


GRAY16_MODES = ("I;16", "I;16B", "I;16L", "I")  # how Pillow opens 16-bit grayscale PNGs


def png_name(index: int) -> str:
    """The PNG of CSV row INDEX, as the original named them: six digits at least, seven past 999,999."""
    return f"{index:06d}.png"


def _check_pngs(image_dir: Path, count: int, csv_path: Path) -> None:
    if not image_dir.is_dir():
        raise BodycompError(f"{image_dir}: image folder not found")
    names = {p.name for p in image_dir.iterdir() if p.suffix.lower() == ".png"}
    expected = [png_name(i) for i in range(count)]
    missing = next((name for name in expected if name not in names), None)
    if missing is not None:
        stray = min(names - set(expected), default=None, key=lambda name: (len(name), name))
        found = f", found {stray}" if stray else ""
        raise BodycompError(
            f"{image_dir}: {len(names)} PNG images, but {csv_path} has {count} rows and {missing} is missing{found} "
            f"(PNG ids run {png_name(0)}..{png_name(count - 1)}, one per row)"
        )
    if len(names) > count:  # the original read only the rows' images too
        warnings.warn(
            f"{image_dir}: {len(names) - count} PNG images beyond {csv_path}'s {count} rows are not used",
            BodycompWarning,
            stacklevel=2,
        )
    for name in expected:
        _check_png(image_dir / name)


def _check_png(path: Path) -> None:
    try:
        with Image.open(path) as image:
            mode = image.mode
            image.verify()  # reads every chunk and checks its CRC, so truncated files fail here
    except Exception as error:  # PIL raises many types for corrupt files
        raise BodycompError(f"{path}: not a readable PNG ({error})") from None
    if mode in GRAY16_MODES:  # 16-bit grayscale is fine as long as it holds 8-bit values, as the original saw
        read_gray8_png(path)
    elif mode != "L":
        raise BodycompError(f"{path}: image mode {mode}; 8-bit grayscale (mode L) is expected")


def validate_slice_data(data_dir: Path, levels: list[str]) -> dict[str, SliceSplit]:
    """Check both splits (PNG ids, counts, 8-bit grayscale, offset columns) and read their meta CSVs."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BodycompError(f"{data_dir}: data folder not found")
    splits = {}
    for split in SPLITS:
        meta = read_meta_csv(data_dir / "meta" / f"{split}.csv", levels)
        if meta.count == 0:
            raise BodycompError(f"{meta.path}: has no rows")
        _check_pngs(data_dir / "images" / split, meta.count, meta.path)
        splits[split] = SliceSplit(data_dir / "images" / split, meta)
    return splits


def split_context_rows(meta: SliceMeta, context_mm: float) -> np.ndarray:
    """context_rows of a split, whose meta CSV must then say which series and z each slice has."""
    for column in ("series", "z_mm"):
        if column not in meta.frame.columns:
            raise BodycompError(f"{meta.path}: --context-mm needs a {column} column (prepare-slices writes it)")
    return context_rows(meta.series, meta.z_mm, context_mm)


def read_gray_png(path: Path) -> np.ndarray:
    return read_png(path, verify=False)[0]  # validate_slice_data verified every file up front


def read_gray8_png(path: Path) -> np.ndarray:
    """A grayscale PNG as uint8; a 16-bit one is accepted when every value is 0-255."""
    pixels = read_gray_png(path)
    if pixels.ndim != 2:
        raise BodycompError(f"{path}: expected a grayscale PNG, got shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        high = int(pixels.max())
        if pixels.dtype.kind not in "ui" or int(pixels.min()) < 0 or high > 255:
            raise BodycompError(f"{path}: 16-bit PNG with value {high}; slices must hold 8-bit values (0-255)")
        pixels = pixels.astype(np.uint8)
    return pixels


class SliceSelectionDataset(Dataset):
    """PNG slices scaled to [0, 1], resized with antialias, with sigmoid(offset / threshold) targets.

    Items are dicts: image (1 x S x S float32), target / valid (n_levels float32), offset_mm (float64), index.
    Blank offsets give valid 0 (masked out of the loss and metrics) and target 0.5. With `neighbours`
    (context_rows), the image has 3 channels: the slices below, the slice itself and above. With
    `phase_levels` (the offset columns' level names), items also hold phase (cos, sin of 2 pi v, the
    vertebral coordinate of core/vertebrae.py) and phase_valid (0 outside the labelled levels).
    """

    def __init__(
        self,
        split: SliceSplit,
        image_size: int,
        threshold_mm: float,
        augmentation: AffineRanges | None = None,
        neighbours: np.ndarray | None = None,
        phase_levels: list[str] | None = None,
    ) -> None:
        self.split, self.image_size, self.augmentation = split, image_size, augmentation
        self.neighbours = neighbours
        self.phase = None
        if phase_levels is not None:
            targets, valid = phase_targets(vertebral_coordinate(split.meta.offsets_mm, phase_levels))
            self.phase, self.phase_valid = torch.from_numpy(targets), torch.from_numpy(valid)
        offsets = torch.from_numpy(split.meta.offsets_mm)  # float64, as the CSV says: metrics use them exactly
        self.valid = (~torch.isnan(offsets)).float()
        self.offsets = torch.nan_to_num(offsets, nan=0.0)
        self.targets = torch.sigmoid(self.offsets.float() / threshold_mm)

    def __len__(self) -> int:
        return self.split.count

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        rows = [index] if self.neighbours is None else self.neighbours[index].tolist()
        pixels = np.stack([read_gray_png(self.split.image_dir / png_name(row)) for row in rows])
        image = selection_input(pixels, self.image_size)  # C x S x S, as estimate and evaluate feed the model
        if self.augmentation is not None:
            generator = torch.Generator().manual_seed(seed) if seed is not None else torch.default_generator
            image = augment_image(image, self.augmentation, generator)
        item = {
            "image": image.contiguous(),
            "target": self.targets[index],
            "offset_mm": self.offsets[index],
            "valid": self.valid[index],
            "index": index,
        }
        if self.phase is not None:
            item.update(phase=self.phase[index], phase_valid=self.phase_valid[index])
        return item
