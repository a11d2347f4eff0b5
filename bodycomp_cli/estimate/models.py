"""The two trained models estimate applies: `--select-model`, and `--seg-model` per level."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bodycomp_cli.errors import BodycompError

# `L3=RUN` or `T5,T8,T10=RUN`: level names before the first `=`, a run folder after it.
_LEVEL_MAPPING = re.compile(r"^\s*([A-Za-z0-9_]+(?:\s*,\s*[A-Za-z0-9_]+)*)\s*=(.+)$")


def parse_seg_model_specs(specs: Sequence[str], levels: Sequence[str]) -> dict[str, Path]:
    """Map every level to a segmentation run folder.

    A spec without `=` is the default for every level not named elsewhere; `L3=RUN` and
    `T5,T8,T10=RUN` name levels. Example: parse_seg_model_specs(["T5,T8=thorax", "abdomen"], ["T5", "T8", "L3"])
    """
    default: Path | None = None
    mapped: dict[str, Path] = {}
    for spec in specs:
        match = _LEVEL_MAPPING.match(spec)
        if match is None:
            if default is not None:
                raise BodycompError(
                    f"--seg-model {spec}: a second model for all levels (the first is {default}); "
                    "map levels with --seg-model L3=RUN_DIR"
                )
            default = Path(spec)
            continue
        for level in (name.strip() for name in match.group(1).split(",")):
            if level not in levels:
                raise BodycompError(f"--seg-model {spec}: level {level} is not estimated (levels: {', '.join(levels)})")
            if level in mapped:
                raise BodycompError(f"--seg-model {spec}: level {level} already has a model ({mapped[level]})")
            mapped[level] = Path(match.group(2).strip())
    missing = [level for level in levels if level not in mapped and default is None]
    if missing:
        raise BodycompError(
            f"no --seg-model for level {', '.join(missing)}: give one model for all levels, "
            f"map it ({missing[0]}=RUN_DIR), or leave the level out with -L"
        )
    return {level: mapped.get(level, default) for level in levels}  # type: ignore[misc]


def check_run_folder(run_dir: Path, option: str) -> None:
    """Refuse a run folder without config.json or a checkpoint, naming it, before anything is written."""
    if not run_dir.is_dir():
        raise BodycompError(f"{option} {run_dir}: no such run folder")
    if not (run_dir / "config.json").is_file():
        raise BodycompError(f"{option} {run_dir}: no config.json (not a bodycomp run folder)")
    if not any(run_dir.glob("checkpoint_*.pt")):
        raise BodycompError(f"{option} {run_dir}: no checkpoint (checkpoint_best.pt or checkpoint_last.pt)")


@dataclass(frozen=True)
class InferenceSetup:
    device: str  # "cpu" or "cuda:0"
    n_gpus: int  # DataParallel over cuda:0..n-1 when > 1
    description: str
    amp: bool = True  # autocast as core/amp.py decides, the CPU included (--no-amp turns it off)


def inference_setup(
    gpus: int | None, amp: bool = True, distributed: bool = False, cpu_amp: bool = True
) -> InferenceSetup:
    """Choose devices as training does (-g; default 1 GPU when CUDA is there, else the CPU).

    distributed (estimate under torchrun): this rank's own device, LOCAL_RANK's GPU or the CPU; without it a
    multi-process launch is refused (evaluate). Mixed precision is the engine's (core/amp.py): predict_*
    autocast on GPUs, and (cpu_amp) in bf16 on CPUs with bf16 instructions, unless amp=False.
    """
    from bodycomp_cli.core.amp import inference_amp
    from bodycomp_cli.engine.devices import resolve_devices

    setup = resolve_devices(gpus, single_process=not distributed)
    if setup.distributed:  # each rank its own device, no DDP wrapper: inference needs no gradient reduction
        description = f"{setup.world_size} torchrun processes, one device each (rank {setup.rank}: {setup.device})"
    else:
        description = setup.describe()
    if setup.device.type == "cpu":
        amp = amp and cpu_amp
    policy = inference_amp(setup.device, amp)
    if policy.enabled:
        description += f", {policy.describe(training=False)}"
    return InferenceSetup(str(setup.device), setup.n_gpus, description, amp)


def load_for_inference(run_dir: Path, option: str, task: str | None, setup: InferenceSetup) -> Any:
    """load_run on the chosen device (best checkpoint, else last), refusing a run of the wrong task."""
    from bodycomp_cli.engine.inference import load_run

    check_run_folder(run_dir, option)
    which = "best" if (run_dir / "checkpoint_best.pt").is_file() else "last"
    run = load_run(run_dir, device=setup.device, which=which)
    run.amp = setup.amp
    if task is not None and run.config.task != task:
        raise BodycompError(f"{option} {run_dir}: a {run.config.task} run, but this option needs a {task} run")
    if setup.n_gpus > 1:
        from bodycomp_cli.core.amp import inference_amp
        from bodycomp_cli.engine.devices import AutocastDataParallel

        amp = inference_amp(setup.device, setup.amp)  # the replicas' threads need predict_*'s autocast again
        run.model = AutocastDataParallel(run.model, device_ids=list(range(setup.n_gpus)), amp=amp)
    return run


@dataclass
class EstimatorModels:
    """The loaded runs, and the few facts estimate needs from their configs."""

    select_run: Any
    seg_runs: dict[str, Any]  # level -> loaded segmentation run (runs shared between levels are one object)
    levels: list[str]  # the levels estimated, in the selection model's output order
    level_columns: list[int]  # each level's column in the selection model's output
    seg_paths: dict[str, Path] = field(default_factory=dict)
    batch_size: int = 32
    setup: InferenceSetup = field(default_factory=lambda: InferenceSetup("cpu", 0, "the CPU"))

    @property
    def threshold_mm(self) -> float:
        return float(self.select_run.config.threshold)

    def slice_outputs(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        """Z x len(levels) sigmoid outputs of the selection model, in `levels` order."""
        from bodycomp_cli.engine.inference import predict_slice_offsets

        outputs = predict_slice_offsets(self.select_run, hu_volume, batch_size=self.batch_size, z_mm=z_mm)
        return np.asarray(outputs, dtype=np.float64)[:, self.level_columns]

    def classes(self, level: str) -> list[str]:
        return list(self.seg_runs[level].config.classes)

    def segment(self, level: str, hu_slices: np.ndarray) -> np.ndarray:
        """N x H x W uint8 labels from the level's segmentation model, at the slices' own size."""
        from bodycomp_cli.engine.inference import predict_segmentation

        return predict_segmentation(self.seg_runs[level], hu_slices, batch_size=self.batch_size)


def load_estimator_models(
    select_dir: Path,
    seg_specs: Sequence[str],
    levels: Sequence[str] | None,
    gpus: int | None = None,
    batch_size: int = 32,
    log: Callable[[str], None] | None = None,
    amp: bool = True,
    distributed: bool = False,
) -> EstimatorModels:
    """Load the selection run and each level's segmentation run, refusing wrong or incomplete folders.

    Example: load_estimator_models(Path("models/select"), ["models/seg"], ["L3"])
    """
    select_dir = Path(select_dir)
    check_run_folder(select_dir, "--select-model")
    for spec in seg_specs:
        # Check every folder before loading anything, so a typo in the last one costs no waiting.
        match = _LEVEL_MAPPING.match(spec)
        check_run_folder(Path(match.group(2).strip() if match else spec), "--seg-model")
    setup = inference_setup(gpus, amp, distributed)
    if log is not None:
        log(f"inference on {setup.description}")
    select_run = load_for_inference(select_dir, "--select-model", "slice_selection", setup)
    model_levels = list(select_run.config.levels)
    chosen = list(levels) if levels else model_levels
    unknown = [level for level in chosen if level not in model_levels]
    if unknown:
        raise BodycompError(
            f"-L {', '.join(unknown)}: the selection model {select_dir} predicts {', '.join(model_levels)} only"
        )
    seg_paths = parse_seg_model_specs(seg_specs, chosen)
    loaded: dict[Path, Any] = {}
    for path in dict.fromkeys(seg_paths.values()):
        loaded[path] = load_for_inference(path, "--seg-model", "segmentation", setup)
    return EstimatorModels(
        select_run=select_run,
        seg_runs={level: loaded[path] for level, path in seg_paths.items()},
        levels=chosen,
        level_columns=[model_levels.index(level) for level in chosen],
        seg_paths=seg_paths,
        batch_size=batch_size,
        setup=setup,
    )
