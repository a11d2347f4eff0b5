"""load_run: a trained run folder -> its model on a placement, ready to predict; never changed afterwards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bodycomp_cli.core.runconfig import CONFIG_FILE, RunConfig, read_run_config
from bodycomp_cli.engine.checkpoint import BEST, LAST, load_checkpoint
from bodycomp_cli.engine.devices import AutocastDataParallel, strip_prefix
from bodycomp_cli.errors import BodycompError, reason
from bodycomp_cli.inference.placement import Placement, choose_placement

CHECKPOINTS = {"best": BEST, "last": LAST}
ModelBuilder = Callable[[RunConfig], torch.nn.Module]


@dataclass(frozen=True)
class LoadedRun:
    model: torch.nn.Module  # in eval mode, on the placement's device (DataParallel over its GPUs when > 1)
    config: RunConfig  # the run's config.json
    run_dir: Path
    placement: Placement

    @property
    def device(self) -> torch.device:
        return torch.device(self.placement.device)

    def autocast(self):
        """The placement's autocast context for a forward pass (a no-op at full precision)."""
        return self.placement.amp.autocast()


def check_run_folder(run_dir: Path, option: str) -> None:
    """Refuse a run folder without config.json or a checkpoint, naming it, before anything is written."""
    if not run_dir.is_dir():
        raise BodycompError(f"{option} {run_dir}: no such run folder")
    if not (run_dir / CONFIG_FILE).is_file():
        raise BodycompError(f"{option} {run_dir}: no config.json (not a bodycomp run folder)")
    if not any((run_dir / name).is_file() for name in CHECKPOINTS.values()):
        raise BodycompError(f"{option} {run_dir}: no checkpoint (checkpoint_best.pt or checkpoint_last.pt)")


def load_run(
    run_dir: Path,
    build_model: ModelBuilder,
    placement: Placement | None = None,
    which: str | None = None,
    config: RunConfig | None = None,
) -> LoadedRun:
    """Rebuild a run's model with build_model(config.json) and load checkpoint_{which}.pt (which: best or last;
    None: best if there is one, else last). placement: None is the CPU in full precision.

    Example: run = load_run(Path("models/v1"), task_model_builder, choose_placement(0)); most callers use
    bodycomp_cli.tasks.load_predictor, which picks the builder from config.json.
    """
    run_dir = Path(run_dir)
    placement = placement or choose_placement(0)
    if which is None:
        which = "best" if (run_dir / BEST).is_file() else "last"
    if which not in CHECKPOINTS:
        raise BodycompError(f"checkpoint {which!r}: valid choices: {', '.join(CHECKPOINTS)}")
    checkpoint_path = run_dir / CHECKPOINTS[which]
    config = config or read_run_config(run_dir)
    if not checkpoint_path.is_file():
        raise BodycompError(f"{run_dir}: has no {checkpoint_path.name} (train it first, or pick another run)")
    try:  # a config.json edited or damaged by hand can name an unknown model or lack a key
        model = build_model(config)
    except BodycompError:
        raise
    except Exception as error:
        raise BodycompError(
            f"{run_dir / CONFIG_FILE}: cannot rebuild the model ({type(error).__name__}: {reason(error)})"
        ) from None
    checkpoint = load_checkpoint(checkpoint_path, map_location=placement.device)
    try:
        model.load_state_dict(strip_prefix(checkpoint["model"]))
    except (KeyError, TypeError, RuntimeError) as error:  # weights of another model, or a damaged dict
        raise BodycompError(
            f"{checkpoint_path}: weights do not fit the model of config.json ({reason(error)})"
        ) from None
    # channels_last: the layout oneDNN's and cuDNN's fastest convolutions use (docs/performance.md, issue 15).
    model.to(placement.device, memory_format=torch.channels_last).eval()
    if placement.n_gpus > 1:  # the replicas' threads need the autocast again
        model = AutocastDataParallel(model, device_ids=list(range(placement.n_gpus)), amp=placement.amp)
    return LoadedRun(model, config, run_dir, placement)
