"""The segmentation layout (train/val images and masks .npy): validation and a memmap-streaming dataset."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bodycomp_cli.core.preprocess import resize_labels, segmentation_input
from bodycomp_cli.data.augment import AffineRanges, augment_pair
from bodycomp_cli.errors import BodycompError

SPLITS = ("train", "val")
CHUNK_BYTES = 64 * 2**20  # label/finiteness checks read this much at a time, so RSS stays bounded
WINDOWED_SAMPLE = 16  # slices (evenly spaced) that decide whether images are raw HU or already windowed 0-255
# Already windowed arrays (the original's layout without -p) hold v = (HU - low) * 256 / width in 0-255; our
# model input is (HU - low) / width = v / 256, which is the window "level 128, width 256" applied to v.
PREWINDOWED_AS_WINDOW = (128.0, 256.0)

# Slices are read with pread at their offset in the .npy file rather than through the memmap: pages touched
# through a mapping stay in the process's RSS until it is unmapped, so one epoch over a 6 GB memmap would
# count 6 GB per worker. pread copies one slice into a private buffer and leaves the page cache to the kernel.


@dataclass(frozen=True)
class ArrayFile:
    """Where a C-ordered .npy array's data starts and how its elements are stored."""

    path: Path
    offset: int
    dtype: np.dtype

    @classmethod
    def of(cls, path: Path, array: np.ndarray) -> ArrayFile:
        if not array.flags.c_contiguous:
            raise BodycompError(f"{path}: Fortran-ordered arrays are not supported; save it in C order")
        return cls(path, int(array.offset), array.dtype)

    def read(self, fd: int, start: int, count: int, slice_shape: tuple[int, int]) -> np.ndarray:
        """Slices start..start+count as a count x H x W array (a private copy)."""
        per_slice = slice_shape[0] * slice_shape[1] * self.dtype.itemsize
        data = os.pread(fd, per_slice * count, self.offset + per_slice * start)
        if len(data) != per_slice * count:
            raise BodycompError(f"{self.path}: truncated (slice {start} lies beyond the end of the file)")
        return np.frombuffer(data, dtype=self.dtype).reshape(count, *slice_shape)


@dataclass(frozen=True)
class SegmentationSplit:
    images: ArrayFile  # a Path is accepted too (benchmarks build splits by hand) and located on creation
    masks: ArrayFile
    count: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("images", "masks"):
            value = getattr(self, name)
            if not isinstance(value, ArrayFile):
                object.__setattr__(self, name, ArrayFile.of(Path(value), _open(Path(value))))


def _open(path: Path) -> np.ndarray:
    if not path.is_file():
        raise BodycompError(f"{path}: file not found (train-seg needs train/val images and masks .npy)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise BodycompError(f"{path}: not a readable .npy array ({error})") from None


def _slices_shape(path: Path, array: np.ndarray) -> tuple[int, int, int]:
    shape = array.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise BodycompError(f"{path}: shape {array.shape} is not N x H x W x 1 or N x H x W")
    if shape[0] == 0:
        raise BodycompError(f"{path}: holds no slices")
    return shape  # type: ignore[return-value]


def _chunks(array: np.ndarray):
    count, slice_shape = array.shape[0], (int(np.prod(array.shape[1:-1])), int(array.shape[-1]))
    step = max(1, CHUNK_BYTES // max(1, slice_shape[0] * slice_shape[1] * array.dtype.itemsize))
    source = ArrayFile.of(Path(array.filename), array)
    fd = os.open(source.path, os.O_RDONLY)
    try:
        for start in range(0, count, step):
            yield start, source.read(fd, start, min(step, count - start), slice_shape)
    finally:
        os.close(fd)


def _check_windowing(path: Path, images: np.ndarray, input_windowed: bool) -> None:
    """Raw HU always has air or fat below 0; already windowed images lie within 0-255 everywhere."""
    rows = np.unique(np.linspace(0, len(images) - 1, min(WINDOWED_SAMPLE, len(images))).round().astype(int))
    sample = np.asarray(images[rows])
    low, high = float(sample.min()), float(sample.max())
    if input_windowed and (low < 0 or high > 255):
        raise BodycompError(
            f"{path}: --input-windowed, but it holds {low if low < 0 else high:g}, outside 0-255 (raw HU?); "
            "drop --input-windowed"
        )
    if not input_windowed and low >= 0 and high <= 255:
        raise BodycompError(
            f"{path}: every sampled slice lies within 0-255, so the images look already windowed (the original "
            "toolkit without -p); add --input-windowed to train on them as they are, or give raw HU"
        )


def _check_images(path: Path, images: np.ndarray, input_windowed: bool = False) -> None:
    kind = images.dtype.kind
    if images.dtype == np.uint8 and not input_windowed:
        raise BodycompError(
            f"{path}: dtype uint8 looks like windowed 8-bit images; give raw HU, or add --input-windowed"
        )
    if images.dtype != np.uint8 and (kind == "u" or (kind == "i" and images.dtype.itemsize < 2) or kind not in "iuf"):
        raise BodycompError(f"{path}: dtype {images.dtype} cannot hold raw HU (use signed int >= 16 bit or float)")
    if kind == "f":
        for start, chunk in _chunks(images):
            bad = ~np.isfinite(chunk)
            if bad.any():
                slice_index = start + int(np.argwhere(bad)[0][0])
                raise BodycompError(f"{path}: slice {slice_index} holds NaN or inf")
    _check_windowing(path, images, input_windowed)


def _check_masks(path: Path, masks: np.ndarray, n_classes: int, thoracic: bool) -> None:
    if masks.dtype.kind not in "iuf":
        raise BodycompError(f"{path}: dtype {masks.dtype} is not a label dtype (uint8 expected)")
    for start, chunk in _chunks(masks):
        if masks.dtype.kind == "f" and not np.all(np.isfinite(chunk) & (chunk == np.round(chunk))):
            raise BodycompError(f"{path}: mask values must be whole labels; slice >= {start} holds fractions")
        low, high = chunk.min(), chunk.max()
        if low < 0 or high > n_classes - 1:
            hint = " (thoracic models have labels 0-2)" if thoracic else ""
            bad = int(low if low < 0 else high)
            raise BodycompError(f"{path}: label {bad} out of range 0-{n_classes - 1}{hint}")


def validate_segmentation_data(
    data_dir: Path, n_classes: int, thoracic: bool, input_windowed: bool = False
) -> dict[str, SegmentationSplit]:
    """Check the four arrays (readable, shapes, dtypes, labels in chunks, raw HU or windowed) and describe them."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BodycompError(f"{data_dir}: data folder not found")
    splits = {}
    for split in SPLITS:
        image_path, mask_path = data_dir / f"{split}_images.npy", data_dir / f"{split}_masks.npy"
        images, masks = _open(image_path), _open(mask_path)
        image_shape, mask_shape = _slices_shape(image_path, images), _slices_shape(mask_path, masks)
        if image_shape != mask_shape:
            raise BodycompError(
                f"{mask_path}: shape {masks.shape} does not match {image_path.name} {images.shape} "
                "(counts and slice sizes must agree)"
            )
        _check_images(image_path, images, input_windowed)
        _check_masks(mask_path, masks, n_classes, thoracic)
        splits[split] = SegmentationSplit(
            ArrayFile.of(image_path, images), ArrayFile.of(mask_path, masks), *image_shape
        )
    return splits


class SegmentationDataset(Dataset):
    """Slices of a memmapped HU array and its masks, windowed to [0, 1], resized and (optionally) augmented.

    Items are dicts: image (1 x S x S float32), mask (S x S int64), index. Each process opens the files
    lazily and preads one slice at a time, so memory stays bounded whatever the array size.
    Pass an index, or an (index, seed) pair from TrainSampler to augment reproducibly.
    """

    def __init__(
        self,
        split: SegmentationSplit,
        image_size: int,
        window: tuple[float, float],
        augmentation: AffineRanges | None = None,
    ) -> None:
        self.split, self.image_size, self.window, self.augmentation = split, image_size, window, augmentation
        self._files: tuple[int, int] | None = None  # file descriptors, opened in each process

    def __len__(self) -> int:
        return self.split.count

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._files is None:
            self._files = (os.open(self.split.images.path, os.O_RDONLY), os.open(self.split.masks.path, os.O_RDONLY))
        shape = (self.split.height, self.split.width)
        return (
            self.split.images.read(self._files[0], index, 1, shape)[0],
            self.split.masks.read(self._files[1], index, 1, shape)[0],
        )

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        hu, labels = self._load(index)
        image = segmentation_input(hu[None], *self.window, self.image_size)[0]  # as estimate and evaluate do
        mask = resize_labels(torch.from_numpy(np.asarray(labels, dtype=np.int64)), self.image_size)
        if self.augmentation is not None:
            generator = torch.Generator().manual_seed(seed) if seed is not None else torch.default_generator
            image, mask = augment_pair(image, mask, self.augmentation, generator)
        return {"image": image.contiguous(), "mask": mask.contiguous(), "index": index}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": None}

    def __del__(self) -> None:
        for fd in self._files or ():
            with contextlib.suppress(OSError):
                os.close(fd)
