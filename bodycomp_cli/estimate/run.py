"""The estimate pipeline over a cohort: series read ahead, shared among ranks, rows appended, outputs at the end.

What is done to one series is in series.py; where its row goes while the run goes on, in row_files.py."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.clinical import clinical_row
from bodycomp_cli.estimate.corrections import write_corrections
from bodycomp_cli.estimate.dicom_sr import write_series_report
from bodycomp_cli.estimate.follow_up import patient_rows, write_patients
from bodycomp_cli.estimate.inputs import SeriesInput
from bodycomp_cli.estimate.over_range import range_measures
from bodycomp_cli.estimate.prefetch import read_ahead
from bodycomp_cli.estimate.qa_page import write_qa_page
from bodycomp_cli.estimate.ranks import Ranks
from bodycomp_cli.estimate.report import Layout, result_columns, write_qc, write_results
from bodycomp_cli.estimate.row_files import (
    EarlierRows,
    RowFiles,
    remove_rank_files,
    rows_done_so_far,
    take_up_earlier_rows,
)
from bodycomp_cli.estimate.series import (
    EstimateOptions,
    Models,
    estimate_series,
    file_stem,
    measurement_layout,
    write_series_files,
)
from bodycomp_cli.estimate.studies import study_table, write_studies
from bodycomp_cli.estimate.volumes import gather_volumes, write_series_volumes
from bodycomp_cli.io.atomic import atomic_output_dir, refuse_existing_output, remove_dead_temps
from bodycomp_cli.io.dicom_tree import IDENTIFIER_COLUMNS, DicomSeries

__all__ = ["EstimateOptions", "EstimateSummary", "Models", "check_output_dir", "file_stem", "run_estimate"]


@dataclass
class EstimateSummary:
    output_dir: Path
    estimated: list[str] = field(default_factory=list)  # series done in this run
    rows: list[dict[str, object]] = field(default_factory=list)  # their results.csv rows
    already_done: list[str] = field(default_factory=list)  # skipped by --resume
    qc_failed: list[dict[str, str]] = field(default_factory=list)
    slices: int = 0  # slices passed through the selection model in this run
    seconds: float = 0.0


def check_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an existing non-empty output folder unless --resume or --overwrite (before any work)."""
    if resume and overwrite:
        raise BodycompError("--resume and --overwrite contradict each other: choose one")
    if resume:
        if output_dir.exists() and not output_dir.is_dir():
            raise BodycompError(f"{output_dir}: exists and is not a folder")
        return
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:  # an earlier estimate, to continue?
        raise BodycompError(
            f"{output_dir}: output folder exists and is not empty "
            "(--resume continues the estimate in it, --overwrite replaces it)"
        )
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
            row |= clinical_row(row, entry.manifest_facts, dicom, models.levels, options.hu_ranges, options.cutoffs)
            cells, volume_rows = range_measures(entry.series, volume, models, row, details, options, progress)
            row |= cells
            write_series_volumes(folder, file_stem(entry.series), volume_rows)
            notes = write_series_files(folder, file_stem(entry.series), volume, details, options, dicom)
            if options.dicom_sr and dicom is not None:
                notes += write_series_report(folder, file_stem(entry.series), dicom, row, layout, options.dicom_seg)
            for note in notes:
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
        by_series = {entry.series: entry for entry in inputs}
        segs = options.dicom_seg
        ranks.from_main(lambda: _write_outputs(folder, earlier, summary, by_series, models.levels, layout, segs))
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
    inputs: dict[str, SeriesInput],
    levels: Sequence[str],
    layout: Layout,
    dicom_seg: bool = False,
) -> None:
    """Rank 0, at the end: results, QC, studies, the QA page (and with --dicom-seg corrections.csv) from every
    row; the ranks' own files go.

    Rows are in input order (those of earlier runs' other series first), so a resumed run, whichever ranks
    did which series, writes what an uninterrupted one does.
    """
    order = {name: index for index, name in enumerate(inputs)}
    rows = sorted(earlier.rows + summary.rows, key=lambda row: order.get(str(row["series"]), -1))
    qc_rows = sorted(earlier.qc_rows + summary.qc_failed, key=lambda row: order.get(row["series"], -1))
    write_results(folder, rows, layout)
    write_qc(folder, qc_rows)
    write_studies(folder, study_table(rows, qc_rows, levels))
    write_patients(folder, patient_rows(rows, result_columns(layout), levels))
    gather_volumes(folder, [file_stem(str(row["series"])) for row in rows])
    write_qa_page(folder, rows, qc_rows, layout, _preview_paths(folder, rows, levels))
    if dicom_seg:
        write_corrections(folder, rows, layout, inputs)
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
