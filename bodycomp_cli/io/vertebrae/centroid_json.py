"""Level positions from a VerSe-style centroid JSON.

The format (anjany/verse README, "Centroid coordinates ... are given in voxels in the image space"): a list whose
entries are one {"direction": ["P", "I", "R"]} (nibabel axis codes of the voxel axes X, Y, Z) and one
{"label": n, "X": x, "Y": y, "Z": z} per vertebra, in voxel units of the scan reoriented to that direction.
Entries with NaN coordinates (VerSe writes them for unplaced vertebrae) are skipped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from bodycomp_cli.errors import BodycompError, reason
from bodycomp_cli.io.vertebrae.grid import CtGrid

AXIS_CODES = ("LR", "PA", "IS")


def read_centroids(path: Path, where: str) -> tuple[tuple[str, str, str], dict[int, tuple[float, float, float]]]:
    """(direction codes, {label: (X, Y, Z)}) from a centroid JSON, refusing anything else with one line."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise BodycompError(f"{where}: {path}: not a readable centroid JSON ({reason(error)})") from None
    if not isinstance(entries, list):
        raise BodycompError(f"{where}: {path}: a centroid JSON is a list of entries, found {type(entries).__name__}")
    direction, centroids = None, {}
    for entry in entries:
        if isinstance(entry, dict) and "direction" in entry:
            direction = _direction(entry["direction"], path, where)
        elif isinstance(entry, dict) and "label" in entry:
            label, coordinates = entry["label"], [entry.get(axis) for axis in "XYZ"]
            if not all(isinstance(c, int | float) and not isinstance(c, bool) for c in coordinates):
                raise BodycompError(f"{where}: {path}: label {label!r} has no numeric X, Y and Z")
            if any(math.isnan(c) for c in coordinates):
                continue
            if isinstance(label, bool) or not isinstance(label, int | float) or label != int(label):
                raise BodycompError(f"{where}: {path}: label {label!r} is not a whole number")
            centroids[int(label)] = tuple(float(c) for c in coordinates)
        else:
            raise BodycompError(f"{where}: {path}: entry {entry!r} has neither 'direction' nor 'label'")
    if direction is None:
        raise BodycompError(f"{where}: {path}: no 'direction' entry (the axis codes of X, Y, Z, e.g. P I R)")
    return direction, centroids


def _direction(value: object, path: Path, where: str) -> tuple[str, str, str]:
    codes = tuple(str(code).upper() for code in value) if isinstance(value, list | tuple) else ()
    axes = sorted(next((i for i, pair in enumerate(AXIS_CODES) if code in pair), -1) for code in codes)
    if len(codes) != 3 or axes != [0, 1, 2]:
        raise BodycompError(f"{where}: {path}: direction {value!r} is not three axis codes such as ['P', 'I', 'R']")
    return codes  # type: ignore[return-value]


def json_positions(
    path: Path, numbering: dict[str, int], levels: list[str], grid: CtGrid, warnings: list[str], where: str
) -> dict[str, float | None]:
    """{level: world z of its centroid}; the voxel grid is the row's NIfTI CT. Absent labels are blank."""
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    if grid.affine is None:
        raise BodycompError(f"{where}: a centroid JSON gives voxel coordinates, so its CT must be a NIfTI file")
    direction, centroids = read_centroids(path, where)
    transform = ornt_transform(io_orientation(grid.affine), axcodes2ornt(direction))
    affine = grid.affine @ inv_ornt_aff(transform, grid.shape)  # voxel (X, Y, Z) in `direction` -> world
    shape = [0, 0, 0]
    for axis, (target, _) in enumerate(transform.astype(int)):
        shape[target] = grid.shape[axis]
    positions: dict[str, float | None] = {}
    for level in levels:
        label = numbering[level.upper()]
        if label not in centroids:
            positions[level] = None
            continue
        voxel = np.asarray(centroids[label])
        if np.any(voxel < -0.5) or np.any(voxel > np.asarray(shape) - 0.5):
            raise BodycompError(
                f"{where}: {path.name}: centroid of label {label} at voxel {tuple(voxel)} lies outside the CT grid "
                f"{tuple(shape)}"
            )
        z = float((affine @ np.append(voxel, 1.0))[2])
        # A centroid JSON has no extent: only a centre within half a slice of the volume's end shows a cut vertebra.
        if z < grid.z_mm[0] + grid.half_slice_mm or z > grid.z_mm[-1] - grid.half_slice_mm:
            name = f"{where}: {level} (label {label} of {path.name})"
            warnings.append(f"{name} is centred on the volume's end slice, so it is cut: level left blank")
            positions[level] = None
            continue
        positions[level] = z
    return positions
