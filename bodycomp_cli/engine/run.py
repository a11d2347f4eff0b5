"""run_training: validate everything, prepare the run folder, then hand over to the Trainer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from bodycomp_cli.core.amp import AmpPolicy, choose_amp
from bodycomp_cli.core.runconfig import CONFIG_FILE, RunConfig
from bodycomp_cli.core.versions import versions
from bodycomp_cli.engine.checkpoint import BEST, LAST, link_as, load_checkpoint
from bodycomp_cli.engine.config import EngineConfig, check_engine_config, default_run_name
from bodycomp_cli.engine.devices import DeviceSetup, init_distributed, resolve_devices
from bodycomp_cli.engine.history import HISTORY, write_history
from bodycomp_cli.engine.seeding import deterministic_algorithms, seed_everything
from bodycomp_cli.engine.task import Task
from bodycomp_cli.engine.trainer import Trainer
from bodycomp_cli.engine.warm_start import WarmStart, check_warm_start, load_initial_weights, skip_to_epoch
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.atomic import atomic_write_text, remove_dead_temps


def build_config(
    task: Task, engine: EngineConfig, setup: DeviceSetup, amp: AmpPolicy, name: str, data_dir: Path | None
) -> RunConfig:
    """The task's model settings completed with how this run trains: what config.json and checkpoints hold."""
    return task.run_config().with_training(
        name=name,
        data_dir=str(data_dir) if data_dir is not None else None,
        epochs=engine.epochs,
        batch_size=engine.batch_size,
        learning_rate=engine.learning_rate,
        schedule=engine.schedule,
        seed=engine.seed,
        deterministic=engine.deterministic,
        workers=engine.resolved_workers(),
        steps_per_epoch=engine.steps_per_epoch,
        low_memory=engine.low_memory,
        amp=amp.enabled,
        devices=setup.describe(),
        world_size=setup.world_size,
        best_metric=task.best_metric,
        versions=versions(),
    )


def _check_resumable(checkpoint: dict[str, Any], config: RunConfig, path: Path) -> None:
    saved = RunConfig.from_dict(checkpoint["config"], path).model_settings()
    for key, value in config.model_settings().items():
        if saved[key] != value:
            raise BodycompError(
                f"{path}: was trained with {key}={saved[key]!r}, not {value!r}; resume with the run's original settings"
            )


def _build_model(task: Task) -> torch.nn.Module:
    try:
        return task.build_model()
    except BodycompError:
        raise
    except Exception as error:  # smp and timm refuse some combinations (e.g. an encoder an arch cannot use)
        settings = task.run_config()
        raise BodycompError(f"cannot build --arch {settings.arch} with encoder {settings.encoder}: {error}") from None


def run_training(
    make_task: Callable[[], Task],
    models_dir: Path,
    name: str | None,
    engine: EngineConfig,
    data_dir: Path | None = None,
    console: Console | None = None,
    start: WarmStart | None = None,
) -> Path:
    """Validate the settings, the data (via make_task) and the run folder; then train. Returns the run folder.

    Nothing is written before every check has passed, so a refused run leaves nothing behind.
    """
    check_engine_config(engine)
    start = start or WarmStart()
    check_warm_start(start, engine.epochs, engine.resume)
    setup = resolve_devices(engine.gpus)
    if setup.distributed and engine.batch_size % setup.world_size:
        raise BodycompError(
            f"-b/--batch-size {engine.batch_size}: must be divisible by the {setup.world_size} DDP processes"
        )
    task = make_task()
    with deterministic_algorithms(engine.deterministic):  # restored afterwards, like every process-wide switch
        seed_everything(engine.seed)
        model = _build_model(task)
        load_initial_weights(model, task, start)
        if engine.low_memory:
            from bodycomp_cli.engine.memory import enable_low_memory

            enable_low_memory(model)
        init_distributed(setup)
        try:
            console = console or Console(soft_wrap=True)
            return _train(task, model, setup, Path(models_dir), name, engine, data_dir, console, start)
        finally:
            if setup.distributed and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


def _train(
    task: Task,
    model: torch.nn.Module,
    setup: DeviceSetup,
    models_dir: Path,
    name: str | None,
    engine: EngineConfig,
    data_dir: Path | None,
    console: Console,
    start: WarmStart,
) -> Path:
    name = name or default_run_name()
    if setup.distributed:  # ranks start at slightly different times: rank 0's default name wins
        shared = [name]
        torch.distributed.broadcast_object_list(shared, src=0)
        name = shared[0]
    run_dir = models_dir / name
    if setup.is_main:  # what a killed run left (temp checkpoints, curves) goes before anything is read
        remove_dead_temps(run_dir, recursive=True)
    amp = choose_amp(setup.device, engine.amp)  # once per run: config.json, the trainer and its replicas
    config = build_config(task, engine, setup, amp, name, data_dir)
    config = config.with_training(init_weights=start.source, initial_epoch=start.initial_epoch)
    checkpoint = None
    if engine.resume:
        if not (run_dir / LAST).is_file():
            raise BodycompError(f"{run_dir}: nothing to resume (no {LAST})")
        checkpoint = load_checkpoint(run_dir / LAST)
        _check_resumable(checkpoint, config, run_dir / LAST)
    elif (run_dir / LAST).exists() or (run_dir / BEST).exists():
        raise BodycompError(f"{run_dir}: already holds checkpoints; use --resume to continue it or -a for a new name")
    # Checkpoints hold the config as a plain dict, so they load with torch.load(weights_only=True).
    trainer = Trainer(task, model, setup, engine, run_dir, config.to_dict(), amp, console)
    if setup.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_FILE, config.to_json())
    skip_to_epoch(trainer, start)
    if checkpoint is not None:
        trainer.restore(checkpoint)
        if setup.is_main:  # a kill between checkpoint and history.csv left the CSV an epoch behind
            write_history(run_dir / HISTORY, trainer.history)
        if setup.is_main and not (run_dir / BEST).exists() and trainer.best.get("epoch") == checkpoint["epoch"]:
            # Killed between publishing checkpoint_last and linking it as best: the last one is the best one.
            link_as(run_dir / LAST, run_dir / BEST)
    if setup.is_main and not engine.quiet:
        done = trainer.start_epoch - 1
        resumed = f", resuming after epoch {done}" if checkpoint is not None else ""
        where = f"{setup.describe()} ({trainer.amp.describe()})"
        console.print(f"training {task.name} on {where} into {run_dir}{resumed}", highlight=False)
    if setup.is_main:  # even with --quiet: which HU window a run records must never go unsaid
        for note in task.notes:
            console.print(note, highlight=False, markup=False)
    trainer.fit()
    return run_dir
