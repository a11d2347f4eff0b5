"""Tiny generated training data in both of the original toolkit's layouts."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd


def body_slice(size: int, rng: np.random.Generator, thoracic: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """An axial phantom: air, a subcutaneous fat ring, a muscle ring, visceral fat blobs in soft tissue."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = size / 2 + rng.uniform(-2, 2), size / 2 + rng.uniform(-2, 2)
    a, b = size * rng.uniform(0.36, 0.44), size * rng.uniform(0.28, 0.36)
    r = np.sqrt(((yy - cy) / b) ** 2 + ((xx - cx) / a) ** 2)
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    labels = np.zeros((size, size), dtype=np.uint8)
    inner = rng.uniform(0.72, 0.82)
    hu[r < 1.0], labels[r < 1.0] = -100.0, 2  # subcutaneous fat
    hu[r < inner], labels[r < inner] = 50.0, 1  # muscle wall
    core = r < inner - 0.15
    hu[core], labels[core] = 150.0, 0  # organs (background class; bright, so tiny models learn fast)
    if not thoracic:
        for _ in range(3):
            by, bx = cy + rng.uniform(-0.3, 0.3) * b, cx + rng.uniform(-0.3, 0.3) * a
            blob = core & ((yy - by) ** 2 + (xx - bx) ** 2 < (size * 0.06) ** 2)
            hu[blob], labels[blob] = -90.0, 3  # visceral fat
    hu += rng.normal(0, 15, hu.shape).astype(np.float32)
    return hu, labels


def make_seg_data(
    folder: Path, n_train: int = 16, n_val: int = 8, size: int = 64, seed: int = 0, thoracic: bool = False
) -> Path:
    """train/val images (N x H x W x 1 int16 HU) and masks (uint8) as the original layout."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("val", n_val)):
        pairs = [body_slice(size, rng, thoracic) for _ in range(count)]
        images = np.stack([p[0] for p in pairs]).round().astype(np.int16)[..., None]
        masks = np.stack([p[1] for p in pairs])[..., None]
        np.save(folder / f"{split}_images.npy", images)
        np.save(folder / f"{split}_masks.npy", masks)
    return folder


def make_select_data(
    folder: Path,
    levels: tuple[str, ...] = ("L3",),
    n_series: tuple[int, int] = (3, 2),
    slices: int = 12,
    size: int = 48,
    spacing_mm: float = 5.0,
    plain_column: bool = False,
    blank_every: int = 0,
    seed: int = 0,
) -> Path:
    """images/{train,val}/NNNNNN.png (8-bit) and meta/{split}.csv with ZOffset_<LEVEL>, series and z_mm.

    The bright bar's row tracks z, so the offset is learnable; blank_every > 0 blanks some offsets of the
    last level (a level not in the scan).
    """
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val"), n_series, strict=True):
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        rows, index = [], 0
        for series in range(count):
            level_z = {level: rng.uniform(20, 40) + 25 * k for k, level in enumerate(levels)}
            for s in range(slices):
                z = s * spacing_mm
                image = rng.integers(0, 40, (size, size), dtype=np.uint8)
                bar = int(round((s + 0.5) / slices * (size - 4)))
                image[bar : bar + 4, :] = 220
                iio.imwrite(folder / "images" / split / f"{index:06d}.png", image)
                row = {"series": f"{split}{series}", "z_mm": z}
                for level in levels:
                    row[f"ZOffset_{level}"] = z - level_z[level]
                if blank_every and s % blank_every == 0:
                    row[f"ZOffset_{levels[-1]}"] = np.nan
                rows.append(row)
                index += 1
        frame = pd.DataFrame(rows)
        if plain_column:
            frame = frame.rename(columns={f"ZOffset_{levels[0]}": "ZOffset"})
        (folder / "meta").mkdir(exist_ok=True)
        frame.to_csv(folder / "meta" / f"{split}.csv")
    return folder
