"""`bodycomp demo`: the whole pipeline on phantom CT, on the CPU, with measured quality.

phantoms -> prepare-seg / prepare-slices -> train-seg / train-select -> evaluate on held-out series
-> estimate on held-out series. Everything lands in OUTPUT_DIR (built in a temporary sibling folder and
renamed into place at the end), with OUTPUT_DIR/summary.json holding the figures and stage timings.
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bodycomp_cli.io.atomic import atomic_output_dir, atomic_write_text

TISSUES = ("muscle", "subcutaneous_fat", "visceral_fat")
# The demo's promise on held-out phantom series (full run only), for every --seed: measured on seeds 0-4.
DICE_FLOOR = 0.93
L3_MEDIAN_FLOOR_MM = 5.0
WITHIN_10MM_FLOOR = 0.90


@dataclass(frozen=True)
class DemoSettings:
    series: int  # phantom series (20% test, 15% val, the rest train)
    phantom_size: int  # in-plane pixels of the phantom CT
    seg_slices: int  # labelled slices near L3 per series
    seg_size: int  # segmentation arrays and model input (multiple of 32)
    seg_arch: str
    seg_encoder: str
    seg_epochs: int
    seg_steps: int  # batches per epoch
    seg_batch: int
    seg_lr: float
    select_size: int
    select_arch: str
    select_epochs: int
    select_steps: int
    select_batch: int
    select_lr: float
    seed: int = 0
    gpus: int | None = 0  # the demo promises a CPU run; None lets the engine pick CUDA when present
    levels: tuple[str, ...] = ("L3",)  # the selection model's levels (L3 first: estimate measures at L3)
    # The phantoms' anatomy: realistic (thin abdominal wall, psoas, packed bowel; docs/phantoms.md) or classic
    # (the thick muscle ring the floor was first measured on, with half the segmentation epochs).
    anatomy: str = "realistic"
    # The phantom variants of the training series (`bodycomp phantoms --variants`; "" none), e.g. for models that
    # must cope with them (benchmarks/held_out.py). The held-out series get them as well.
    variants: str = ""


# Sized for a 2-core CPU: a light decoder (LinkNet) over ResNet-18 at 128 px for the tissues, and a
# ResNet-18 at 64 px for slice selection (the level is read from coarse anatomy).
FULL = DemoSettings(
    series=50, phantom_size=128, seg_slices=6,
    seg_size=128, seg_arch="linknet", seg_encoder="resnet18", seg_epochs=12, seg_steps=30, seg_batch=16, seg_lr=2e-3,
    select_size=64, select_arch="resnet18", select_epochs=8, select_steps=50, select_batch=32, select_lr=1e-3,
)  # fmt: skip
FAST = DemoSettings(
    series=6, phantom_size=64, seg_slices=2,
    seg_size=64, seg_arch="linknet", seg_encoder="resnet18", seg_epochs=2, seg_steps=3, seg_batch=8, seg_lr=2e-3,
    select_size=64, select_arch="resnet18", select_epochs=2, select_steps=4, select_batch=16, select_lr=1e-3,
)  # fmt: skip


class StageClock:
    """Seconds per stage, in the order they ran."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        self.console.rule(f"[bold]{name}[/]: {what}")
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 1)
        self.console.print(f"{name}: {self.seconds[name]:.1f} s")


def run_demo(
    output_dir: Path = Path("bodycomp-demo"),
    fast: bool = False,
    overwrite: bool = False,
    settings: DemoSettings | None = None,
    console: Console | None = None,
    seed: int | None = None,
) -> dict:
    """Run every stage on phantoms in output_dir; returns (and writes) summary.json's content.

    seed (default: the settings' own, 0) makes other phantoms and another training run of the same settings.
    Example: run_demo(Path("bodycomp-demo"), fast=True, seed=3)
    """
    settings = settings or (FAST if fast else FULL)
    if seed is not None:
        settings = replace(settings, seed=seed)
    console = console or Console(soft_wrap=True)
    clock = StageClock(console)
    started = time.perf_counter()
    with atomic_output_dir(Path(output_dir), overwrite=overwrite) as root:
        console.print(
            f"building in a temporary folder that becomes {output_dir} when the demo ends; "
            "the paths below are relative to it",
            highlight=False,
            markup=False,
        )
        # Every stage runs inside the temporary folder on relative paths, so what the stages print and record
        # (index CSVs, config.json's data_dir, evaluation.json) names files as they lie after the rename.
        with contextlib.chdir(root):
            summary = _run_stages(Path(), settings, clock, console)
        summary["seconds"] = {**clock.seconds, "total": round(time.perf_counter() - started, 1)}
        summary["mode"] = _mode(settings)
        summary["settings"] = asdict(settings)
        summary["quality_floor"] = _quality_floor(summary, enforced=summary["mode"] == "full")
        atomic_write_text(root / "summary.json", json.dumps(summary, indent=1) + "\n")
    console.print(summary_table(summary, Path(output_dir)))
    return summary


def _mode(settings: DemoSettings) -> str:
    """fast, full (the default settings, any seed) or custom."""
    unseeded = replace(settings, seed=0)
    return "fast" if unseeded == FAST else ("full" if unseeded == FULL else "custom")


def _run_stages(root: Path, s: DemoSettings, clock: StageClock, console: Console) -> dict:
    from bodycomp_cli.phantoms import generate_phantoms
    from bodycomp_cli.phantoms.variants import parse_prevalence

    with clock.stage("phantoms", f"{s.series} series at {s.phantom_size} px"):
        variants = parse_prevalence(s.variants) if s.variants else None
        generate_phantoms(
            root / "phantoms", s.series, s.seed, s.phantom_size, s.seg_slices, variants=variants, anatomy=s.anatomy
        )
    with clock.stage("prepare", "prepare-seg (train/val and held-out test slices) and prepare-slices"):
        _prepare(root, s, console)
    with clock.stage("train_seg", f"{s.seg_arch}/{s.seg_encoder} at {s.seg_size} px on the CPU"):
        seg_run = _train_seg(root, s)
    with clock.stage("train_select", f"{s.select_arch} at {s.select_size} px on the CPU"):
        select_run = _train_select(root, s)
    with clock.stage("evaluate", "Dice and L3 selection error on held-out (test) series"):
        seg_report, select_report = _evaluate(root, seg_run, select_run, s.gpus)
    with clock.stage("estimate", "estimate on the held-out series, checked against the phantoms' truth"):
        estimate = _estimate(root, s, seg_run, select_run)
    selections = {level: entry["selection"] or {} for level, entry in select_report["levels"].items()}
    return {
        "dice": {t: seg_report["tissues"][t]["dice_mean"] for t in TISSUES},
        "dice_pooled": {t: seg_report["tissues"][t]["dice_pooled"] for t in TISSUES},
        "slice_error_mm": {
            level: {
                "median": selection.get("median_mm"),
                "mean": selection.get("mean_mm"),
                "within_5mm": selection.get("within_5mm"),
                "within_10mm": selection.get("within_10mm"),
                "series": selection.get("n_series"),
            }
            for level, selection in selections.items()
        },
        "slice_error_slices": {
            level: {"median": selection.get("median_slices"), "mean": selection.get("mean_slices")}
            for level, selection in selections.items()
        },
        "held_out": {"seg_slices": seg_report["slices"], "series": selections["L3"].get("n_series")},
        "estimate": estimate,
    }


def _prepare(root: Path, s: DemoSettings, console: Console) -> None:
    from bodycomp_cli.prepare.progress import ProgressReporter
    from bodycomp_cli.prepare.seg import prepare_seg
    from bodycomp_cli.prepare.slices import prepare_slices

    phantoms, data = root / "phantoms", root / "data"
    for manifest, target in (("seg.csv", "seg"), ("seg_test.csv", "seg_test")):
        prepare_seg(phantoms / manifest, data / target, size=s.seg_size, progress=ProgressReporter(console, target))
    prepare_slices(phantoms / "series.csv", data / "slices", progress=ProgressReporter(console, "slices"))


def _engine(epochs: int, steps: int, batch: int, lr: float, s: DemoSettings):
    from bodycomp_cli.engine.config import EngineConfig

    return EngineConfig(
        epochs=epochs,
        batch_size=batch,
        learning_rate=lr,
        steps_per_epoch=steps,
        gpus=s.gpus,
        seed=s.seed,
        tensorboard=False,
    )


def _train_seg(root: Path, s: DemoSettings) -> Path:
    from bodycomp_cli.tasks.segmentation import SegmentationSettings, train_segmentation

    settings = SegmentationSettings(arch=s.seg_arch, encoder=s.seg_encoder, image_size=s.seg_size)
    engine = _engine(s.seg_epochs, s.seg_steps, s.seg_batch, s.seg_lr, s)
    return train_segmentation(root / "data" / "seg", root / "models", settings, engine, name="seg")


def _train_select(root: Path, s: DemoSettings) -> Path:
    from bodycomp_cli.tasks.slice_selection import SliceSelectionSettings, train_slice_selection

    settings = SliceSelectionSettings(levels=list(s.levels), arch=s.select_arch, image_size=s.select_size)
    engine = _engine(s.select_epochs, s.select_steps, s.select_batch, s.select_lr, s)
    return train_slice_selection(root / "data" / "slices", root / "models", settings, engine, name="select")


def _evaluate(root: Path, seg_run: Path, select_run: Path, gpus: int | None) -> tuple[dict, dict]:
    from bodycomp_cli.estimate.evaluate import EvaluateOptions, evaluate_run

    # seg_test holds only the test series' slices, all in its val arrays (see phantoms/writer.py).
    seg = evaluate_run(seg_run, root / "data" / "seg_test", root / "evaluation" / "seg", EvaluateOptions(gpus=gpus))
    select = evaluate_run(
        select_run, root / "data" / "slices", root / "evaluation" / "select", EvaluateOptions(split="test", gpus=gpus)
    )
    return seg, select


def _estimate(root: Path, s: DemoSettings, seg_run: Path, select_run: Path) -> dict:
    """Estimate on the test series, then score the chosen slice and its areas against the phantom truth."""
    from bodycomp_cli.estimate.inputs import collect_inputs
    from bodycomp_cli.estimate.models import load_estimator_models
    from bodycomp_cli.estimate.run import EstimateOptions, run_estimate

    phantoms = root / "phantoms"
    with open(phantoms / "series.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    manifest = phantoms / "series_test.csv"
    _write_rows(manifest, rows)
    models = load_estimator_models(select_run, [str(seg_run)], ["L3"], gpus=s.gpus)
    run_estimate(collect_inputs([manifest]), models, root / "estimate", EstimateOptions())
    with open(root / "estimate" / "results.csv", newline="") as handle:
        results = list(csv.DictReader(handle))
    truth = {row["series"]: row for row in rows}
    return score_estimates(results, truth, s.seed, s.phantom_size, s.anatomy, s.variants)


def score_estimates(
    results: list[dict],
    truth_rows: dict[str, dict],
    seed: int,
    size: int,
    anatomy: str = "realistic",
    variants: str = "",
) -> dict:
    """Per tissue, the mean absolute area error (%) of estimate against the phantom's true labels at the
    slice estimate chose, and the estimate's L3 error (mm) against the true L3 position (series whose L3 is
    not in the scan, as chest-only variants, are left out)."""
    from bodycomp_cli.phantoms import SeriesRenderer, series_params
    from bodycomp_cli.phantoms.variants import parse_prevalence

    prevalence = parse_prevalence(variants) if variants else None

    area_errors: dict[str, list[float]] = {t: [] for t in TISSUES}
    level_errors = []
    for row in results:
        index = int(row["series"].rsplit("_", 1)[1])
        params = series_params(seed, index, size, prevalence, anatomy=anatomy)
        if not row["L3_z_mm"] or not truth_rows[row["series"]]["z_L3"]:
            continue
        z = float(row["L3_z_mm"])
        level_errors.append(abs(z - float(truth_rows[row["series"]]["z_L3"])))
        _, labels = SeriesRenderer(params).render(z)
        pixel_cm2 = params.pixel_spacing_mm**2 / 100.0
        for label, tissue in enumerate(TISSUES, start=1):
            true_area = float((labels == label).sum()) * pixel_cm2
            if true_area > 0 and row.get(f"L3_{tissue}_area_cm2"):
                area_errors[tissue].append(100.0 * abs(float(row[f"L3_{tissue}_area_cm2"]) - true_area) / true_area)
    return {
        "series": len(results),
        "l3_error_mm_median": float(np.median(level_errors)) if level_errors else None,
        "area_error_pct_mean": {t: (float(np.mean(v)) if v else None) for t, v in area_errors.items()},
    }


def _write_rows(path: Path, rows: list[dict]) -> None:
    columns = list(rows[0].keys()) if rows else ["series", "path"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _quality_floor(summary: dict, enforced: bool) -> dict:
    dice = [summary["dice"][t] for t in TISSUES]
    l3 = summary["slice_error_mm"]["L3"]
    met = (
        all(d is not None and d >= DICE_FLOOR for d in dice)
        and l3["median"] is not None
        and l3["median"] <= L3_MEDIAN_FLOOR_MM
        and (l3["within_10mm"] or 0.0) >= WITHIN_10MM_FLOOR
    )
    return {
        "dice_min": DICE_FLOOR,
        "l3_median_mm_max": L3_MEDIAN_FLOOR_MM,
        "l3_within_10mm_min": WITHIN_10MM_FLOOR,
        "claimed": enforced,
        "met": met,
    }


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def summary_table(summary: dict, output_dir: Path) -> Table:
    """The rich table the demo ends with."""
    table = Table(title=f"bodycomp demo ({summary['mode']}) -> {output_dir}/summary.json")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for tissue in TISSUES:
        table.add_row(f"Dice {tissue} (held-out)", _fmt(summary["dice"][tissue], "{:.3f}"))
    l3 = summary["slice_error_mm"]["L3"]
    table.add_row("L3 error median / mean (mm)", f"{_fmt(l3['median'], '{:.1f}')} / {_fmt(l3['mean'], '{:.1f}')}")
    table.add_row("L3 error median (slices)", _fmt(summary["slice_error_slices"]["L3"]["median"], "{:.1f}"))
    table.add_row("L3 within 5 / 10 mm", f"{_fmt(l3['within_5mm'], '{:.0%}')} / {_fmt(l3['within_10mm'], '{:.0%}')}")
    for level, entry in summary["slice_error_mm"].items():
        if level != "L3":
            within = _fmt(entry["within_10mm"], "{:.0%}")
            table.add_row(f"{level} error median (mm) / within 10 mm", f"{_fmt(entry['median'], '{:.1f}')} / {within}")
    for tissue, error in summary["estimate"]["area_error_pct_mean"].items():
        table.add_row(f"estimate: {tissue} area error", _fmt(error, "{:.1f} %"))
    for stage, seconds in summary["seconds"].items():
        table.add_row(f"time: {stage}", f"{seconds:.1f} s")
    floor = summary["quality_floor"]
    verdict = "met" if floor["met"] else "NOT met"
    if not floor["claimed"]:
        verdict += " (no claim in --fast)"
    floor_text = (
        f"Dice >= {DICE_FLOOR}, L3 median <= {L3_MEDIAN_FLOOR_MM:.0f} mm, >= {WITHIN_10MM_FLOOR:.0%} within 10 mm"
    )
    table.add_row(f"quality floor ({floor_text})", verdict)
    return table
