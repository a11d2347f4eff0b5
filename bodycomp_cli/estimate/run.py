"""The estimate pipeline: per series QC, slice choice per level, segmentation, measurements, outputs."""

from __future__ import annotations

import contextlib
import io
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from bodycomp_cli.core.selection import SliceChoice, select_level_slice
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.dicom_seg import write_dicom_seg
from bodycomp_cli.estimate.field_of_view import tissues_touching_edge
from bodycomp_cli.estimate.inputs import SeriesInput, read_series
from bodycomp_cli.estimate.measure import STATISTICS, measure_tissues
from bodycomp_cli.estimate.preview import save_preview
from bodycomp_cli.estimate.qa_page import write_qa_page
from bodycomp_cli.estimate.qc import QcSettings, qc_failure
from bodycomp_cli.estimate.report import (
    SELECTION_BY_MODEL,
    SELECTION_SKIPPED,
    Layout,
    read_previous_qc,
    read_previous_results,
    write_qc,
    write_results,
)
from bodycomp_cli.estimate.studies import study_table, write_studies
from bodycomp_cli.io.atomic import atomic_output_dir, atomic_write_bytes, refuse_existing_output, remove_dead_temps
from bodycomp_cli.io.dicom_tree import IDENTIFIER_COLUMNS, DicomSeries

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


@dataclass
class EstimateSummary:
    output_dir: Path
    estimated: list[str] = field(default_factory=list)  # series done in this run
    already_done: list[str] = field(default_factory=list)  # skipped by --resume
    qc_failed: list[dict[str, str]] = field(default_factory=list)
    slices: int = 0  # slices passed through the selection model in this run
    seconds: float = 0.0


def file_stem(series: str) -> str:
    """A series id made safe as a file name (`a/b c` -> `a_b_c`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", series).strip("._") or "series"


def check_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an existing non-empty output folder unless --resume or --overwrite (before any work)."""
    if resume and overwrite:
        raise BodycompError("--resume and --overwrite contradict each other: choose one")
    if resume:
        if output_dir.exists() and not output_dir.is_dir():
            raise BodycompError(f"{output_dir}: exists and is not a folder")
        return
    refuse_existing_output(output_dir, overwrite)


@contextlib.contextmanager
def _working_folder(output_dir: Path, options: EstimateOptions) -> Iterator[Path]:
    # Results are written into the folder as each series finishes, so a killed cohort run keeps what it
    # did and --resume continues it. Replacing an earlier run (--overwrite) instead builds in a temporary
    # sibling that replaces the old folder only at the end, so a failure leaves the old results intact.
    remove_dead_temps(output_dir, recursive=True)  # what a killed run left (half-written results, previews)
    check_output_dir(output_dir, options.resume, options.overwrite)
    if not options.resume and output_dir.is_dir() and any(output_dir.iterdir()):
        with atomic_output_dir(output_dir, overwrite=True) as tmp:
            yield tmp
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    yield output_dir


def measurement_layout(models: Models) -> Layout:
    return [(level, list(models.classes(level)[1:])) for level in models.levels]


def estimate_series(
    volume: Volume, models: Models, options: EstimateOptions
) -> tuple[dict[str, object], dict[str, dict]]:
    """Row of results.csv for one volume, and per level what the previews and masks need.

    A one-slice volume (allowed by --min-slices 1) has nothing to choose from: the selection model is not
    run, its slice is measured for every level, and the row says so (as the original's --no_slice_selection).
    """
    skip_selection = volume.hu.shape[0] == 1
    outputs = None if skip_selection else models.slice_outputs(volume.hu, volume.z_mm)
    row: dict[str, object] = {"slice_selection": SELECTION_SKIPPED if skip_selection else SELECTION_BY_MODEL}
    details: dict[str, dict] = {}
    for column, level in enumerate(models.levels):
        if outputs is None:
            choice = SliceChoice(index=0, zero_crossings=None, smoothed=None)
        else:
            choice = select_level_slice(outputs[:, column], volume.z_mm, models.threshold_mm)
        z_chosen = float(volume.z_mm[choice.index])
        # --range: every slice within +-MM of the chosen one; the chosen slice always counts.
        near = np.flatnonzero(np.abs(volume.z_mm - z_chosen) <= options.range_mm)
        indices = near if choice.index in near else np.array([choice.index])
        labels = models.segment(level, np.asarray(volume.hu[indices]))
        classes = models.classes(level)
        stats = measure_tissues(volume.hu[indices], labels, classes, volume.pixel_spacing)
        row[f"{level}_slice_index"] = int(choice.index)
        row[f"{level}_z_mm"] = z_chosen
        row[f"{level}_zero_crossings"] = None if choice.zero_crossings is None else int(choice.zero_crossings)
        row[f"{level}_sop_instance_uid"] = volume.sop_instance_uids[choice.index] if volume.sop_instance_uids else ""
        touching = tissues_touching_edge(volume.hu[indices], labels, classes)
        for tissue, values in stats.items():
            for stat in STATISTICS:
                row[f"{level}_{tissue}_{stat}"] = values[stat]
            row[f"{level}_{tissue}_touches_edge"] = touching[tissue]
        chosen_labels = labels[int(np.flatnonzero(indices == choice.index)[0])]
        details[level] = {
            "choice": choice,
            "labels": chosen_labels,
            "classes": classes,
            "indices": indices,
            "range_labels": labels,
        }
    return row, details


def _write_series_files(
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


def run_estimate(
    inputs: Sequence[SeriesInput], models: Models, output_dir: Path, options: EstimateOptions
) -> EstimateSummary:
    """Estimate every series into output_dir; QC failures go to qc.csv and are skipped.

    Raises BodycompError only when every series fails QC. Example:
    run_estimate(collect_inputs([Path("cohort.csv")]), load_estimator_models(...), Path("out"), EstimateOptions())
    """
    output_dir = Path(output_dir)
    layout = measurement_layout(models)
    summary = EstimateSummary(output_dir=output_dir)
    started = time.perf_counter()
    with _working_folder(output_dir, options) as folder, progress_bar(options.show_progress) as progress:
        rows = read_previous_results(folder, layout) if options.resume else []
        done = {str(row["series"]) for row in rows}
        names = {entry.series for entry in inputs}
        qc_rows = [row for row in read_previous_qc(folder) if row["series"] not in names] if options.resume else []
        task = progress.add_task("estimate", total=len(inputs))
        for entry in inputs:
            progress.update(task, description=f"estimate {entry.series}")
            if entry.series in done:
                summary.already_done.append(entry.series)
                progress.advance(task)
                continue
            dicom = entry.dicom
            try:
                volume, dicom = read_series(entry, options.qc)
                reason = qc_failure(volume, options.qc)
            except BodycompError as error:  # filtered, unreadable, mixed-series or non-axial: skipped, not fatal
                reason = str(error)
            if reason is not None:
                failure = {"series": entry.series, "reason": reason, "path": str(entry.path), **_uids(dicom)}
                summary.qc_failed.append(failure)
                qc_rows.append(failure)
                write_qc(folder, qc_rows)
                progress.console.print(f"QC: skipped {entry.series}: {reason}", markup=False, highlight=False)
                progress.advance(task)
                continue
            if volume.pixel_spacing is None:
                progress.console.print(
                    f"{entry.series}: no pixel spacing in {entry.path}; areas are left blank", markup=False
                )
            row, details = estimate_series(volume, models, options)
            identifiers = dicom.identifiers if dicom is not None else dict.fromkeys(IDENTIFIER_COLUMNS, "")
            rows.append({"series": entry.series, "n_slices": volume.hu.shape[0], **identifiers, **row})
            for note in _write_series_files(folder, file_stem(entry.series), volume, details, options, dicom):
                progress.console.print(note, markup=False, highlight=False, soft_wrap=True)
            write_results(folder, rows, layout)
            summary.estimated.append(entry.series)
            summary.slices += volume.hu.shape[0]
            progress.advance(task)
        write_results(folder, rows, layout)
        write_qc(folder, qc_rows)
        write_studies(folder, study_table(rows, qc_rows, models.levels))
        write_qa_page(folder, rows, qc_rows, layout, _preview_paths(folder, rows, models.levels))
        if not summary.estimated and not summary.already_done:
            failed = len(summary.qc_failed)
            raise BodycompError(f"every series failed QC ({failed}); the reasons are in {output_dir / 'qc.csv'}")
    summary.seconds = time.perf_counter() - started
    return summary


def _preview_paths(folder: Path, rows: Sequence[dict[str, object]], levels: Sequence[str]) -> dict:
    """series -> level -> its preview's path relative to the output folder (those that exist)."""
    paths: dict[str, dict[str, str]] = {}
    for row in rows:
        for level in levels:
            relative = f"previews/{file_stem(str(row['series']))}_{level}.png"
            if (folder / relative).is_file():
                paths.setdefault(str(row["series"]), {})[level] = relative
    return paths


def _uids(dicom: DicomSeries | None) -> dict[str, str]:
    """The identifiers a qc.csv row carries for a DICOM series (blank for other inputs)."""
    keys = ("patient_id", "study_instance_uid", "series_instance_uid")
    return {key: (dicom.identifiers[key] if dicom is not None else "") for key in keys}


@contextlib.contextmanager
def progress_bar(show: bool) -> Iterator:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not show,
    )
    with progress:
        yield progress
