"""`bodycomp evaluate`: score a trained run on prepared data; the task comes from the run's config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycomp_cli.core.runconfig import read_run_config
from bodycomp_cli.core.versions import versions
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.models import check_run_folder, inference_setup, load_for_inference
from bodycomp_cli.io.atomic import atomic_output_dir, refuse_existing_output


@dataclass(frozen=True)
class EvaluateOptions:
    split: str = "val"
    overwrite: bool = False
    gpus: int | None = None
    amp: bool = True
    batch_size: int = 16
    pixel_spacing_mm: float | None = None  # segmentation: square pixels of this size, for areas in cm^2
    show_progress: bool = True


def default_output_dir(run_dir: Path, split: str) -> Path:
    return Path(run_dir) / f"evaluation_{split}"


def evaluate_run(run_dir: Path, data_dir: Path, output_dir: Path | None, options: EvaluateOptions) -> dict:
    """Score the run on DATA_DIR's split; writes evaluation.json (and worst-case PNGs) to output_dir.

    Example: evaluate_run(Path("models/seg"), Path("seg_data"), None, EvaluateOptions(split="val"))
    """
    from bodycomp_cli.engine.inference import predict_segmentation, predict_slice_offsets_8bit
    from bodycomp_cli.estimate.evaluate_seg import evaluate_segmentation
    from bodycomp_cli.estimate.evaluate_select import evaluate_slice_selection
    from bodycomp_cli.estimate.run import progress_bar

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    check_run_folder(run_dir, "RUN_DIR")
    if not data_dir.is_dir():
        raise BodycompError(f"{data_dir}: no such data folder")
    setup = inference_setup(options.gpus, options.amp, cpu_amp=False)  # refuses a multi-process launch first
    config = read_run_config(run_dir)
    if config.amp:  # validated under autocast: on the CPU too, score as validation did (bf16 where it can)
        setup = inference_setup(options.gpus, options.amp)
    task = config.task
    output_dir = Path(output_dir) if output_dir is not None else default_output_dir(run_dir, options.split)
    refuse_existing_output(output_dir, options.overwrite)
    run = load_for_inference(run_dir, "RUN_DIR", task, setup)
    report: dict = {"task": task, "run": str(run_dir), "data": str(data_dir), "split": options.split}
    report["device"] = setup.description
    report["versions"] = versions()  # as the run folder and `bodycomp --version` report them
    with atomic_output_dir(output_dir, options.overwrite) as tmp, progress_bar(options.show_progress) as progress:
        if task == "segmentation":

            def predict(images: np.ndarray) -> np.ndarray:
                return predict_segmentation(run, images, batch_size=options.batch_size)

            report |= evaluate_segmentation(
                run, predict, data_dir, options.split, tmp, options.batch_size, options.pixel_spacing_mm, progress
            )
        else:

            def predict(images: np.ndarray, z_mm: np.ndarray | None = None) -> np.ndarray:
                # The PNGs are the 8-bit slices the model was trained on: fed as they are, no HU round trip.
                outputs = predict_slice_offsets_8bit(run, images, batch_size=options.batch_size, z_mm=z_mm)
                return np.asarray(outputs, np.float64)

            report |= evaluate_slice_selection(run, predict, data_dir, options.split, options.batch_size, progress)
        (tmp / "evaluation.json").write_text(json.dumps(report, indent=1) + "\n")
    report["output"] = str(output_dir)
    return report
