"""One series through the models: the slice chosen per level, its segmentation and measurements, its files."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from bodycomp_cli.core.selection import SliceChoice, select_level_slice
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.dicom_seg import write_dicom_seg
from bodycomp_cli.estimate.field_of_view import tissues_touching_edge
from bodycomp_cli.estimate.level_presence import positions_in_scan, series_presence
from bodycomp_cli.estimate.measure import STATISTICS, measure_tissues
from bodycomp_cli.estimate.muscle_quality import DEFAULT_HU_RANGES, gate_labels, muscle_quality
from bodycomp_cli.estimate.preview import save_preview
from bodycomp_cli.estimate.qc import QcSettings
from bodycomp_cli.estimate.report import SELECTION_BY_MODEL, SELECTION_SKIPPED, TISSUE_FIELDS, Layout
from bodycomp_cli.estimate.review import Segmentation, review_reasons
from bodycomp_cli.estimate.rib_cage import inside_rib_cage
from bodycomp_cli.estimate.vertebra_count import LumbarCount, is_lumbar, lumbar_count
from bodycomp_cli.io.atomic import atomic_write_bytes
from bodycomp_cli.io.dicom_tree import DicomSeries
from bodycomp_cli.tasks.slice_selection.evidence import SelectionEvidence

if TYPE_CHECKING:
    from bodycomp_cli.io.volumes import Volume


class Models(Protocol):
    """What the pipeline needs of the models (EstimatorModels, or a fake in the tests)."""

    levels: list[str]

    @property
    def threshold_mm(self) -> float: ...

    def slice_outputs(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> np.ndarray: ...

    def classes(self, level: str) -> list[str]: ...

    def segment(self, level: str, hu_slices: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class EstimateOptions:
    range_mm: float = 0.0  # also segment slices within +-range_mm of the chosen one
    save_masks: bool = False
    previews: bool = True
    resume: bool = False
    overwrite: bool = False
    qc: QcSettings = field(default_factory=QcSettings)
    show_progress: bool = True
    dicom_seg: bool = False  # write dicom_seg/<series>_<LEVEL>.dcm for DICOM inputs
    workers: int = 0  # processes reading the next series ahead (0: each series read here, when its turn comes)
    hu_ranges: str = DEFAULT_HU_RANGES  # "alberta": count only pixels in each tissue's HU range (muscle_quality.py)
    cutoffs: str = "martin2013"  # sarcopenia / myosteatosis cut-offs flagged at L3 (cutoffs.py)
    per_vertebra: bool = False  # also measure every slice of each level's vertebra (vertebra.py)
    volumes: tuple[tuple[str, str], ...] = ()  # --volume ranges (volumes.py)
    dicom_sr: bool = False  # write dicom_sr/<series>.dcm, a TID 1500 measurement report (dicom_sr.py)


def file_stem(series: str) -> str:
    """A series id made safe as a file name (`a/b c` -> `a_b_c`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", series).strip("._") or "series"


def measurement_layout(models: Models) -> Layout:
    return [(level, list(models.classes(level)[1:])) for level in models.levels]


def estimate_series(
    volume: Volume, models: Models, options: EstimateOptions
) -> tuple[dict[str, object], dict[str, dict]]:
    """Row of results.csv for one volume, and per level what the previews and masks need.

    A one-slice volume (allowed by --min-slices 1) has nothing to choose from: the selection model is not
    run, its slice is measured for every level, and the row says so (as the original's --no_slice_selection).
    A level the model places outside the scanned z-range gets blank measures, `{level}_reason` = `not in scan`,
    and no slice, preview, mask or SEG (estimate/level_presence.py).
    """
    skip_selection = volume.hu.shape[0] == 1
    evidence = None if skip_selection else _selection_evidence(models, volume)
    outputs = None if evidence is None else evidence.columns(models.levels).outputs
    presences = {}
    if evidence is not None:
        caged = inside_rib_cage(volume.hu, volume.pixel_spacing)
        presences = series_presence(evidence, volume.z_mm, models.threshold_mm, caged)
    row: dict[str, object] = {"slice_selection": SELECTION_SKIPPED if skip_selection else SELECTION_BY_MODEL}
    positions = positions_in_scan(presences)
    count = LumbarCount(None, "one slice: no level was predicted")
    if evidence is not None:
        count = lumbar_count(volume.z_mm, evidence.phase, positions)
    row.update(count.cells())
    details: dict[str, dict] = {}
    for column, level in enumerate(models.levels):
        level_z_mm = None  # the model's predicted centre of the level (none without selection)
        if outputs is None:
            choice = SliceChoice(index=0, zero_crossings=None, smoothed=None)
        else:
            presence = presences[level]
            if not presence.in_scan:
                row.update(_absent_level(level, models.classes(level)[1:], presence.reason))
                continue
            choice = select_level_slice(outputs[:, column], volume.z_mm, models.threshold_mm)
            level_z_mm = presence.level_z_mm
        z_chosen = float(volume.z_mm[choice.index])
        # --range: every slice within +-MM of the chosen one; the chosen slice always counts.
        near = np.flatnonzero(np.abs(volume.z_mm - z_chosen) <= options.range_mm)
        indices = near if choice.index in near else np.array([choice.index])
        labels, expected = _segment(models, level, np.asarray(volume.hu[indices]))
        classes = models.classes(level)
        quality = muscle_quality(volume.hu[indices], labels, classes, volume.pixel_spacing)  # before any gating
        row.update({f"{level}_{name}": value for name, value in quality.items()})
        gated = gate_labels(volume.hu[indices], labels, classes, options.hu_ranges)
        stats = measure_tissues(volume.hu[indices], gated, classes, volume.pixel_spacing)
        row[f"{level}_slice_index"] = int(choice.index)
        row[f"{level}_z_mm"] = z_chosen
        row[f"{level}_zero_crossings"] = None if choice.zero_crossings is None else int(choice.zero_crossings)
        row[f"{level}_sop_instance_uid"] = volume.sop_instance_uids[choice.index] if volume.sop_instance_uids else ""
        row[f"{level}_reason"] = ""
        touching = tissues_touching_edge(volume.hu[indices], labels, classes)
        for tissue, values in stats.items():
            for stat in STATISTICS:
                row[f"{level}_{tissue}_{stat}"] = values[stat]
            row[f"{level}_{tissue}_touches_edge"] = touching[tissue]
        at = int(np.flatnonzero(indices == choice.index)[0])
        chosen_labels = labels[at]
        expected_at = None if expected is None else expected[at]
        seg = Segmentation(
            volume.hu[choice.index], chosen_labels, classes, expected_at, touching, volume.pixel_spacing,
            _shift_agreement(models, level, volume.hu[choice.index]),
        )  # fmt: skip
        review = review_reasons(
            evidence, level, volume.z_mm, models.threshold_mm, z_chosen, positions, seg,
            count.review_reason if is_lumbar(level) else "",
        )  # fmt: skip
        row[f"{level}_review"], row[f"{level}_confidence"] = review.text, round(review.confidence, 3)
        row[f"{level}_review_cues"] = review.measures
        details[level] = {
            "choice": choice,
            "labels": chosen_labels,
            "classes": classes,
            "indices": indices,
            "range_labels": labels,
            "level_z_mm": level_z_mm,
        }
    return row, details


def _selection_evidence(models: Models, volume: Volume) -> SelectionEvidence:
    """The selection run's evidence; a Models without selection_evidence (the tests' fakes) gives its outputs,
    which are then the CNN's as well."""
    if hasattr(models, "selection_evidence"):
        return models.selection_evidence(volume.hu, volume.z_mm)
    outputs = np.asarray(models.slice_outputs(volume.hu, volume.z_mm), dtype=np.float64)
    return SelectionEvidence(list(models.levels), outputs, outputs)


def _segment(models: Models, level: str, hu_slices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels, and the Dice the model expects per slice and class where the models give it."""
    if hasattr(models, "segment_with_expected_dice"):
        return models.segment_with_expected_dice(level, hu_slices)
    return models.segment(level, hu_slices), None


def _shift_agreement(models: Models, level: str, hu_slice: np.ndarray) -> float | None:
    """The chosen slice's lowest tissue Dice between its labels and those of the slice moved and moved back, where
    the models give it (SegmentationPredictor.shift_agreement); None otherwise or when no tissue was labelled."""
    if not hasattr(models, "shift_agreement"):
        return None
    value = float(models.shift_agreement(level, np.asarray(hu_slice)[None])[0])
    return value if np.isfinite(value) else None


def _absent_level(level: str, tissues: list[str], reason: str) -> dict[str, object]:
    """A level's cells when it has no slice: every measure blank, and why."""
    cells: dict[str, object] = {f"{level}_{name}": None for name in ("slice_index", "z_mm", "zero_crossings")}
    cells[f"{level}_sop_instance_uid"] = ""
    cells[f"{level}_reason"] = reason
    cells[f"{level}_review"], cells[f"{level}_confidence"], cells[f"{level}_review_cues"] = "", None, ""
    for tissue in tissues:
        cells |= dict.fromkeys((f"{level}_{tissue}_{stat}" for stat in TISSUE_FIELDS), None)
    return cells


def write_series_files(
    folder: Path,
    stem: str,
    volume: Volume,
    details: dict[str, dict],
    options: EstimateOptions,
    dicom: DicomSeries | None,
) -> list[str]:
    """Write the masks, previews and DICOM SEG files of one series; return notes for the console."""
    notes: list[str] = []
    for level, detail in details.items():
        choice = detail["choice"]
        if options.dicom_seg and dicom is not None and volume.sop_instance_uids:
            try:
                write_dicom_seg(
                    folder / "dicom_seg" / f"{stem}_{level}.dcm",
                    dicom,
                    [volume.sop_instance_uids[index] for index in detail["indices"]],
                    detail["range_labels"],
                    detail["classes"],
                    level,
                )
            except BodycompError as error:  # the measurements stand; only the SEG file is missing
                notes.append(str(error))
        if options.save_masks:
            buffer = io.BytesIO()
            np.save(buffer, detail["labels"].astype(np.uint8))
            atomic_write_bytes(folder / "masks" / f"{stem}_{level}.npy", buffer.getvalue())
        if options.previews:
            save_preview(
                folder / "previews" / f"{stem}_{level}.png",
                volume.hu[choice.index],
                detail["labels"],
                detail["classes"],
                choice.smoothed,
                volume.z_mm,
                choice.index,
                f"{stem}  {level}: slice {choice.index}, z = {volume.z_mm[choice.index]:.1f} mm",
                volume.pixel_spacing,
            )
    return notes
