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
from bodycomp_cli.estimate.inputs import SeriesInput
from bodycomp_cli.estimate.measure import STATISTICS, measure_tissues
from bodycomp_cli.estimate.prefetch import read_ahead
from bodycomp_cli.estimate.preview import save_preview
from bodycomp_cli.estimate.qa_page import write_qa_page
from bodycomp_cli.estimate.qc import QcSettings
from bodycomp_cli.estimate.ranks import Ranks
from bodycomp_cli.estimate.report import SELECTION_BY_MODEL, SELECTION_SKIPPED, Layout, write_qc, write_results
from bodycomp_cli.estimate.row_files import (
    EarlierRows,
    RowFiles,
    remove_rank_files,
    rows_done_so_far,
    take_up_earlier_rows,
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
    workers: int = 0  # processes reading the next series ahead (0: each series read here, when its turn comes)


@dataclass
class EstimateSummary:
    output_dir: Path
    estimated: list[str] = field(default_factory=list)  # series done in this run
    rows: list[dict[str, object]] = field(default_factory=list)  # their results.csv rows
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
def _working_folder(output_dir: Path, options: EstimateOptions, ranks: Ranks) -> Iterator[Path]:
    # Results are written into the folder as each series finishes, so a killed cohort run keeps what it
    # did and --resume continues it. Replacing an earlier run (--overwrite) instead builds in a temporary
    # sibling that replaces the old folder only at the end, so a failure leaves the old results intact.
    # Under torchrun rank 0 prepares the folder and tells the others which it is (or why there is none).
    if not ranks.is_main:
        yield Path(ranks.from_main(lambda: None))
        return
    with contextlib.ExitStack() as stack:

        def prepare() -> str:
            remove_dead_temps(output_dir, recursive=True)  # what a killed run left (half-written files)
            resume = options.resume or ranks.alone  # a --shard task adds to what the other tasks write
            check_output_dir(output_dir, resume, options.overwrite)
            if not resume and output_dir.is_dir() and any(output_dir.iterdir()):
                return str(stack.enter_context(atomic_output_dir(output_dir, overwrite=True)))
            output_dir.mkdir(parents=True, exist_ok=True)
            return str(output_dir)

        yield Path(ranks.from_main(prepare))


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
    inputs: Sequence[SeriesInput],
    models: Models,
    output_dir: Path,
    options: EstimateOptions,
    ranks: Ranks | None = None,
) -> EstimateSummary:
    """Estimate every series into output_dir; QC failures go to qc.csv and are skipped.

    Under torchrun every rank calls it with the same inputs and `ranks` (from joined_ranks()): each estimates
    its share of the series not yet done, and rank 0 writes the merged outputs; rank 0's summary counts every
    rank's series. Raises BodycompError only when every series fails QC. Example:
    run_estimate(collect_inputs([Path("cohort.csv")]), load_estimator_models(...), Path("out"), EstimateOptions())
    """
    ranks = ranks or Ranks()
    output_dir = Path(output_dir)
    layout = measurement_layout(models)
    summary = EstimateSummary(output_dir=output_dir)
    started = time.perf_counter()
    names = [entry.series for entry in inputs]
    show = options.show_progress and ranks.is_main
    with _working_folder(output_dir, options, ranks) as folder, progress_bar(show) as progress:
        earlier = ranks.from_main(lambda: _earlier_rows(folder, layout, names, options.resume, ranks))
        if earlier.names != names:  # every rank must split the same list, or series would be lost or doubled
            raise BodycompError("this rank found other series than rank 0 in the inputs: give every rank the same")
        done = {str(row["series"]) for row in earlier.rows}
        mine = ranks.shard(inputs)
        summary.already_done = [entry.series for entry in (mine if ranks.alone else inputs) if entry.series in done]
        todo = [entry for entry in mine if entry.series not in done]
        files = RowFiles(folder, layout, ranks.rank if ranks.distributed else None)
        task = progress.add_task("estimate", total=len(summary.already_done) + len(todo))
        progress.advance(task, len(summary.already_done))
        for read in read_ahead(todo, options.qc, options.workers):
            entry = read.entry
            progress.update(task, description=f"estimate {entry.series}")
            if read.reason is not None:
                failure = {"series": entry.series, "reason": read.reason, "path": str(entry.path), **_uids(read.dicom)}
                files.add_qc_failure(failure)
                summary.qc_failed.append(failure)
                progress.console.print(f"QC: skipped {entry.series}: {read.reason}", markup=False, highlight=False)
                progress.advance(task)
                continue
            volume, dicom = read.volume, read.dicom
            if volume.pixel_spacing is None:
                progress.console.print(
                    f"{entry.series}: no pixel spacing in {entry.path}; areas are left blank", markup=False
                )
            row, details = estimate_series(volume, models, options)
            identifiers = dicom.identifiers if dicom is not None else dict.fromkeys(IDENTIFIER_COLUMNS, "")
            row = {"series": entry.series, "n_slices": volume.hu.shape[0], **identifiers, **row}
            for note in _write_series_files(folder, file_stem(entry.series), volume, details, options, dicom):
                progress.console.print(note, markup=False, highlight=False, soft_wrap=True)
            files.add_result(row)  # the series is done once its row is in: --resume skips it
            summary.rows.append(row)
            summary.slices += volume.hu.shape[0]
            progress.advance(task)
        if ranks.alone:  # one task of --shard K/N: the other tasks may still run; a later --resume merges
            summary.estimated = [str(row["series"]) for row in summary.rows]
            summary.seconds = time.perf_counter() - started
            return summary
        _merge_ranks(summary, ranks.gather((summary.rows, summary.qc_failed, summary.slices)), names)
        ranks.from_main(lambda: _write_outputs(folder, earlier, summary, names, models.levels, layout))
    summary.seconds = time.perf_counter() - started
    return summary


@dataclass
class _Earlier(EarlierRows):
    names: list[str] = field(default_factory=list)  # the series rank 0 was given, in order


def _earlier_rows(folder: Path, layout: Layout, names: list[str], resume: bool, ranks: Ranks) -> _Earlier:
    if ranks.alone:  # --shard K/N: read what is done, change nothing (the other tasks are writing)
        return _Earlier(rows_done_so_far(folder, layout), [], names)
    earlier = take_up_earlier_rows(folder, layout, set(names)) if resume else EarlierRows()
    return _Earlier(earlier.rows, earlier.qc_rows, names)


def _merge_ranks(summary: EstimateSummary, parts: list[tuple], names: list[str]) -> None:
    """On rank 0: every rank's rows, QC failures and slices in the summary, rows in input order."""
    if not parts:
        return
    order = {name: index for index, name in enumerate(names)}
    summary.rows = sorted((row for part in parts for row in part[0]), key=lambda row: order[str(row["series"])])
    summary.qc_failed = sorted((row for part in parts for row in part[1]), key=lambda row: order[row["series"]])
    summary.slices = sum(part[2] for part in parts)
    summary.estimated = [str(row["series"]) for row in summary.rows]


def _write_outputs(
    folder: Path,
    earlier: EarlierRows,
    summary: EstimateSummary,
    names: list[str],
    levels: Sequence[str],
    layout: Layout,
) -> None:
    """Rank 0, at the end: results, QC, studies and the QA page from every row; the ranks' own files go.

    Rows are in input order (those of earlier runs' other series first), so a resumed run, whichever ranks
    did which series, writes what an uninterrupted one does.
    """
    order = {name: index for index, name in enumerate(names)}
    rows = sorted(earlier.rows + summary.rows, key=lambda row: order.get(str(row["series"]), -1))
    qc_rows = sorted(earlier.qc_rows + summary.qc_failed, key=lambda row: order.get(row["series"], -1))
    write_results(folder, rows, layout)
    write_qc(folder, qc_rows)
    write_studies(folder, study_table(rows, qc_rows, levels))
    write_qa_page(folder, rows, qc_rows, layout, _preview_paths(folder, rows, levels))
    remove_rank_files(folder)
    if not summary.estimated and not summary.already_done:
        failed = len(summary.qc_failed)
        raise BodycompError(f"every series failed QC ({failed}); the reasons are in {summary.output_dir / 'qc.csv'}")


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
