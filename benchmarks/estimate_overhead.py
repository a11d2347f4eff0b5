"""estimate's cost per series beyond the models, and that it does not grow with the cohort.

2,000 tiny series (8 slices of 32 x 32, .npz) run through run_estimate with trivial stand-in models (the
selection "model" is a sigmoid of z, segmentation a HU threshold), so what is timed is the pipeline:
reading, QC, slice choice, measurements, the per-series write of results.csv, and the outputs written at
the end (results.json, qc.csv, studies.csv, report.html). Previews are off: matplotlib's PNG would be most of it.

Then the overlap of reading with the models: gzipped NIfTI series (the gunzip costs CPU, as DICOM decoding
does) with a stand-in model that waits a fixed time per series, as a GPU computes while the CPU is free;
with --workers 1 the next series is read during that wait.

The baseline is the old way of saving progress, rewriting results.csv and results.json whole after every
series (emulated here), whose cost per series grows with the rows already written; the project appends one
record per series.

    python benchmarks/estimate_overhead.py          # 250, 500, 1000 and 2000 series, best of 3 (the new way)
    python benchmarks/estimate_overhead.py --tiny   # 10, 20, 40 series (smoke test)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_slices import cpu_model  # noqa: E402

import bodycomp_cli.estimate.run as estimate_run  # noqa: E402
from bodycomp_cli.estimate.inputs import collect_inputs  # noqa: E402
from bodycomp_cli.estimate.qc import QcSettings  # noqa: E402
from bodycomp_cli.estimate.report import write_results  # noqa: E402
from bodycomp_cli.estimate.row_files import RowFiles  # noqa: E402
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate  # noqa: E402

SLICES, SIZE, STEP_MM, LEVEL_Z_MM = 8, 32, 5.0, 17.0


class TrivialModels:
    """Stand-ins that cost next to nothing: the pipeline's own cost is what remains."""

    levels = ["L3"]
    threshold_mm = 10.0

    def slice_outputs(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-(z_mm - LEVEL_Z_MM) / self.threshold_mm)))[:, None]

    def classes(self, level: str) -> list[str]:
        return ["background", "muscle", "subcutaneous_fat", "visceral_fat"]

    def segment(self, level: str, hu_slices: np.ndarray) -> np.ndarray:
        labels = np.zeros(hu_slices.shape, dtype=np.uint8)
        labels[(hu_slices >= 30) & (hu_slices <= 100)] = 1
        labels[(hu_slices >= -190) & (hu_slices <= -30)] = 2
        return labels


def write_cohort(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    z_mm = np.arange(SLICES) * STEP_MM
    paths = []
    for index in range(count):
        hu = np.full((SLICES, SIZE, SIZE), -1000, dtype=np.int16)
        hu[:, 4:28, 4:28] = -100 + index % 7  # fat
        hu[:, 10:22, 10:22] = 40  # muscle
        path = folder / f"s{index:05d}.npz"
        np.savez(path, hu=hu, z_mm=z_mm, pixel_spacing=np.array([0.8, 0.8]))
        paths.append(path)
    return paths


class RewriteWhole(RowFiles):
    """The old way (emulated): every finished series rewrites results.csv and results.json from all rows."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows: list[dict[str, object]] = []

    def add_result(self, row: dict[str, object]) -> None:
        self.rows.append(row)
        write_results(self.folder, self.rows, self.layout)


def seconds_per_series(paths: list[Path], root: Path, workers: int, old_way: bool) -> float:
    inputs = collect_inputs(paths)
    options = EstimateOptions(previews=False, show_progress=False, qc=QcSettings(min_slices=SLICES), workers=workers)
    estimate_run.RowFiles = RewriteWhole if old_way else RowFiles  # type: ignore[misc]
    try:
        started = time.perf_counter()
        summary = run_estimate(inputs, TrivialModels(), root / f"out-{len(paths)}-{workers}-{old_way}", options)
        seconds = time.perf_counter() - started
    finally:
        estimate_run.RowFiles = RowFiles  # type: ignore[misc]
    assert len(summary.estimated) == len(paths), summary.qc_failed[:3]
    return seconds / len(paths)


class WaitingModels(TrivialModels):
    """Stand-ins whose selection pass waits `seconds`, as a GPU would compute while the CPU is free."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def slice_outputs(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return super().slice_outputs(hu_volume, z_mm)


def write_nifti_cohort(folder: Path, count: int, slices: int, size: int) -> list[Path]:
    """Gzipped NIfTI series (LPS-agnostic: only the reading cost matters here), z step 2.5 mm."""
    import nibabel as nib

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        hu = np.full((size, size, slices), -1000, dtype=np.int16)
        hu[size // 8 : -size // 8, size // 8 : -size // 8] = rng.integers(
            -150, 80, (size - 2 * (size // 8),) * 2 + (slices,)
        )
        image = nib.Nifti1Image(hu, np.diag([0.8, 0.8, 2.5, 1.0]))
        path = folder / f"n{index:03d}.nii.gz"
        nib.save(image, path)
        paths.append(path)
    return paths


def overlap_seconds(paths: list[Path], root: Path, workers: int, wait: float) -> float:
    options = EstimateOptions(previews=False, show_progress=False, qc=QcSettings(min_slices=8), workers=workers)
    started = time.perf_counter()
    summary = run_estimate(collect_inputs(paths), WaitingModels(wait), root / f"overlap-{workers}", options)
    assert len(summary.estimated) == len(paths), summary.qc_failed[:3]
    return time.perf_counter() - started


def cohort_table(sizes: list[int], repeat: int, tmp: Path) -> None:
    paths = write_cohort(tmp / "cohort", max(sizes))
    print(f"{'series':>7} {'old way ms/series':>18} {'--workers 0 ms/series':>22} {'--workers 1 ms/series':>22}")
    figures = {}
    for size in sizes:
        old = seconds_per_series(paths[:size], tmp, 0, old_way=True)
        figures[size] = [
            min(seconds_per_series(paths[:size], tmp / f"run{run}", workers, False) for run in range(repeat))
            for workers in (0, 1)
        ]
        print(f"{size:>7} {old * 1000:>18.2f} {figures[size][0] * 1000:>22.2f} {figures[size][1] * 1000:>22.2f}")
    first, last = figures[sizes[0]][0], figures[sizes[-1]][0]
    print(f"growth of the per-series cost, {sizes[0]} -> {sizes[-1]} series (--workers 0): {last / first:.2f}x")


def overlap_table(count: int, slices: int, size: int, wait: float, tmp: Path) -> None:
    nifti = write_nifti_cohort(tmp / "nifti", count, slices, size)
    read = min(overlap_seconds(nifti[:1], tmp / f"one{run}", 0, 0.0) for run in range(2))
    print(f"overlap: {count} series of {slices} x {size} x {size} (.nii.gz), model wait {wait:.2f} s per series")
    print(f"  one series read, QC and measured with no wait: {read:.2f} s")
    for workers in (0, 1):
        seconds = overlap_seconds(nifti, tmp / "overlap", workers, wait)
        print(f"  --workers {workers}: {seconds:.2f} s in all, {seconds / count:.2f} s per series")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="10, 20 and 40 series: a smoke test")
    parser.add_argument("--sizes", type=int, nargs="+", help="cohort sizes (default 250 500 1000 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="the new way's figures: best of this many runs")
    parser.add_argument("--overlap-only", action="store_true", help="only the reading / model overlap part")
    parser.add_argument("--wait", type=float, default=1.0, help="the overlap part's model time per series (s)")
    args = parser.parse_args()
    sizes = [] if args.overlap_only else args.sizes or ([10, 20, 40] if args.tiny else [250, 500, 1000, 2000])
    repeat = 1 if args.tiny else args.repeat
    print(f"machine: {cpu_model()}; series of {SLICES} x {SIZE} x {SIZE}, trivial models, no previews")
    print(f"load average before: {os.getloadavg()[0]:.1f}; the old way once, the new way best of {repeat}")
    with tempfile.TemporaryDirectory() as tmp:
        if sizes:
            cohort_table(sizes, repeat, Path(tmp))
        count, slices, size, wait = (4, 16, 64, 0.05) if args.tiny else (12, 120, 512, args.wait)
        overlap_table(count, slices, size, wait, Path(tmp))
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
