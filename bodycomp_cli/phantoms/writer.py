"""Write a phantom data set: CT series for prepare-slices and labelled slices for prepare-seg.

OUTPUT_DIR/
  series/<id>.npz            hu (Z x S x S int16), z_mm (Z, ascending), pixel_spacing (row_mm, col_mm),
                             imat (Z x S x S bool: the intermuscular fat truth, see render.RenderedSlice)
  series.csv                 series, path, z_T5 ... z_L5 (blank: level not covered), split (train/val/test),
                             variants (the series' variant names, `;`-separated; see variants.py)
  slices/<id>_<LEVEL>_<k>.npy, ..._mask.npy and ..._imat.npy   2-D HU (int16), labels (uint8) and the
                             intermuscular fat truth (bool; those pixels are labelled 1, muscle, in the mask)
  seg.csv, seg_test.csv      slices near L3, labels 0-3: image, mask, id, group (= series), split
  seg_thoracic.csv, seg_thoracic_test.csv        slices near T5/T8/T10, labels 0-2 (no visceral fat)
  phantoms.json              the parameters of every series (the ground truth behind the images), its
                             variants' truth included (rib_pairs, presacral, lumbar_count, metal, ...)

The *_test manifests hold the slices of the test series. Their split is `val`, so that `prepare-seg` puts
them all in the val arrays, which `evaluate --split val` scores: that is how the demo measures Dice on
series that no model saw in training.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bodycomp_cli.core.workers import cores_per_rank
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.atomic import atomic_output_dir
from bodycomp_cli.phantoms import tissues as T
from bodycomp_cli.phantoms.anatomy import LEVELS, THORACIC_LEVELS, vertebra_index
from bodycomp_cli.phantoms.render import SeriesRenderer
from bodycomp_cli.phantoms.variants import build_variants, draw_variants
from bodycomp_cli.phantoms.variation import ANATOMIES, SeriesParams, sample_series

SEG_COLUMNS = ("image", "mask", "id", "group", "split")
SPLITS = ("train", "val", "test")


@dataclass
class PhantomSet:
    """What generate_phantoms wrote."""

    output_dir: Path
    series: int
    slices: int
    seg_slices: int
    split_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def series_id(index: int) -> str:
    return f"phantom_{index:04d}"


def series_params(
    seed: int, index: int, size: int, prevalence: dict[str, float] | None = None, anatomy: str = "realistic"
) -> SeriesParams:
    """The parameters of series `index`: they depend only on (seed, index, size, prevalence, anatomy), never
    on the others. prevalence: {variant name: probability} (variants.parse_prevalence); None: no variants.
    anatomy: "realistic" or "classic" (variation.ANATOMIES)."""
    rng = np.random.default_rng([seed, index])
    coverage = str(rng.choice(["full", "full", "full", "full", "full", "no_t5", "no_l5"]))
    # The variants' own stream: the same draws under any prevalence (see variants.draw_variants).
    variant_rng = np.random.default_rng([seed, index, 53])
    variants = build_variants(draw_variants(variant_rng, prevalence), coverage, variant_rng)
    return sample_series(rng, size, variants=variants, anatomy=anatomy)


def assign_splits(n_series: int, seed: int, val_frac: float = 0.15, test_frac: float = 0.2) -> list[str]:
    """Split series (never slices) into train/val/test; val and test get one series each at least when
    there are enough series to spare one."""
    n_test = max(1, round(test_frac * n_series)) if n_series >= 3 else 0
    n_val = max(1, round(val_frac * n_series)) if n_series >= 2 else 0
    order = np.random.default_rng([seed, 991]).permutation(n_series)
    splits = ["train"] * n_series
    for rank, index in enumerate(order):
        if rank < n_test:
            splits[index] = "test"
        elif rank < n_test + n_val:
            splits[index] = "val"
    return splits


def slice_positions(params: SeriesParams) -> np.ndarray:
    """z (mm) of every slice, ascending (feet -> head), from the pelvis to the top of the scan."""
    top, bottom = float(params.spine.z_at(params.v_top)), float(params.spine.z_at(params.v_bottom))
    count = int(np.floor((top - bottom) / params.slice_spacing_mm)) + 1
    return np.round(bottom + np.arange(count) * params.slice_spacing_mm, 3)


def covered_levels(params: SeriesParams, z_mm: np.ndarray) -> dict[str, float | None]:
    """z of each level whose vertebral centre lies inside the scanned range, else None."""
    out: dict[str, float | None] = {}
    for level in LEVELS:
        z = params.spine.z_of(level)
        out[level] = round(z, 3) if z_mm[0] <= z <= z_mm[-1] else None
    return out


def _write_series(task: tuple[Path, int, int, int, int, str, dict[str, float] | None, str]) -> dict:
    """Render and write one series and its labelled slices (runs in a worker process)."""
    root, seed, index, size, seg_slices, split, prevalence, anatomy = task
    params = series_params(seed, index, size, prevalence, anatomy)
    renderer = SeriesRenderer(params)
    noise_rng = np.random.default_rng([seed, index, 7])
    z_mm = slice_positions(params)
    hu = np.empty((len(z_mm), size, size), np.int16)
    imat = np.empty((len(z_mm), size, size), bool)
    for k, z in enumerate(z_mm):
        rendered = renderer.render_slice(float(z))
        hu[k] = renderer.add_noise(rendered.hu, noise_rng)
        imat[k] = rendered.imat
    sid = series_id(index)
    spacing = np.array([params.pixel_spacing_mm, params.pixel_spacing_mm])
    _save_npz(root / "series" / f"{sid}.npz", hu=hu, z_mm=z_mm.astype(np.float64), pixel_spacing=spacing, imat=imat)

    seg_rows: dict[str, list[dict]] = {"abdominal": [], "thoracic": []}
    picks = [("L3", k) for k in range(seg_slices)] + [(level, 0) for level in THORACIC_LEVELS]
    for level, k in picks:
        # Anywhere within the middle of the vertebra, as a reader would pick "the L3 slice".
        step = abs(params.spine.z_of(level) - float(params.spine.z_at(vertebra_index(level) + 1)))
        z = params.spine.z_of(level) + noise_rng.uniform(-0.35, 0.35) * step
        rendered = renderer.render_slice(z)
        labels = rendered.labels
        if level in THORACIC_LEVELS:
            labels = np.where(labels == T.VISCERAL_FAT, T.BACKGROUND, labels).astype(np.uint8)
        name = f"{sid}_{level}_{k}"
        np.save(root / "slices" / f"{name}.npy", renderer.add_noise(rendered.hu, noise_rng))
        np.save(root / "slices" / f"{name}_mask.npy", labels)
        np.save(root / "slices" / f"{name}_imat.npy", rendered.imat)
        row = {"image": f"slices/{name}.npy", "mask": f"slices/{name}_mask.npy", "id": name, "group": sid}
        seg_rows["thoracic" if level in THORACIC_LEVELS else "abdominal"].append(row)
    levels = covered_levels(params, z_mm)
    summary = asdict(params)
    summary["variants"]["lumbar_count"] = params.variants.lumbar_count
    summary.update(series=sid, split=split, slices=len(z_mm), levels_z_mm=levels)
    series_row = {
        "series": sid,
        "path": f"series/{sid}.npz",
        **{f"z_{lv}": levels[lv] for lv in LEVELS},
        "variants": ";".join(params.variants.names),
    }
    return {"series_row": series_row, "seg_rows": seg_rows, "summary": summary, "split": split}


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed, but at zlib level 1: noisy HU barely compresses better at level 6, which
    took most of the generation time."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asarray(array), allow_pickle=False)


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
    return buffer.getvalue()


def generate_phantoms(
    output_dir: Path,
    n_series: int = 20,
    seed: int = 0,
    size: int = 512,
    seg_slices: int = 4,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    variants: dict[str, float] | None = None,
    anatomy: str = "realistic",
) -> PhantomSet:
    """Write n_series phantom CT series and their labelled slices to output_dir (see the module docstring).

    variants: {name: prevalence} of the phantom variants (variants.parse_prevalence); None: none.
    anatomy: "realistic" (separate abdominal wall muscles, L3 areas of published adults) or "classic".
    Example: generate_phantoms(Path("phantoms"), n_series=40, size=128, variants={"arms_down": 0.1})
    """
    if n_series < 1:
        raise BodycompError(f"--series must be at least 1, got {n_series}")
    if not 32 <= size <= 1024:
        raise BodycompError(f"--size must be between 32 and 1024 pixels, got {size}")
    if seg_slices < 1:
        raise BodycompError(f"--seg-slices must be at least 1, got {seg_slices}")
    if anatomy not in ANATOMIES:
        raise BodycompError(f"--anatomy must be one of {', '.join(ANATOMIES)}, got {anatomy!r}")
    workers = max(1, min(workers or cores_per_rank(), n_series))
    started = time.perf_counter()
    splits = assign_splits(n_series, seed)
    with atomic_output_dir(Path(output_dir), overwrite=overwrite) as root:
        (root / "series").mkdir()
        (root / "slices").mkdir()
        tasks = [(root, seed, i, size, seg_slices, splits[i], variants, anatomy) for i in range(n_series)]
        results = _run(tasks, workers, progress)
        _write_manifests(root, results)
    return PhantomSet(
        output_dir=Path(output_dir),
        series=n_series,
        slices=sum(r["summary"]["slices"] for r in results),
        seg_slices=sum(len(r["seg_rows"]["abdominal"]) + len(r["seg_rows"]["thoracic"]) for r in results),
        split_counts={s: splits.count(s) for s in SPLITS},
        seconds=time.perf_counter() - started,
    )


def _run(tasks: list[tuple], workers: int, progress: bool) -> list[dict]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("phantoms"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        job = bar.add_task("series", total=len(tasks))
        if workers == 1:
            results = []
            for task in tasks:
                results.append(_write_series(task))
                bar.advance(job)
            return results
        with ProcessPoolExecutor(max_workers=workers, mp_context=_start_method()) as pool:
            results = []
            # map keeps the order of the series, so the manifests do not depend on the worker count.
            for result in pool.map(_write_series, tasks):
                results.append(result)
                bar.advance(job)
            return results


def _start_method() -> multiprocessing.context.BaseContext:
    # fork is instant, but not safe once torch's thread pools exist (the demo and the tests load torch).
    if "torch" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    return multiprocessing.get_context("fork")


def _write_manifests(root: Path, results: list[dict]) -> None:
    series_columns = ["series", "path", *[f"z_{lv}" for lv in LEVELS], "split", "variants"]
    series_rows = [{**r["series_row"], "split": r["split"]} for r in results]
    (root / "series.csv").write_text(_csv_text(series_rows, series_columns))
    for kind, stem in (("abdominal", "seg"), ("thoracic", "seg_thoracic")):
        held_in = [{**row, "split": r["split"]} for r in results if r["split"] != "test" for row in r["seg_rows"][kind]]
        held_out = [{**row, "split": "val"} for r in results if r["split"] == "test" for row in r["seg_rows"][kind]]
        (root / f"{stem}.csv").write_text(_csv_text(held_in, list(SEG_COLUMNS)))
        (root / f"{stem}_test.csv").write_text(_csv_text(held_out, list(SEG_COLUMNS)))
    summaries = [r["summary"] for r in results]
    (root / "phantoms.json").write_text(json.dumps({"levels": list(LEVELS), "series": summaries}, indent=1))
