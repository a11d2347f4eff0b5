"""`bodycomp evaluate`: score a trained run on prepared data; the task comes from the run's config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bodycomp_cli.core.versions import versions
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.inference.placement import choose_placement
from bodycomp_cli.inference.run import check_run_folder
from bodycomp_cli.io.atomic import atomic_output_dir, refuse_existing_output
from bodycomp_cli.tasks import load_predictor


@dataclass(frozen=True)
class EvaluateOptions:
    split: str = "val"
    overwrite: bool = False
    gpus: int | None = None
    amp: bool | None = None  # --amp/--no-amp; None: autocast on CUDA, exact on the CPU (core/amp.choose_amp)
    batch_size: int = 16
    pixel_spacing_mm: float | None = None  # segmentation: square pixels of this size, for areas in cm^2
    show_progress: bool = True


def default_output_dir(run_dir: Path, split: str) -> Path:
    return Path(run_dir) / f"evaluation_{split}"


def evaluate_run(run_dir: Path, data_dir: Path, output_dir: Path | None, options: EvaluateOptions) -> dict:
    """Score the run on DATA_DIR's split with its task's own scoring; writes evaluation.json (and, for
    segmentation, worst-case PNGs) to output_dir.

    Example: evaluate_run(Path("models/seg"), Path("seg_data"), None, EvaluateOptions(split="val"))
    """
    from bodycomp_cli.estimate.run import progress_bar

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    check_run_folder(run_dir, "RUN_DIR")
    if not data_dir.is_dir():
        raise BodycompError(f"{data_dir}: no such data folder")
    placement = choose_placement(options.gpus, options.amp)  # refuses a multi-process launch first
    output_dir = Path(output_dir) if output_dir is not None else default_output_dir(run_dir, options.split)
    refuse_existing_output(output_dir, options.overwrite)
    predictor = load_predictor(run_dir, placement, "RUN_DIR", batch_size=options.batch_size)
    config = predictor.run.config
    report: dict = {"task": config.task, "run": str(run_dir), "data": str(data_dir), "split": options.split}
    # Machine-readable: "cpu", "cuda:0" or "cuda:0..N-1" (DataParallel), and the autocast dtype or null.
    report["device"] = placement.device if placement.n_gpus <= 1 else f"cuda:0..{placement.n_gpus - 1}"
    report["autocast"] = str(placement.amp.dtype).removeprefix("torch.") if placement.amp.enabled else None
    report["versions"] = versions()  # as the run folder and `bodycomp --version` report them
    with atomic_output_dir(output_dir, options.overwrite) as tmp, progress_bar(options.show_progress) as progress:
        report |= predictor.score(data_dir, options.split, tmp, options, progress)
        (tmp / "evaluation.json").write_text(json.dumps(report, indent=1) + "\n")
    report["output"] = str(output_dir)
    return report
