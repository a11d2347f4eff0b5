"""--dicom-seg: the tissue masks of a level as a DICOM Segmentation (highdicom), for PACS and viewers.

One file per series and level, with one frame per segmented slice (the chosen one, plus the --range
slices) and one segment per tissue. It references the source images by SOPInstanceUID and, through
highdicom, copies the patient and study identifiers from them, so a viewer shows it with its study.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

import bodycomp_cli
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.atomic import atomic_path
from bodycomp_cli.io.dicom_tree import DicomSeries
from bodycomp_cli.io.volumes import stored_from_display

SEG_SERIES_NUMBER = 9900  # far above scanners' series numbers, so viewers list it after the images
# Type 2 attributes (present, possibly empty) that highdicom copies from the source images; anonymised
# exports sometimes drop them altogether, so they are added back empty rather than failing.
PATIENT_STUDY_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def tissue_code(tissue: str):
    from pydicom.sr.codedict import codes

    # SNOMED CT concepts: skeletal muscle; subcutaneous tissue; fat (visceral fat has no concept of its own
    # in pydicom's dictionary: the segment label says which fat it is).
    known = {
        "muscle": codes.SCT.SkeletalMuscle,
        "subcutaneous_fat": codes.SCT.SubcutaneousTissue,
        "visceral_fat": codes.SCT.AdiposeTissue,
    }
    return known.get(tissue, codes.SCT.Tissue)


def write_dicom_seg(
    path: Path,
    series: DicomSeries,
    sop_instance_uids: Sequence[str],
    labels: np.ndarray,
    classes: Sequence[str],
    level: str,
) -> None:
    """Write labels (N x H x W, display orientation, one per source SOPInstanceUID) as a DICOM SEG file.

    Example: write_dicom_seg(out / "dicom_seg/ct_L3.dcm", series, [uid], mask[None], classes, "L3")
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    by_uid = {header.sop_instance_uid: header for header in series.slices}
    missing = [uid for uid in sop_instance_uids if uid not in by_uid]
    if missing:
        raise BodycompError(f"{series.series_id}: no source image with SOPInstanceUID {missing[0]}")
    headers = [by_uid[uid] for uid in sop_instance_uids]
    sources = [pydicom.dcmread(header.path, stop_before_pixels=True) for header in headers]
    for source in sources:
        for keyword in PATIENT_STUDY_TYPE2:
            if keyword not in source:
                setattr(source, keyword, "")
    orientation = headers[0].orientation
    stored = np.ascontiguousarray(stored_from_display(np.asarray(labels, dtype=np.uint8), orientation, headers[0].path))
    algorithm = hd.AlgorithmIdentificationSequence(
        name="bodycomp", version=bodycomp_cli.__version__, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=tissue.replace("_", " "),
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=tissue_code(tissue),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, tissue in enumerate(classes[1:], start=1)
    ]
    try:
        segmentation = _segmentation(hd, sources, stored, descriptions, level)
    except (ValueError, AttributeError, TypeError) as error:  # highdicom's refusals of the source images
        raise BodycompError(f"{series.series_id}: no DICOM SEG for {level} ({error})") from None
    with atomic_path(Path(path)) as tmp:
        segmentation.save_as(tmp)


def _segmentation(hd, sources: list, stored: np.ndarray, descriptions: list, level: str):
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stored,  # label k is segment k
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="bodycomp",
        manufacturer_model_name="bodycomp estimate",
        software_versions=bodycomp_cli.__version__,
        device_serial_number="none",
        series_description=f"bodycomp {level} tissues",
    )
