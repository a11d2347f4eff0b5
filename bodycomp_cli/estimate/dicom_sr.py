"""--dicom-sr: one series' measurements as a DICOM Structured Report, TID 1500 Measurement Report (highdicom).

One file per series, dicom_sr/<series>.dcm (Comprehensive 3D SR), with per level:
- one measurement group per tissue: its area (SCT 42798000 Area, UCUM cm2) and mean HU (DCM 112031
  Attenuation Coefficient, derivation SCT 373098007 Mean, UCUM [hnsf'U]); finding type the tissue's SNOMED
  concept (as in the SEG), finding site the level's vertebra (SCT, e.g. 36470004 L3 vertebra). With
  --dicom-seg the group is an ROI group that references its SEG segment and the level's source image
  (TID 1411: TID 1410's frame reference is refused by dciodvfy); otherwise it references the source image
  (TID 1501);
- one group of the indices and muscle quality (TID 1501, referencing the source image): SMI, SAT, VAT and
  total-fat indices (UCUM cm2/m2), VAT/SAT ratio (UCUM {ratio}), LAMA, NAMA and IMAT areas (cm2). DICOM and
  SNOMED have no concept for these, so they carry codes of bodycomp's own scheme 99BODYCOMP (docs/estimate.md).
A blank value in results.csv is left out of the report, never written as a number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import bodycomp_cli
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.dicom_seg import PATIENT_STUDY_TYPE2, tissue_code
from bodycomp_cli.estimate.indices import number_or_none
from bodycomp_cli.io.atomic import atomic_path
from bodycomp_cli.io.dicom_tree import DicomSeries

SR_SERIES_NUMBER = 9901  # after the SEG series (9900)
PRIVATE_SCHEME = "99BODYCOMP"
# results.csv field of a level -> (code value, meaning, UCUM unit) in the 99BODYCOMP scheme
INDEX_CODES = {
    "smi_cm2_m2": ("smi", "Skeletal muscle index", "cm2/m2"),
    "sat_index_cm2_m2": ("sat_index", "Subcutaneous adipose tissue index", "cm2/m2"),
    "vat_index_cm2_m2": ("vat_index", "Visceral adipose tissue index", "cm2/m2"),
    "total_fat_index_cm2_m2": ("total_fat_index", "Total adipose tissue index", "cm2/m2"),
    "vat_sat_ratio": ("vat_sat_ratio", "Visceral to subcutaneous adipose tissue area ratio", "{ratio}"),
    "lama_area_cm2": ("lama_area", "Low-attenuation muscle area", "cm2"),
    "nama_area_cm2": ("nama_area", "Normal-attenuation muscle area", "cm2"),
    "imat_area_cm2": ("imat_area", "Intermuscular adipose tissue area", "cm2"),
}
UNIT_MEANINGS = {
    "cm2": "square centimeter",
    "cm2/m2": "square centimeter per square meter",
    "{ratio}": "ratio",
    "[hnsf'U]": "Hounsfield unit",
}


def _unit(code: str):
    from pydicom.sr.coding import Code

    return Code(code, "UCUM", UNIT_MEANINGS[code])


def _read_source(path: Path):
    import pydicom

    source = pydicom.dcmread(path, stop_before_pixels=True)
    for keyword in PATIENT_STUDY_TYPE2:  # anonymised exports drop them; highdicom copies them (Type 2)
        if keyword not in source:
            setattr(source, keyword, "")
    return source


def _seg_frame(segmentation, source_uid: str, segment_number: int) -> int | None:
    """The SEG's frame number holding `segment_number` on the source image `source_uid` (None: no such frame,
    e.g. the tissue is absent from that slice and its empty frame was left out)."""
    for number, item in enumerate(segmentation.PerFrameFunctionalGroupsSequence, start=1):
        segment = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        sources = [s.ReferencedSOPInstanceUID for d in item.DerivationImageSequence for s in d.SourceImageSequence]
        if segment == segment_number and source_uid in sources:
            return number
    return None


def _measurement(hd, name, value: float, unit: str, derivation=None):
    return hd.sr.Measurement(name=name, value=value, unit=_unit(unit), derivation=derivation)


def write_dicom_sr(
    path: Path,
    series: DicomSeries,
    row: Mapping[str, object],
    layout: Sequence[tuple[str, Sequence[str]]],
    seg_paths: Mapping[str, Path] | None = None,
) -> bool:
    """Write the TID 1500 report of one results row; False when no level has a slice (nothing to report).

    seg_paths: level -> the DICOM SEG written for it (--dicom-seg), whose segments the tissue groups reference.
    Example: write_dicom_sr(out / "dicom_sr/ct.dcm", series, row, [("L3", ["muscle"])], {"L3": seg_path})
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    by_uid = {header.sop_instance_uid: header for header in series.slices}
    algorithm = hd.sr.AlgorithmIdentification(name="bodycomp", version=bodycomp_cli.__version__)
    groups, evidence = [], {}
    for level, tissues in layout:
        uid = str(row.get(f"{level}_sop_instance_uid") or "")
        if uid not in by_uid:  # the level is not in the scan, or not a DICOM slice
            continue
        source = evidence.setdefault(uid, _read_source(by_uid[uid].path))
        site_code = getattr(codes.SCT, f"{level.upper()}Vertebra", None)
        sites = [hd.sr.FindingSite(site_code)] if site_code is not None else None
        source_item = hd.sr.SourceImageForMeasurementGroup.from_source_image(source)
        seg_path = (seg_paths or {}).get(level)
        segmentation = hd.seg.segread(seg_path) if seg_path is not None and Path(seg_path).is_file() else None
        if segmentation is not None:
            evidence[segmentation.SOPInstanceUID] = segmentation
        for number, tissue in enumerate(tissues, start=1):
            measurements = []
            area = number_or_none(row.get(f"{level}_{tissue}_area_cm2"))
            if area is not None:
                measurements.append(_measurement(hd, codes.SCT.Area, area, "cm2"))
            mean = number_or_none(row.get(f"{level}_{tissue}_mean_hu"))
            if mean is not None:
                name = codes.DCM.AttenuationCoefficient
                measurements.append(_measurement(hd, name, mean, "[hnsf'U]", derivation=codes.SCT.Mean))
            common = {
                "tracking_identifier": hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{level} {tissue}"),
                "finding_type": tissue_code(tissue),
                "finding_sites": sites,
                "algorithm_id": algorithm,
                "measurements": measurements,
            }
            frame = _seg_frame(segmentation, uid, number) if segmentation is not None else None
            if frame is not None:
                # TID 1411 and the whole segment, not TID 1410 and a frame: TID 1410's Referenced Segmentation Frame
                # item carries both ReferencedFrameNumber and ReferencedSegmentNumber, which dciodvfy refuses (two
                # errors per group).
                # With --range the segment spans several slices: its source image names the one measured here.
                referenced = hd.sr.ReferencedSegment(
                    sop_class_uid=segmentation.SOPClassUID,
                    sop_instance_uid=segmentation.SOPInstanceUID,
                    segment_number=number,
                    source_images=[hd.sr.SourceImageForSegmentation.from_source_image(source)],
                )
                groups.append(
                    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=referenced, **common)
                )
            else:
                groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(source_images=[source_item], **common))
        indices = []
        for field, (value_code, meaning, unit) in INDEX_CODES.items():
            value = number_or_none(row.get(f"{level}_{field}"))
            if value is not None:
                indices.append(_measurement(hd, Code(value_code, PRIVATE_SCHEME, meaning), value, unit))
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{level} indices"),
                finding_type=codes.SCT.SkeletalMuscle,
                finding_sites=sites,
                algorithm_id=algorithm,
                measurements=indices,
                source_images=[source_item],
            )
        )
    if not groups:
        return False
    try:
        report = _report(hd, codes, groups, list(evidence.values()), series)
    except (ValueError, AttributeError, TypeError) as error:  # highdicom's refusals of the source images
        raise BodycompError(f"{series.series_id}: no DICOM SR ({error})") from None
    with atomic_path(Path(path)) as tmp:
        report.save_as(tmp)
    return True


def _report(hd, codes, groups: list, evidence: list, series: DicomSeries):
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name="bodycomp"),
    )
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=content[0],
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="bodycomp",
        series_description=f"bodycomp measurements {series.series_id}"[:64],
    )


def write_series_report(
    folder: Path,
    stem: str,
    series: DicomSeries,
    row: Mapping[str, object],
    layout: Sequence[tuple[str, Sequence[str]]],
    with_seg: bool,
) -> list[str]:
    """dicom_sr/<stem>.dcm for one series (its SEG files referenced when --dicom-seg wrote them); console notes."""
    seg_paths = {level: folder / "dicom_seg" / f"{stem}_{level}.dcm" for level, _ in layout} if with_seg else None
    try:
        if not write_dicom_sr(folder / "dicom_sr" / f"{stem}.dcm", series, row, layout, seg_paths):
            return [f"{series.series_id}: no DICOM SR (no level has a slice)"]
    except BodycompError as error:  # the measurements stand; only the SR file is missing
        return [str(error)]
    return []
