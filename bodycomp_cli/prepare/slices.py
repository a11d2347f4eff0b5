"""prepare-slices: CT series -> images/<split>/NNNNNN.png (8-bit, windowed), meta/<split>.csv and dataset.json.

Work is spread over processes one series at a time (so each worker holds at most one volume), and
over encoder threads inside a process when there are fewer series than workers. Each
worker writes its slices under a scratch name; the main process then renames them to contiguous
per-split ids in manifest order, so the output does not depend on the number of workers.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import queue
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bodycomp_cli.core.preprocess import window_hu
from bodycomp_cli.core.runconfig import Window
from bodycomp_cli.core.workers import cores_per_rank
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.atomic import atomic_output_dir
from bodycomp_cli.io.manifests import read_manifest, refuse_blank_or_duplicate, resolve_path, splits_for_rows
from bodycomp_cli.io.vertebrae import LevelRequest, resolve_levels
from bodycomp_cli.io.volumes import read_volume
from bodycomp_cli.prepare.description import checked_window, write_dataset_description
from bodycomp_cli.prepare.png import encode_gray8_png
from bodycomp_cli.prepare.progress import ProgressReporter
from bodycomp_cli.prepare.slice_levels import level_requests

SPLITS = ("train", "val", "test")
WORK_DIR = ".work"
PNG_COMPRESS_LEVEL = 1  # lossless either way; with Z_RLE about 4x faster to write than imageio's default


@dataclass(frozen=True)
class SeriesJob:
    index: int  # manifest row
    series: str
    path: Path
    split: str
    levels: LevelRequest  # where the row's levels come from; read beside the volume


@dataclass
class SeriesResult:
    index: int
    z_mm: np.ndarray
    level_z: dict[str, float | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class SlicesSummary:
    series: dict[str, int]
    slices: dict[str, int]
    workers: int


def default_workers() -> int:
    """All cores this process may run on (its share of them under torchrun)."""
    return cores_per_rank()


@functools.lru_cache(maxsize=4)
def _int16_lut(level: float, width: float) -> np.ndarray:
    """window_hu of every int16 value, indexed by the value's uint16 bit pattern (no int widening)."""
    table = window_hu(np.arange(-32768, 32768, dtype=np.int32), level, width)
    return np.concatenate([table[32768:], table[:32768]])


def window_volume(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """window_hu, bit for bit, but through a lookup table for int16 volumes (several times faster)."""
    if hu.dtype == np.int16:
        # Every uint16 index is inside the 65536-entry table, so mode="clip" only skips bounds checks.
        return np.take(_int16_lut(level, width), hu.view(np.uint16), mode="clip")
    return window_hu(hu, level, width)


def write_series_slices(
    job: SeriesJob,
    work_dir: Path,
    level: float,
    width: float,
    report: Callable[[str, int], None],
    threads: int = 1,
) -> SeriesResult:
    """Read one series, window it and write one PNG per slice (z ascending) under work_dir/<row>/.

    With threads > 1 slices are encoded by a thread pool: zlib, numpy's take and file writes release
    the GIL, so fewer series than cores still keep every core busy without reading a series twice.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = read_volume(job.path)
    level_z, level_warnings = resolve_levels(job.levels, volume)
    n_slices = volume.hu.shape[0]
    report("total", n_slices)
    target = work_dir / f"{job.index:06d}"
    target.mkdir(parents=True)

    def write_slice(k: int) -> None:
        image = window_volume(volume.hu[k], level, width)
        (target / f"{k:06d}.png").write_bytes(encode_gray8_png(image, PNG_COMPRESS_LEVEL))

    with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
        run = pool.map if pool is not None else map
        for start in range(0, n_slices, 32):
            chunk = range(start, min(start + 32, n_slices))
            for _ in run(write_slice, chunk):
                pass
            report("done", len(chunk))
    return SeriesResult(job.index, volume.z_mm, level_z, [str(w.message) for w in caught] + level_warnings)


# Set in each worker process by the pool initializer: where progress messages go.
_PROGRESS_QUEUE = None


def _init_worker(progress_queue) -> None:  # noqa: ANN001
    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = progress_queue


def _worker(job: SeriesJob, work_dir: Path, level: float, width: float, threads: int) -> SeriesResult:
    report = lambda kind, n: _PROGRESS_QUEUE.put((kind, n))  # noqa: E731
    return write_series_slices(job, work_dir, level, width, report, threads)


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds; after torch is loaded (its thread pools) a fresh server is safer.
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and "torch" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _run_jobs(
    jobs: Sequence[SeriesJob], work_dir: Path, level: float, width: float, workers: int, progress: ProgressReporter
) -> list[SeriesResult]:
    """One result per job, in job order: a process per series up to `workers`, the rest as encoder threads."""
    processes = min(workers, len(jobs))
    threads = -(-workers // processes)
    if processes == 1:
        return [write_series_slices(job, work_dir, level, width, progress.update, threads) for job in jobs]
    context = _pool_context()
    messages = context.Queue()
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_init_worker, initargs=(messages,)) as pool:
        futures = [pool.submit(_worker, job, work_dir, level, width, threads) for job in jobs]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_EXCEPTION)
            _drain(messages, progress)
            failed = [future for future in done if future.exception() is not None]
            if failed:
                pool.shutdown(wait=True, cancel_futures=True)
                raise failed[0].exception()
        _drain(messages, progress)
        return [future.result() for future in futures]


def _drain(messages, progress: ProgressReporter) -> None:  # noqa: ANN001
    while True:
        try:
            kind, count = messages.get_nowait()
        except queue.Empty:
            return
        progress.update(kind, count)


def read_series_manifest(
    manifest: Path,
    levels: Sequence[str] | None,
    val_frac: float,
    test_frac: float,
    seed: int,
    vertebra_labels: str | None = None,
    slice_numbers: str = "index",
) -> tuple[list[SeriesJob], list[str]]:
    """Validate the whole manifest before any image work; return the jobs and the levels used."""
    table = read_manifest(manifest, ["series", "path"])
    requests, levels = level_requests(manifest, table, levels, vertebra_labels, slice_numbers)
    series_ids = list(table["series"])
    refuse_blank_or_duplicate(manifest, series_ids, "series")
    splits = splits_for_rows(manifest, table, SPLITS, series_ids, {"val": val_frac, "test": test_frac}, seed)
    jobs = []
    for index, row in table.iterrows():
        path = resolve_path(manifest, index, "path", row["path"])
        jobs.append(SeriesJob(index, row["series"], path, splits[index], requests[index]))
    return jobs, levels


def prepare_slices(
    manifest: Path,
    output_dir: Path,
    levels: Sequence[str] | None = None,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    seed: int = 0,
    window_level: float = Window().level,
    window_width: float = Window().width,
    workers: int | None = None,
    overwrite: bool = False,
    progress: ProgressReporter | None = None,
    vertebra_labels: str | None = None,
    slice_numbers: str = "index",
) -> SlicesSummary:
    """Build the slice-selection layout (images/<split>/*.png, meta/<split>.csv) from a series manifest.

    OUTPUT/dataset.json records the window, the levels and the counts, so training reads the window from the data.
    Levels come from z_<LEVEL> (mm), slice_<LEVEL> (a slice number, read as `slice_numbers` says: "index" or
    "instance") or a `vertebrae` cell (labels numbered by `vertebra_labels`, see bodycomp_cli.io.vertebrae).
    Example: `prepare_slices(Path("series.csv"), Path("slices"), levels=["L3"], workers=2)`
    """
    window = checked_window(window_level, window_width)
    if workers is not None and workers < 1:
        raise BodycompError(f"--workers must be at least 1, got {workers}")
    jobs, levels = read_series_manifest(
        Path(manifest), levels, val_frac, test_frac, seed, vertebra_labels, slice_numbers
    )
    workers = workers or default_workers()
    progress = progress or ProgressReporter(None)
    with atomic_output_dir(Path(output_dir), overwrite) as tmp:
        work_dir = tmp / WORK_DIR
        with progress:
            results = _run_jobs(jobs, work_dir, window.level, window.width, workers, progress)
        for result in results:
            for message in result.warnings:
                progress.warn(message)
        summary = _assemble(tmp, work_dir, jobs, results, levels)
        work_dir.rmdir()
        counts = {split: {"series": summary.series[split], "slices": summary.slices[split]} for split in summary.series}
        write_dataset_description(tmp, "slice_selection", window, counts, manifest, levels=list(levels))
    summary.workers = workers
    return summary


def _assemble(
    out: Path, work_dir: Path, jobs: Sequence[SeriesJob], results: Sequence[SeriesResult], levels: Sequence[str]
) -> SlicesSummary:
    """Rename scratch PNGs to contiguous per-split ids (manifest order, z ascending) and write meta CSVs."""
    used = [split for split in SPLITS if split in ("train", "val") or any(job.split == split for job in jobs)]
    summary = SlicesSummary(series=dict.fromkeys(used, 0), slices=dict.fromkeys(used, 0), workers=0)
    (out / "meta").mkdir()
    for split in used:
        image_dir = out / "images" / split
        image_dir.mkdir(parents=True)
        rows = []
        for job, result in zip(jobs, results, strict=True):
            if job.split != split:
                continue
            series_dir = work_dir / f"{job.index:06d}"
            for slice_index, z in enumerate(result.z_mm):
                os.replace(series_dir / f"{slice_index:06d}.png", image_dir / f"{len(rows):06d}.png")
                # In 0.1 um steps (4 decimals): -205.881, not the float difference's -205.88100000000003.
                offsets = {
                    f"ZOffset_{level}": (
                        np.nan if result.level_z[level] is None else round(float(z) - result.level_z[level], 4)
                    )
                    for level in levels
                }
                row = {"series": job.series, "slice_index": slice_index, "z_mm": round(float(z), 4), **offsets}
                rows.append(row)
            series_dir.rmdir()
            summary.series[split] += 1
        columns = ["series", "slice_index", "z_mm", *(f"ZOffset_{level}" for level in levels)]
        pd.DataFrame(rows, columns=columns).to_csv(out / "meta" / f"{split}.csv")
        summary.slices[split] = len(rows)
    return summary
