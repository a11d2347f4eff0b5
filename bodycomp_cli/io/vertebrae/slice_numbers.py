"""Level positions from a slice number a reader noted: an index into the z-ascending series, or InstanceNumber."""

from __future__ import annotations

import warnings
from pathlib import Path

from bodycomp_cli.errors import BodycompError, reason
from bodycomp_cli.io.volumes import Volume

SLICE_NUMBERINGS = ("index", "instance")


def instance_numbers(volume: Volume, where: str) -> list[int | None]:
    """Each slice's DICOM InstanceNumber, z ascending (None where a file has none)."""
    import pydicom

    from bodycomp_cli.io.dicom_tree import only_series

    if volume.sop_instance_uids is None:
        raise BodycompError(f"{where}: --slice-numbers instance needs a DICOM series, and {volume.source} is not one")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the volume's reader has reported the folder's other files already
        paths = only_series(Path(volume.source)).paths
    number_of: dict[str, int | None] = {}
    for path in paths:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "InstanceNumber"])
        except Exception as error:  # pydicom raises many types for damaged files
            raise BodycompError(f"{where}: {path}: cannot read its DICOM header ({reason(error)})") from None
        value = header.get("InstanceNumber")
        number_of[str(header.get("SOPInstanceUID", ""))] = None if value in (None, "") else int(value)
    return [number_of.get(uid) for uid in volume.sop_instance_uids]


def slice_position(volume: Volume, number: int, numbering: str, column: str, where: str) -> float:
    """World z of the slice that `number` names in column `column`."""
    count = len(volume.z_mm)
    if numbering == "index":
        if not 0 <= number < count:
            raise BodycompError(
                f"{where}: column '{column}' is {number}, outside the series' slice indices 0 to {count - 1}"
            )
        return float(volume.z_mm[number])
    matches = [k for k, value in enumerate(instance_numbers(volume, where)) if value == number]
    if len(matches) != 1:
        found = "no slice" if not matches else f"{len(matches)} slices"
        raise BodycompError(f"{where}: column '{column}' is InstanceNumber {number}, which {found} of the series carry")
    return float(volume.z_mm[matches[0]])
