"""Write small CT series as a PACS would export them: real DICOM files, optionally compressed.

Identity orientation (rows anterior -> posterior, columns right -> left), so the stored pixels are the
display pixels. Pixels are stored unsigned with RescaleIntercept -1024, as most scanners do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    generate_uid,
)

AXIAL_PRIMARY = ("ORIGINAL", "PRIMARY", "AXIAL")


def ct_dataset(
    stored: np.ndarray,
    z: float,
    *,
    patient_id: str = "P1",
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    instance: int = 1,
    image_type: Sequence[str] = AXIAL_PRIMARY,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    modality: str = "CT",
    slice_thickness: float = 2.5,
    description: str = "ABDOMEN",
    acquisition: int = 1,
    pixel_spacing: Sequence[float] = (0.7, 0.7),
) -> Dataset:
    """One uncompressed CT image; `stored` is the HU slice as stored (rows, columns)."""
    study_uid = study_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = f"Test^{patient_id}"
    ds.PatientSex = "O"
    ds.PatientBirthDate = "19700101"
    ds.StudyInstanceUID = study_uid
    ds.StudyID = "1"
    ds.StudyDate = "20240131"
    ds.StudyTime = "120000"
    ds.AccessionNumber = f"ACC{patient_id}"
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid])  # one frame of reference per study
    ds.Modality = modality
    ds.Manufacturer = "PHANTOM"
    ds.KVP = 120
    ds.ConvolutionKernel = "B30f"
    ds.ContrastBolusAgent = "IODINE"
    ds.SliceThickness = slice_thickness
    ds.ImageType = list(image_type)
    ds.InstanceNumber = instance
    ds.AcquisitionNumber = acquisition
    ds.ImagePositionPatient = [-100.0, -120.0, float(z)]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = (np.asarray(stored, dtype=np.int32) + 1024).astype(np.uint16).tobytes()
    return ds


def _jpeg_lossless_with_gdcm(path: Path) -> None:
    """Re-encode a file as JPEG Lossless SV1 (1.2.840.10008.1.2.4.70); pydicom cannot write this syntax."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    assert reader.Read(), path
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change(), path
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(path))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write(), path


def write_ct_series(
    folder: Path,
    hu: np.ndarray,
    z_mm: Sequence[float],
    *,
    patient_id: str = "P1",
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    image_type: Sequence[str] = AXIAL_PRIMARY,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    modality: str = "CT",
    slice_thickness: float = 2.5,
    description: str = "ABDOMEN",
    acquisition: int | Sequence[int] = 1,
    pixel_spacing: Sequence[float] = (0.7, 0.7),
    transfer_syntax: str = ExplicitVRLittleEndian,
    prefix: str = "IM",
) -> list[str]:
    """Write one file per slice (names without extension, in shuffled order); return SOPInstanceUIDs in z order."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    order = np.random.default_rng(series_number).permutation(len(z_mm))
    acquisitions = [acquisition] * len(z_mm) if isinstance(acquisition, int) else list(acquisition)
    uids = []
    for k, z in enumerate(z_mm):
        ds = ct_dataset(
            hu[k],
            z,
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=series_uid,
            series_number=series_number,
            instance=k + 1,
            image_type=image_type,
            orientation=orientation,
            modality=modality,
            slice_thickness=slice_thickness,
            description=description,
            acquisition=acquisitions[k],
            pixel_spacing=pixel_spacing,
        )
        path = folder / f"{prefix}{series_number:02d}{order[k]:04d}"
        if transfer_syntax not in (ExplicitVRLittleEndian, JPEGLosslessSV1):
            ds.compress(transfer_syntax)  # RLE, JPEG-LS and JPEG 2000 through pydicom's encoders
        ds.save_as(path, enforce_file_format=True)
        if transfer_syntax == JPEGLosslessSV1:
            _jpeg_lossless_with_gdcm(path)
        uids.append(str(ds.SOPInstanceUID))
    return uids


def body_phantom(n_slices: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Z x size x size HU: air, an elliptic body of fat (-100) with a muscle ring (50) and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot((yy - size / 2) / (size * 0.35), (xx - size / 2) / (size * 0.42))
    slice_hu = np.where(r < 1.0, -100, -1000).astype(np.int16)
    slice_hu[(r > 0.55) & (r < 0.7)] = 50
    noise = rng.integers(-5, 6, size=(n_slices, size, size)).astype(np.int16)
    return np.repeat(slice_hu[None], n_slices, axis=0) + noise
