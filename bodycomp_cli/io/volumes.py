"""Read a CT volume (npz, DICOM series folder, NIfTI) into HU, display orientation, z ascending.

Display orientation: rows run anterior -> posterior and columns from the patient's right to their
left (the radiological display of an axial slice). Patient z in mm grows toward the head.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycomp_cli.errors import BodycompError, reason
from bodycomp_cli.io.dicom_tree import only_series
from bodycomp_cli.io.series_filters import MIN_AXIAL_COSINE

NIFTI_SUFFIXES = (".nii", ".nii.gz")
INT16_MIN, INT16_MAX = np.iinfo(np.int16).min, np.iinfo(np.int16).max


@dataclass
class Volume:
    hu: np.ndarray  # Z x H x W, HU (int16 or float32), display orientation, z ascending
    z_mm: np.ndarray  # (Z,) float64, ascending
    pixel_spacing: tuple[float, float] | None  # (row_mm, col_mm)
    modality: str | None  # DICOM Modality, None for npz/NIfTI
    source: Path
    sop_instance_uids: tuple[str, ...] | None = None  # DICOM: each slice's SOPInstanceUID, z ascending
    # 4 x 4, array index (z, row, col) -> RAS+ world mm: NIfTI, and DICOM with PixelSpacing
    affine: np.ndarray | None = None
    # DICOM slices off the evenly spaced line of `affine` (a missing slice): each slice's RAS mm shift from where the
    # affine puts it to where ImagePositionPatient says it is; None when every slice lies on the line
    slice_shift_mm: np.ndarray | None = None

    def slice_affine(self, index: int) -> np.ndarray | None:
        """The affine that places slice `index` exactly (index `index` of the array, at its own position)."""
        if self.affine is None or self.slice_shift_mm is None:
            return self.affine
        affine = self.affine.copy()
        affine[:3, 3] += self.slice_shift_mm[index]
        return affine


def read_volume(path: Path) -> Volume:
    """Read an .npz, a DICOM folder tree holding one CT series, or a NIfTI file as a 3-D HU volume.

    Example: `read_volume(Path("ct/case01.nii.gz")).hu.shape  # (Z, H, W)`
    """
    path = Path(path)
    if not path.exists():
        raise BodycompError(f"{path}: file not found")
    if path.is_dir():
        volume = read_dicom_files(only_series(path).paths, path)
    elif path.name.lower().endswith(NIFTI_SUFFIXES):
        volume = read_nifti(path)
    elif path.suffix.lower() == ".npz":
        volume = _read_npz(path)
    else:
        raise BodycompError(f"{path}: not a volume (expected .npz, .nii, .nii.gz or a DICOM series folder)")
    if volume.hu.ndim != 3:
        raise BodycompError(f"{path}: volume is not 3-D (shape {volume.hu.shape})")
    if 0 in volume.hu.shape:
        raise BodycompError(f"{path}: volume is empty (shape {volume.hu.shape})")
    return volume


def hu_array(values: np.ndarray, source: Path) -> np.ndarray:
    """Keep int16/float32 as they are; narrow other HU arrays to int16 when exact, else float32."""
    values = np.asarray(values)
    # The original toolkit's rule: signed integers of 16 bits or more, or floating point.
    if values.dtype.kind not in "if" or (values.dtype.kind == "i" and values.dtype.itemsize < 2):
        raise BodycompError(f"{source}: dtype {values.dtype} cannot hold HU (need signed int >= 16 bit or float)")
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise BodycompError(f"{source}: NaN or inf in the HU values")
        return values.astype(np.float32, copy=False)
    if values.dtype == np.int16:
        return values
    if values.size and (values.min() < INT16_MIN or values.max() > INT16_MAX):
        return values.astype(np.float32)
    return values.astype(np.int16)


def stack_scaled_hu(
    stored_slices: Iterable[np.ndarray], count: int, slope: Sequence[float], intercept: Sequence[float]
) -> np.ndarray:
    """Stack `stored * slope + intercept` slice by slice: int16 while every value is whole and fits, else float32.

    Working a slice at a time keeps memory near the size of the result (no float64 copy of a volume).
    """
    out: np.ndarray | None = None
    for k, stored in enumerate(stored_slices):
        hu = stored.astype(np.float64) * slope[k] + intercept[k]
        if out is None:
            out = np.empty((count, *hu.shape), dtype=np.int16)
        if out.dtype == np.int16 and not (
            np.array_equal(hu, np.rint(hu)) and hu.min() >= INT16_MIN and hu.max() <= INT16_MAX
        ):
            out = out.astype(np.float32)
        if not np.isfinite(hu).all():
            raise ValueError("NaN or inf in the HU values")
        out[k] = hu
    return out


def _read_npz(path: Path) -> Volume:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in ("hu", "z_mm") if key not in archive.files]
            if missing:
                raise BodycompError(f"{path}: npz has no {' or '.join(missing)} array (found: {archive.files})")
            hu = archive["hu"]
            z_mm = archive["z_mm"]
            spacing = archive["pixel_spacing"] if "pixel_spacing" in archive.files else None
    except BodycompError:
        raise
    except Exception as error:  # zipfile/numpy raise many types for a truncated or corrupt archive
        raise BodycompError(f"{path}: cannot read npz ({reason(error)})") from None
    if hu.ndim != 3:
        raise BodycompError(f"{path}: volume is not 3-D (hu shape {hu.shape})")
    z_mm = np.asarray(z_mm, dtype=np.float64).reshape(-1)
    if len(z_mm) != hu.shape[0]:
        raise BodycompError(f"{path}: z_mm has {len(z_mm)} values but hu has {hu.shape[0]} slices")
    if not np.isfinite(z_mm).all():
        raise BodycompError(f"{path}: z_mm has NaN or inf")
    order = np.argsort(z_mm, kind="stable")
    hu = hu_array(hu, path)
    if np.any(order != np.arange(len(order))):  # skip the copy when the slices are already z ascending
        hu = hu[order]
    pixel_spacing = None
    if spacing is not None and np.size(spacing) == 2:
        pixel_spacing = (float(np.ravel(spacing)[0]), float(np.ravel(spacing)[1]))
    return Volume(
        hu=np.ascontiguousarray(hu), z_mm=z_mm[order], pixel_spacing=pixel_spacing, modality=None, source=path
    )


# ---------------------------------------------------------------------------------------------- DICOM


def _dicom_datasets(files: list[Path], folder: Path) -> list:
    """Read every file that is a DICOM image; warn about (and skip) everything else."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    datasets = []
    for file in files:
        try:
            ds = pydicom.dcmread(file)
        except (InvalidDicomError, EOFError, OSError, ValueError) as error:
            warnings.warn(f"{file}: not a DICOM file, skipped ({type(error).__name__})", stacklevel=3)
            continue
        if "PixelData" not in ds:  # DICOMDIR, structured reports, presentation states
            warnings.warn(f"{file}: DICOM file without pixel data, skipped", stacklevel=3)
            continue
        datasets.append((file, ds))
    if not datasets:
        raise BodycompError(
            f"{folder}: not a DICOM image file" if folder.is_file() else f"{folder}: no DICOM image files found"
        )
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in datasets}
    if len(series) > 1:
        raise BodycompError(f"{folder}: folder holds {len(series)} DICOM series (SeriesInstanceUID); give one per row")
    return datasets


def _display_transform(orientation: np.ndarray, source: Path) -> tuple[bool, bool, bool, np.ndarray]:
    """From ImageOrientationPatient: (transpose, flip_rows, flip_cols, unit slice normal with +z).

    DICOM patient axes are LPS: +x to the patient's left, +y posterior, +z head. Display columns
    must run toward +x and rows toward +y.
    """
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    if abs(normal[2]) < MIN_AXIAL_COSINE:
        raise BodycompError(f"{source}: not an axial series (ImageOrientationPatient {list(orientation)})")
    transpose = abs(row_dir[1]) > abs(row_dir[0])
    if transpose:
        row_dir, col_dir = col_dir, row_dir
    flip_cols = row_dir[0] < 0
    flip_rows = col_dir[1] < 0
    return transpose, flip_rows, flip_cols, normal if normal[2] > 0 else -normal


def _to_display(pixels: np.ndarray, transpose: bool, flip_rows: bool, flip_cols: bool) -> np.ndarray:
    # The leading axis is the slice axis; the last two are (row, col) as stored.
    if transpose:
        pixels = np.swapaxes(pixels, -1, -2)
    if flip_rows:
        pixels = pixels[..., ::-1, :]
    if flip_cols:
        pixels = pixels[..., ::-1]
    return pixels


def stored_from_display(pixels: np.ndarray, orientation: Sequence[float], source: Path) -> np.ndarray:
    """Undo the display conversion: (..., rows, cols) in display orientation back to the files' stored order.

    Used to write results (a DICOM SEG) onto the source images' own pixel grid.
    """
    transpose, flip_rows, flip_cols, _ = _display_transform(np.asarray(orientation, dtype=np.float64), source)
    if flip_cols:
        pixels = pixels[..., ::-1]
    if flip_rows:
        pixels = pixels[..., ::-1, :]
    return np.swapaxes(pixels, -1, -2) if transpose else pixels


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM patient axes (LPS) to nibabel's world axes (RAS+)
EVEN_SPACING_MM = 0.02  # slice positions this far off the line through the first and last are uneven


def dicom_stored_affine(
    position: Sequence[float], orientation: Sequence[float], pixel_spacing: Sequence[float], slice_step: np.ndarray
) -> np.ndarray:
    """4 x 4 from a stored (slice, row, column) index to RAS+ mm, from the first slice's DICOM geometry.

    ImageOrientationPatient's first triplet is the direction of increasing column index, and PixelSpacing
    is (distance between rows, distance between columns); slice_step is the LPS vector from slice to slice.
    """
    orientation = np.asarray(orientation, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, 0] = slice_step
    affine[:3, 1] = orientation[3:] * float(pixel_spacing[0])
    affine[:3, 2] = orientation[:3] * float(pixel_spacing[1])
    affine[:3, 3] = np.asarray(position, dtype=np.float64)
    return LPS_TO_RAS @ affine


def display_affine(stored: np.ndarray, orientation: np.ndarray, display_shape: tuple[int, int], source: Path):
    """The affine of the display-oriented array, from the stored array's (see _display_transform)."""
    transpose, flip_rows, flip_cols, _ = _display_transform(orientation, source)
    height, width = display_shape
    flip = np.eye(4)  # display index (k, r, c) -> (k, r1, c1), the index before the row/column flips
    if flip_rows:
        flip[1, 1], flip[1, 3] = -1.0, height - 1
    if flip_cols:
        flip[2, 2], flip[2, 3] = -1.0, width - 1
    swap = np.eye(4)[[0, 2, 1, 3]] if transpose else np.eye(4)  # (k, r1, c1) -> stored (k, row, col)
    return stored @ swap @ flip


def _series_affine(first, positions: np.ndarray, normal: np.ndarray, display_shape, source: Path):
    """(The display array's affine, each slice's RAS shift off it or None): (None, None) without PixelSpacing.

    The affine runs from the first slice to the last in even steps; a slice more than EVEN_SPACING_MM off that
    line (a gap in the series) gets its shift, so that Volume.slice_affine places it where it is.
    """
    if "PixelSpacing" not in first:
        return None, None
    shift = None
    if len(positions) > 1:
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
        off_line = positions - (positions[0] + np.outer(np.arange(len(positions)), step))
        if np.abs(off_line).max() > EVEN_SPACING_MM:
            shift = off_line @ LPS_TO_RAS[:3, :3].T
    else:  # one slice: any step along the normal places it
        step = normal * float(first.get("SliceThickness", 1.0) or 1.0)
    orientation = np.asarray([float(v) for v in first.ImageOrientationPatient], dtype=np.float64)
    stored = dicom_stored_affine(positions[0], orientation, [float(v) for v in first.PixelSpacing], step)
    return display_affine(stored, orientation, display_shape, source), shift


def dicom_series_uid(path: Path) -> str | None:
    """A DICOM file's SeriesInstanceUID (None when it has none), read from its header only."""
    import pydicom

    uid = pydicom.dcmread(path, stop_before_pixels=True).get("SeriesInstanceUID")
    return str(uid) if uid else None


def read_dicom_files(files: list[Path], source: Path) -> Volume:
    """Read DICOM files of one series (a folder's files, or one file) into a z-ascending volume."""
    datasets = _dicom_datasets(files, source)
    first = datasets[0][1]
    try:
        orientation = np.asarray([float(v) for v in first.ImageOrientationPatient], dtype=np.float64)
    except AttributeError:
        raise BodycompError(f"{datasets[0][0]}: no ImageOrientationPatient") from None
    transpose, flip_rows, flip_cols, normal = _display_transform(orientation, source)
    positions = []
    for file, ds in datasets:
        if "ImagePositionPatient" not in ds:
            raise BodycompError(f"{file}: no ImagePositionPatient")
        positions.append([float(v) for v in ds.ImagePositionPatient])
    positions = np.asarray(positions, dtype=np.float64)
    # Sort along the slice normal (pointing to the head), which for axial slices orders z as well.
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    if len(order) > 1 and np.any(np.diff(distance[order]) <= 1e-6):
        raise BodycompError(f"{source}: two DICOM slices share one position along the slice normal")

    def stored_slices():
        shape = None
        for index in order:
            file, ds = datasets[index]
            try:
                stored = ds.pixel_array
            except Exception as error:  # pydicom raises many types for missing decoders or bad data
                raise BodycompError(f"{file}: cannot decode pixel data ({reason(error)})") from None
            if stored.ndim != 2:
                raise BodycompError(f"{file}: DICOM image is not 2-D (shape {stored.shape})")
            if shape is not None and stored.shape != shape:
                raise BodycompError(f"{file}: slice shape {stored.shape} differs from {shape} in the same series")
            shape = stored.shape
            yield stored

    rescale = [datasets[index][1] for index in order]
    slopes = [float(ds.get("RescaleSlope", 1) or 1) for ds in rescale]
    intercepts = [float(ds.get("RescaleIntercept", 0) or 0) for ds in rescale]
    try:
        hu = stack_scaled_hu(stored_slices(), len(order), slopes, intercepts)
    except ValueError as error:
        raise BodycompError(f"{source}: {error}") from None
    hu = np.ascontiguousarray(_to_display(hu, transpose, flip_rows, flip_cols))
    spacing = None
    if "PixelSpacing" in first:
        row_mm, col_mm = (float(v) for v in first.PixelSpacing)
        spacing = (col_mm, row_mm) if transpose else (row_mm, col_mm)
    modality = str(first.Modality) if "Modality" in first else None
    uids = tuple(str(datasets[index][1].get("SOPInstanceUID", "")) for index in order)
    affine, shift = _series_affine(first, positions[order], normal, hu.shape[1:], source)
    return Volume(
        hu=hu,
        z_mm=positions[order, 2],
        pixel_spacing=spacing,
        modality=modality,
        source=source,
        sop_instance_uids=uids,
        affine=affine,
        slice_shift_mm=shift,
    )


# ---------------------------------------------------------------------------------------------- NIfTI


def read_nifti(path: Path) -> Volume:
    """Read a NIfTI volume (or a 2-D slice, returned as Z=1) in display orientation, z ascending."""
    from nibabel.orientations import apply_orientation

    image, data, slope, intercept = load_nifti_3d(path)
    if (slope, intercept) == (1.0, 0.0):
        data = hu_array(data, path)
    elif data.dtype.kind not in "iuf":
        raise BodycompError(f"{path}: dtype {data.dtype} is not numeric HU")
    transform, affine = nifti_display_transform(image.affine, data.shape, path)
    hu = apply_orientation(data, transform)
    if (slope, intercept) == (1.0, 0.0):
        hu = np.ascontiguousarray(hu)
    else:
        try:
            hu = stack_scaled_hu(hu, hu.shape[0], [slope] * hu.shape[0], [intercept] * hu.shape[0])
        except ValueError as error:
            raise BodycompError(f"{path}: {error}") from None
    centre = np.array([0.0, (hu.shape[1] - 1) / 2.0, (hu.shape[2] - 1) / 2.0, 1.0])
    z_mm = np.array([(affine @ (centre + [k, 0, 0, 0]))[2] for k in range(hu.shape[0])], dtype=np.float64)
    spacing = (float(np.linalg.norm(affine[:3, 1])), float(np.linalg.norm(affine[:3, 2])))
    return Volume(hu=hu, z_mm=z_mm, pixel_spacing=spacing, modality=None, source=path, affine=affine)


def load_nifti_3d(path: Path, unscaled: bool = True):
    """(nibabel image, data as X x Y x Z with 2-D as Z=1, slope, intercept); unscaled data unless unscaled=False."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        proxy = image.dataobj
        # Scale slice by slice (see stack_scaled_hu) rather than let nibabel make a float64 volume.
        slope, intercept = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
        if unscaled and hasattr(proxy, "get_unscaled"):
            data = proxy.get_unscaled()
        else:
            data, slope, intercept = np.asanyarray(proxy), 1.0, 0.0
    except Exception as error:  # nibabel raises many types for truncated or foreign files
        raise BodycompError(f"{path}: cannot read NIfTI ({reason(error)})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    if data.ndim != 3 or 0 in data.shape:
        raise BodycompError(f"{path}: volume is not 3-D (shape {data.shape})")
    return image, data, slope, intercept


def nifti_display_transform(stored_affine: np.ndarray, shape: tuple[int, ...], path: Path):
    """(nibabel orientation transform to display order, affine of the reoriented array); refuses non-axial."""
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    # nibabel world space is RAS+. Array axes (0, 1, 2) must run to Superior (z ascending),
    # Posterior (rows anterior -> posterior) and Left (columns from the patient's right to left).
    transform = ornt_transform(io_orientation(stored_affine), axcodes2ornt(("S", "P", "L")))
    affine = stored_affine @ inv_ornt_aff(transform, shape)  # of the reoriented array
    normal = np.cross(affine[:3, 1], affine[:3, 2])
    tilt_cosine = abs(normal[2]) / max(float(np.linalg.norm(normal)), 1e-12)
    if tilt_cosine < MIN_AXIAL_COSINE:  # the same limit as for DICOM, rather than snapping to the nearest axes
        tilt = np.degrees(np.arccos(min(tilt_cosine, 1.0)))
        raise BodycompError(f"{path}: not an axial volume (slices tilted {tilt:.0f} degrees from axial)")
    return transform, affine
