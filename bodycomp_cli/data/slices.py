"""The slice-selection layout (images/<split>/NNNNNN.png, meta/<split>.csv): validation and dataset."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from bodycomp_cli.data.augment import AffineRanges, augment_image, resize_image
from bodycomp_cli.errors import BodycompError, BodycompWarning
from bodycomp_cli.io.arrays import read_png

SPLITS = ("train", "val")


@dataclass(frozen=True)
class SliceSplit:
    image_dir: Path
    count: int
    offsets_mm: np.ndarray  # N x n_levels float32, NaN where the level is not in the scan
    meta: pd.DataFrame  # the CSV as read (series / z_mm are used for the selection error when present)


GRAY16_MODES = ("I;16", "I;16B", "I;16L", "I")  # how Pillow opens 16-bit grayscale PNGs


def png_name(index: int) -> str:
    """The PNG of CSV row INDEX, as the original named them: six digits at least, seven past 999,999."""
    return f"{index:06d}.png"


def offset_columns(frame: pd.DataFrame, levels: list[str], csv_path: Path) -> list[str]:
    """The ZOffset_<LEVEL> column of each level; with a single level a plain `ZOffset` column comes first,
    as the original read it whatever other columns the CSV had."""
    columns = []
    for level in levels:
        name = f"ZOffset_{level}"
        if len(levels) == 1 and "ZOffset" in frame.columns:
            name = "ZOffset"
        if name not in frame.columns:
            raise BodycompError(f"{csv_path}: missing column {name} (level {level})")
        columns.append(name)
    return columns


def _read_offsets(csv_path: Path, levels: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    if not csv_path.is_file():
        raise BodycompError(f"{csv_path}: file not found")
    try:
        frame = pd.read_csv(csv_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise BodycompError(f"{csv_path}: not a readable CSV ({error})") from None
    offsets = []
    for column in offset_columns(frame, levels, csv_path):
        raw = frame[column]
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BodycompError(f"{csv_path}: column {column}, row {row}: offset {raw.iloc[row]!r} is not a number")
        if np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan)).any():
            raise BodycompError(f"{csv_path}: column {column} holds an infinite offset")
        offsets.append(values.to_numpy(dtype=np.float32, na_value=np.nan))
    return np.stack(offsets, axis=1), frame


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
    """Check both splits (PNG ids, counts, 8-bit grayscale, offset columns) and read their offsets."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BodycompError(f"{data_dir}: data folder not found")
    splits = {}
    for split in SPLITS:
        csv_path = data_dir / "meta" / f"{split}.csv"
        offsets, frame = _read_offsets(csv_path, levels)
        if len(frame) == 0:
            raise BodycompError(f"{csv_path}: has no rows")
        _check_pngs(data_dir / "images" / split, len(frame), csv_path)
        splits[split] = SliceSplit(data_dir / "images" / split, len(frame), offsets, frame)
    return splits


def series_groups(series: np.ndarray) -> list[np.ndarray]:
    """The row numbers of each series, series in the order they first appear."""
    series = np.asarray(series)
    return [np.flatnonzero(series == name) for name in dict.fromkeys(series.tolist())]


def numeric_z_mm(meta: pd.DataFrame, csv_path: Path) -> np.ndarray:
    """A meta CSV's z_mm column as float64, refusing a blank or non-numeric value with its row."""
    z_mm = pd.to_numeric(meta["z_mm"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(z_mm).any():
        row = int(np.flatnonzero(np.isnan(z_mm))[0])
        raise BodycompError(f"{csv_path}: column z_mm, row {row}: not a number")
    return z_mm


def context_rows(series: np.ndarray, z_mm: np.ndarray, context_mm: float) -> np.ndarray:
    """N x 3 row numbers: for each slice, the slices of its own series nearest z - context_mm, z, z + context_mm.

    Past either end of a series the nearest slice is the end slice itself.
    """
    z_mm = np.asarray(z_mm, dtype=np.float64)
    rows = np.empty((len(z_mm), 3), dtype=np.int64)
    for members in series_groups(series):
        if len(members) == 1:  # a lone slice is its own neighbour on both sides
            rows[members] = members[0]
            continue
        order = members[np.argsort(z_mm[members], kind="stable")]
        z = z_mm[order]
        for column, shift in ((0, -context_mm), (2, context_mm)):
            target = z + shift
            right = np.searchsorted(z, target).clip(1, len(z) - 1)
            left = right - 1
            nearest = np.where(np.abs(target - z[left]) <= np.abs(z[right] - target), left, right)
            rows[order, column] = order[nearest]
        rows[order, 1] = order
    return rows


def split_context_rows(split: SliceSplit, context_mm: float, csv_path: Path) -> np.ndarray:
    """context_rows from a split's meta CSV, which must then say which series and z each slice has."""
    for column in ("series", "z_mm"):
        if column not in split.meta.columns:
            raise BodycompError(f"{csv_path}: --context-mm needs a {column} column (prepare-slices writes it)")
    return context_rows(split.meta["series"].astype(str).to_numpy(), numeric_z_mm(split.meta, csv_path), context_mm)


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

    Items are dicts: image (1 x S x S float32), target / offset_mm / valid (n_levels float32), index.
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
        offsets = torch.from_numpy(split.offsets_mm)
        self.valid = (~torch.isnan(offsets)).float()
        self.offsets = torch.nan_to_num(offsets, nan=0.0)
        self.targets = torch.sigmoid(self.offsets / threshold_mm)

    def __len__(self) -> int:
        return self.split.count

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        rows = [index] if self.neighbours is None else self.neighbours[index].tolist()
        pixels = np.stack([read_gray_png(self.split.image_dir / png_name(row)) for row in rows])
        image = resize_image(torch.from_numpy(pixels.astype(np.float32) * np.float32(1 / 255)), self.image_size)
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
