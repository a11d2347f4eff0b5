"""prepare-seg: labelled slices -> {train,val}_{images,masks}.npy (N x S x S x 1), {train,val}_index.csv, dataset.json.

Arrays are created with np.lib.format.open_memmap and filled a chunk of rows at a time, each chunk
mapped, written and unmapped again, so memory stays flat however many rows the manifest has.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bodycomp_cli.core.runconfig import Window
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.arrays import read_gray8_png, read_npy
from bodycomp_cli.io.atomic import atomic_output_dir
from bodycomp_cli.io.dicom_tree import only_series
from bodycomp_cli.io.labels import ImageSource, is_geometric_source, read_labels
from bodycomp_cli.io.labels.geometry import labels_on_planes
from bodycomp_cli.io.labels.label_map import LabelMap, check_integer_labels, parse_label_map
from bodycomp_cli.io.manifests import (
    parse_float,
    read_manifest,
    refuse_blank_or_duplicate,
    resolve_path,
    row_label,
    splits_for_rows,
)
from bodycomp_cli.io.volumes import (
    NIFTI_SUFFIXES,
    Volume,
    dicom_series_uid,
    hu_array,
    read_dicom_files,
    read_nifti,
)
from bodycomp_cli.prepare.description import checked_window, write_dataset_description
from bodycomp_cli.prepare.progress import ProgressReporter

SPLITS = ("train", "val")
CHUNK_ROWS = 64  # 64 x 512 x 512 x (2 + 1) bytes = 48 MB buffered at most
LABELS = {False: (0, 1, 2, 3), True: (0, 1, 2)}  # thoracic models have no visceral fat class


@dataclass(frozen=True)
class SegRow:
    index: int
    id: str
    image: Path
    mask: Path
    split: str
    z_mm: float | None = None  # a 3-D image's slice: world z in mm ...
    slice_index: int | None = None  # ... or its index in the z-ascending volume


def _two_d(array: np.ndarray, where: str, what: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise BodycompError(f"{where}: {what} is not 2-D (shape {array.shape})")
    return array


def _load_npy(path: Path, where: str) -> np.ndarray:
    try:
        return read_npy(path)
    except BodycompError as error:
        raise BodycompError(f"{where}: {error}") from None


def load_image(path: Path, where: str) -> np.ndarray:
    """A 2-D HU slice from .npy, a single-slice DICOM file or a 2-D NIfTI, in display orientation."""
    if path.name.lower().endswith(".npy"):
        image = _two_d(_load_npy(path, where), f"{where}: {path}", "image")
        try:
            return hu_array(image, path)
        except BodycompError as error:
            raise BodycompError(f"{where}: {error}") from None
    volume = load_image_volume(path, where)
    if volume.hu.shape[0] != 1:
        raise BodycompError(f"{where}: {path}: image is not 2-D (shape {volume.hu.shape})")
    return volume.hu[0]


def load_image_volume(path: Path, where: str) -> Volume:
    """A DICOM file or series folder, or a NIfTI (2-D or 3-D), in display orientation, z ascending."""
    return load_image_source(path, where)[0]


def load_image_source(path: Path, where: str) -> tuple[Volume, ImageSource]:
    """The image volume and what label readers need of it (a DICOM image's series and files)."""
    try:
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            return read_nifti(path), ImageSource(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-DICOM files: a folder's are skipped, a row's is the error below
            if path.is_dir():
                series = only_series(path)
                files = tuple(series.paths)
                return read_dicom_files(list(files), path), ImageSource(path, series.series_uid, files)
            volume = read_dicom_files([path], path)
        return volume, ImageSource(path, dicom_series_uid(path), (path,))
    except BodycompError as error:
        raise BodycompError(f"{where}: {error}") from None


def pick_slice(volume: Volume, row: SegRow, where: str) -> int:
    """The image slice a row names: slice_index, or the slice whose centre is within half a spacing of z_mm."""
    depth = volume.hu.shape[0]
    if row.slice_index is not None:
        if not 0 <= row.slice_index < depth:
            raise BodycompError(f"{where}: slice_index {row.slice_index} outside the image's 0..{depth - 1}")
        return row.slice_index
    if row.z_mm is not None:
        nearest = int(np.argmin(np.abs(volume.z_mm - row.z_mm)))
        spacing = float(np.median(np.diff(volume.z_mm))) if depth > 1 else 0.0
        if abs(volume.z_mm[nearest] - row.z_mm) > max(spacing / 2, 1e-3):
            raise BodycompError(
                f"{where}: z_mm {row.z_mm:g} is outside {row.image.name}"
                f" (slices {volume.z_mm[0]:.1f} to {volume.z_mm[-1]:.1f} mm)"
            )
        return nearest
    if depth != 1:
        raise BodycompError(f"{where}: {row.image.name} is 3-D ({depth} slices): give z_mm or slice_index")
    return 0


def load_pair(row: SegRow, where: str, allowed: tuple[int, ...], label_map: LabelMap) -> tuple[np.ndarray, np.ndarray]:
    """The row's image slice and its mask, in display orientation, the mask matched through world coordinates."""
    if not is_geometric_source(row.mask):
        if row.z_mm is not None or row.slice_index is not None:
            volume = load_image_volume(row.image, where)
            image = volume.hu[pick_slice(volume, row, where)]
        else:
            image = load_image(row.image, where)
        if label_map.mapping is None:
            return image, load_mask(row.mask, where, allowed)
        mask = label_map.apply(load_mask(row.mask, where, None), f"{where}: {row.mask}")
        return image, _allowed_classes(mask, where, row.mask, allowed)
    if row.image.name.lower().endswith(".npy"):
        raise BodycompError(
            f"{where}: {row.image.name}: a {row.mask.name} mask needs an image with geometry (DICOM or NIfTI)"
        )
    volume, image = load_image_source(row.image, where)
    if volume.affine is None:
        raise BodycompError(
            f"{where}: {row.image.name}: no world geometry to place {row.mask.name} on (DICOM without PixelSpacing)"
        )
    index = pick_slice(volume, row, where)
    planes, mapped = read_labels(row.mask, label_map, where, image)
    on_slice = labels_on_planes(planes, volume.slice_affine(index), index, volume.hu.shape[1:], where)
    mask = on_slice.astype(np.uint8) if mapped else label_map.apply(on_slice, f"{where}: {row.mask}")
    return volume.hu[index], _allowed_classes(mask, where, row.mask, allowed)


def _allowed_classes(mask: np.ndarray, where: str, path: Path, allowed: tuple[int, ...]) -> np.ndarray:
    found = np.unique(mask)
    bad = [value for value in found.tolist() if value not in allowed]
    if bad:
        shown = ", ".join(str(int(value)) for value in bad)
        raise BodycompError(
            f"{where}: {path}: labels {shown} outside the allowed {', '.join(map(str, allowed))}"
            f" (found {', '.join(str(int(v)) for v in found)})"
        )
    return mask.astype(np.uint8)


def load_mask(path: Path, where: str, allowed: tuple[int, ...] | None) -> np.ndarray:
    """A 2-D uint8 label mask from .npy or an 8-bit grayscale .png, with labels in `allowed` (None: any)."""
    name = path.name.lower()
    if name.endswith(".png"):
        try:
            mask = read_gray8_png(path)
        except BodycompError as error:
            raise BodycompError(f"{where}: {error}") from None
    elif name.endswith(".npy"):
        mask = _two_d(_load_npy(path, where), f"{where}: {path}", "mask")
    else:
        raise BodycompError(f"{where}: {path}: mask must be .npy or .png")
    if mask.ndim != 2:
        raise BodycompError(f"{where}: {path}: mask is not 2-D (shape {mask.shape})")
    check_integer_labels(mask, f"{where}: {path}: mask")
    if allowed is None:
        return mask.astype(np.int64)
    return _allowed_classes(mask, where, path, allowed)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """S x S int16 image (bilinear, antialiased) and uint8 mask (nearest); S x S input is copied unchanged."""
    if image.shape != (size, size):
        from PIL import Image

        # Pillow's bilinear filter widens its support when shrinking, which is the antialiasing.
        resized = Image.fromarray(image.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR)
        image = np.asarray(resized)
        mask = np.asarray(Image.fromarray(mask, mode="L").resize((size, size), Image.Resampling.NEAREST))
    if image.dtype.kind == "f":
        image = np.rint(image)
    image = np.clip(image, np.iinfo(np.int16).min, np.iinfo(np.int16).max).astype(np.int16)
    return image, mask.astype(np.uint8)


class ChunkedArrayWriter:
    """Fill an N x S x S x 1 .npy file in row order, a chunk at a time, through open_memmap."""

    def __init__(self, path: Path, rows: int, size: int, dtype: type) -> None:
        self.path, self.rows, self.size, self.dtype = path, rows, size, dtype
        np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(rows, size, size, 1)).flush()
        self.buffer: list[np.ndarray] = []
        self.written = 0

    def append(self, slice_2d: np.ndarray) -> None:
        self.buffer.append(slice_2d)
        if len(self.buffer) >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        array = np.lib.format.open_memmap(self.path, mode="r+")
        array[self.written : self.written + len(self.buffer), :, :, 0] = np.stack(self.buffer)
        array.flush()
        del array  # unmap, so written pages leave this process
        self.written += len(self.buffer)
        self.buffer = []


def read_seg_manifest(manifest: Path, val_frac: float, seed: int) -> list[SegRow]:
    """Validate columns, ids, splits and file existence before any array is built."""
    table = read_manifest(manifest, ["image", "mask"])
    ids = list(table["id"]) if "id" in table.columns else [str(index + 1) for index in range(len(table))]
    refuse_blank_or_duplicate(manifest, ids, "id")
    groups = list(table["group"]) if "group" in table.columns else ids
    # A blank group cell keeps that row on its own rather than pooling all blanks together.
    groups = [group if group else f"\0row{index}" for index, group in enumerate(groups)]
    splits = splits_for_rows(manifest, table, SPLITS, groups, {"val": val_frac}, seed)
    return [
        SegRow(
            index=index,
            id=ids[index],
            image=resolve_path(manifest, index, "image", table.at[index, "image"]),
            mask=resolve_path(manifest, index, "mask", table.at[index, "mask"]),
            split=splits[index],
            z_mm=_cell_float(manifest, table, index, "z_mm"),
            slice_index=_cell_index(manifest, table, index),
        )
        for index in range(len(table))
    ]


def _cell_float(manifest: Path, table: pd.DataFrame, index: int, column: str) -> float | None:
    if column not in table.columns:
        return None
    return parse_float(manifest, index, column, table.at[index, column])


def _cell_index(manifest: Path, table: pd.DataFrame, index: int) -> int | None:
    value = _cell_float(manifest, table, index, "slice_index")
    if value is None:
        return None
    if value != int(value):
        raise BodycompError(f"{row_label(manifest, index)}: slice_index {value:g} is not a whole number")
    return int(value)


def prepare_seg(
    manifest: Path,
    output_dir: Path,
    val_frac: float = 0.2,
    seed: int = 0,
    size: int = 512,
    thoracic: bool = False,
    overwrite: bool = False,
    progress: ProgressReporter | None = None,
    window_level: float = Window().level,
    window_width: float = Window().width,
    label_map: str | None = None,
    unmapped: str = "refuse",
) -> dict[str, int]:
    """Build train/val image (int16 HU) and mask (uint8) arrays plus index CSVs; returns rows per split.

    The arrays keep raw HU: window_level/window_width are the window training is to apply to them, recorded in
    OUTPUT/dataset.json with the labels (thoracic) and the counts.
    Example: `prepare_seg(Path("slices.csv"), Path("seg_data"), size=512, thoracic=False)`
    """
    if size < 1:
        raise BodycompError(f"--size must be positive, got {size}")
    window = checked_window(window_level, window_width)
    manifest = Path(manifest)
    labels = parse_label_map(label_map, unmapped)
    rows = read_seg_manifest(manifest, val_frac, seed)
    allowed = LABELS[thoracic]
    progress = progress or ProgressReporter(None)
    with atomic_output_dir(Path(output_dir), overwrite) as tmp:
        counts = {split: sum(row.split == split for row in rows) for split in SPLITS}
        writers = {
            split: (
                ChunkedArrayWriter(tmp / f"{split}_images.npy", counts[split], size, np.int16),
                ChunkedArrayWriter(tmp / f"{split}_masks.npy", counts[split], size, np.uint8),
            )
            for split in SPLITS
        }
        index_rows: dict[str, list[dict[str, str]]] = {split: [] for split in SPLITS}
        with progress:
            progress.update("total", len(rows))
            for row in rows:
                where = row_label(manifest, row.index)
                image, mask = load_pair(row, where, allowed, labels)
                if image.shape != mask.shape:
                    raise BodycompError(
                        f"{where}: image {row.image.name} is {image.shape} but mask {row.mask.name} is {mask.shape}"
                    )
                image, mask = resize_pair(image, mask, size)
                image_writer, mask_writer = writers[row.split]
                image_writer.append(image)
                mask_writer.append(mask)
                index_rows[row.split].append({"id": row.id, "image": str(row.image), "mask": str(row.mask)})
                progress.update("done", 1)
        for split, (image_writer, mask_writer) in writers.items():
            image_writer.flush()
            mask_writer.flush()
            table = pd.DataFrame(index_rows[split], columns=["id", "image", "mask"])
            table.to_csv(tmp / f"{split}_index.csv", index_label="row")
        slices = {split: {"slices": count} for split, count in counts.items()}
        write_dataset_description(tmp, "segmentation", window, slices, manifest, thoracic=thoracic)
    return counts
