"""The slice-selection layout (images/<split>/NNNNNN.png, meta/<split>.csv): validation and dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from bodycomp_cli.core.metacsv import SliceMeta, read_meta_csv
from bodycomp_cli.core.preprocess import context_rows, selection_input
from bodycomp_cli.data.augment import AffineRanges, augment_image
from bodycomp_cli.errors import BodycompError

SPLITS = ("train", "val")


@dataclass(frozen=True)
class SliceSplit:
    image_dir: Path
    meta: SliceMeta  # the split's meta CSV: offsets per level, and series / z_mm when present

    @property
    def count(self) -> int:
        return self.meta.count


def _check_pngs(image_dir: Path, count: int, csv_path: Path) -> None:
    if not image_dir.is_dir():
        raise BodycompError(f"{image_dir}: image folder not found")
    names = sorted(p.name for p in image_dir.iterdir() if p.suffix.lower() == ".png")
    if len(names) != count:
        raise BodycompError(f"{image_dir}: {len(names)} PNG images but {csv_path} has {count} rows")
    expected = [f"{i:06d}.png" for i in range(count)]
    if names != expected:
        missing = next(name for name in expected if name not in set(names))
        stray = next(name for name in names if name not in set(expected))
        raise BodycompError(
            f"{image_dir}: PNG ids must run 000000..{count - 1:06d} without gaps; {missing} is missing, found {stray}"
        )
    for name in names:
        path = image_dir / name
        try:
            with Image.open(path) as image:
                mode = image.mode
                image.verify()  # reads every chunk and checks its CRC, so truncated files fail here
        except Exception as error:  # PIL raises many types for corrupt files
            raise BodycompError(f"{path}: not a readable PNG ({error})") from None
        if mode != "L":
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
    with Image.open(path) as image:
        return np.asarray(image)


class SliceSelectionDataset(Dataset):
    """PNG slices scaled to [0, 1], resized with antialias, with sigmoid(offset / threshold) targets.

    Items are dicts: image (1 x S x S float32), target / valid (n_levels float32), offset_mm (float64), index.
    Blank offsets give valid 0 (masked out of the loss and metrics) and target 0.5. With `neighbours`
    (context_rows), the image has 3 channels: the slices below, the slice itself and above.
    """

    def __init__(
        self,
        split: SliceSplit,
        image_size: int,
        threshold_mm: float,
        augmentation: AffineRanges | None = None,
        neighbours: np.ndarray | None = None,
    ) -> None:
        self.split, self.image_size, self.augmentation = split, image_size, augmentation
        self.neighbours = neighbours
        offsets = torch.from_numpy(split.meta.offsets_mm)  # float64, as the CSV says: metrics use them exactly
        self.valid = (~torch.isnan(offsets)).float()
        self.offsets = torch.nan_to_num(offsets, nan=0.0)
        self.targets = torch.sigmoid(self.offsets.float() / threshold_mm)

    def __len__(self) -> int:
        return self.split.count

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        rows = [index] if self.neighbours is None else self.neighbours[index].tolist()
        pixels = np.stack([read_gray_png(self.split.image_dir / f"{row:06d}.png") for row in rows])
        image = selection_input(pixels, self.image_size)  # C x S x S, as estimate and evaluate feed the model
        if self.augmentation is not None:
            generator = torch.Generator().manual_seed(seed) if seed is not None else torch.default_generator
            image = augment_image(image, self.augmentation, generator)
        return {
            "image": image.contiguous(),
            "target": self.targets[index],
            "offset_mm": self.offsets[index],
            "valid": self.valid[index],
            "index": index,
        }
