"""The training loop, a readable skeleton of hooks: on_epoch_start, train_step, validation_step, on_epoch_end."""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.utils.data import DataLoader

from bodycomp_cli.core.amp import AmpPolicy
from bodycomp_cli.data.sampling import ShardSampler, TrainSampler
from bodycomp_cli.engine.checkpoint import LAST, restore_rng_state, rng_state
from bodycomp_cli.engine.config import EngineConfig, schedule_factor
from bodycomp_cli.engine.devices import DeviceSetup, strip_prefix, unwrap_model, wrap_model
from bodycomp_cli.engine.history import TensorBoardLog
from bodycomp_cli.engine.memory import keep_batchnorm_stats_in_recomputation
from bodycomp_cli.engine.seeding import seed_epoch
from bodycomp_cli.engine.task import Task
from bodycomp_cli.engine.writer import EpochWriter
from bodycomp_cli.errors import BodycompError

PROGRESS_REFRESH_S = 0.5  # how often the loss shown on the bar is read back (a GPU sync on CUDA)
ROWS = "rows:"


def to_device(batch: dict[str, Any], device: torch.device, non_blocking: bool = False) -> dict[str, Any]:
    """Tensors to the device; non_blocking only pays off (and is only asked for) from pinned memory."""
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


def host_copy(state: Any, pin: bool = False) -> Any:
    """A copy of a nested state (dicts, lists, tuples, tensors) in CPU memory, for the writer to save.

    Cloning on the GPU would hold the weights and both Adam moments again there (about 3x the parameters) at
    every save. With pin=True the copies go to pinned memory without blocking; the caller synchronises once.
    """
    if torch.is_tensor(state):
        return _to_host(state.detach(), pin)
    if isinstance(state, dict):
        return {key: host_copy(value, pin) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(host_copy(value, pin) for value in state)
    return copy.deepcopy(state)


def _to_host(tensor: torch.Tensor, pin: bool) -> torch.Tensor:
    host = torch.empty_like(tensor, device="cpu", pin_memory=pin)
    host.copy_(tensor, non_blocking=pin)
    return host


class Trainer:
    """Trains one task's model with the engine settings, writing run files into run_dir (rank 0 only)."""

    def __init__(
        self,
        task: Task,
        model: torch.nn.Module,
        setup: DeviceSetup,
        engine: EngineConfig,
        run_dir: Path,
        config: dict[str, Any],
        amp: AmpPolicy,
        console: Console | None = None,
    ) -> None:
        self.task, self.setup, self.engine, self.run_dir, self.config = task, setup, engine, run_dir, config
        self.console = console or Console()
        # The run's one AMP decision (made by run_training); DataParallel's replica threads need it too.
        self.amp = amp
        self.scaler = self.amp.grad_scaler()
        # channels_last: the layout of oneDNN's and cuDNN's fastest convolutions (a CPU training step 1.05x faster
        # for resnet18 at 64 px, 1.21x for linknet/resnet18 at 128 px: benchmarks/cpu_training.py).
        self.model = wrap_model(model.to(memory_format=torch.channels_last), setup, self.amp)
        if engine.low_memory:  # again: SyncBatchNorm conversion replaced the guarded layers
            keep_batchnorm_stats_in_recomputation(unwrap_model(self.model))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=engine.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, schedule_factor(engine.schedule, engine.epochs)
        )
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"metric": task.best_metric, "value": None, "epoch": None}
        self.start_epoch = 1
        self.writer: EpochWriter | None = None
        self.train_speed = 0.0  # samples/s of the last training pass (shown in the epoch line)
        self._build_loaders()
        self.tensorboard = TensorBoardLog(run_dir, engine.tensorboard and setup.is_main)

    # ----- set-up -----------------------------------------------------------------------------------------
    def _build_loaders(self) -> None:
        train_set, val_set = self.task.datasets()
        rank, world = self.setup.rank, self.setup.world_size
        if len(val_set) < world:
            raise BodycompError(f"{len(val_set)} validation samples cannot be shared by {world} processes")
        self.train_sampler = TrainSampler(
            len(train_set), self.engine.batch_size, self.engine.seed, self.engine.steps_per_epoch, rank, world
        )
        local_batch = max(1, self.train_sampler.global_batch // world)
        workers = self.engine.resolved_workers()
        # Pinned batches and non_blocking copies go together: the copy overlaps the next step only from pinned memory.
        self.pinned = self.setup.device.type == "cuda"
        common = {"num_workers": workers, "pin_memory": self.pinned}
        self.train_loader = DataLoader(
            train_set, batch_size=local_batch, sampler=self.train_sampler, persistent_workers=workers > 0, **common
        )
        # Validation workers live only while validating: kept alive, they would hold their private memory
        # through every training step, when activations make the process largest.
        self.val_loader = DataLoader(
            val_set,
            batch_size=max(1, self.engine.batch_size // world),
            sampler=ShardSampler(len(val_set), rank, world),
            **common,
        )
        self.steps = len(self.train_loader)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimizer, scheduler, scaler, RNG, history and best so far."""
        unwrap_model(self.model).load_state_dict(strip_prefix(checkpoint["model"]))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        restore_rng_state(checkpoint["rng"])
        self.history = list(checkpoint["history"])
        self.best = dict(checkpoint["best"])
        self.start_epoch = int(checkpoint["epoch"]) + 1

    # ----- the loop ---------------------------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        writer = EpochWriter(self.run_dir, self.tensorboard, self.start_epoch - 1) if self.setup.is_main else None
        self.writer = writer
        try:
            with _grad_stride_hint_ignored():
                for epoch in range(self.start_epoch, self.engine.epochs + 1):
                    self.on_epoch_start(epoch)
                    started = time.perf_counter()
                    train_loss = self.train_epoch(epoch)
                    metrics = self.validate()
                    self.on_epoch_end(epoch, train_loss, metrics, time.perf_counter() - started)
            if writer is not None:
                self._writing(writer.close)
        except KeyboardInterrupt:
            if writer is not None:
                writer.close()  # the epoch files already handed over are finished, not cut short
            # The hint travels as the interrupt's message: the CLI prints it, once (commands/common.py).
            raise KeyboardInterrupt(self._how_to_resume()) from None
        except BaseException:
            if writer is not None:
                with contextlib.suppress(Exception):  # the error on its way up says what went wrong
                    writer.close()
            raise
        return self.history

    def on_epoch_start(self, epoch: int) -> None:
        seed_epoch(self.engine.seed, epoch, self.setup.rank)
        self.train_sampler.set_epoch(epoch)
        self.model.train()

    def autocast(self):
        return self.amp.autocast()

    def train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        with self.autocast():
            outputs = self.model(batch["image"])
            loss = self.task.loss(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return loss.detach()

    def train_epoch(self, epoch: int) -> float:
        loss_sum = torch.zeros((), device=self.setup.device, dtype=torch.float64)
        with self._progress(epoch) as (progress, bar):
            started = last_shown = time.perf_counter()
            for step, batch in enumerate(self.train_loader, start=1):
                loss_sum += self.train_step(to_device(batch, self.setup.device, self.pinned))
                if self.writer is not None:  # rank 0: a failed save stops every rank now, not at the epoch's end
                    self._writing(self.writer.raise_if_failed)
                if progress is None:
                    continue
                now = time.perf_counter()
                fields = {}
                if now - last_shown >= PROGRESS_REFRESH_S or step == self.steps:
                    samples = step * self.train_sampler.global_batch
                    fields = {
                        "loss": f"loss {float(loss_sum) / step:.4f}",
                        "speed": f"{samples / (now - started):.1f} samples/s",
                    }
                    last_shown = now
                progress.update(bar, advance=1, **fields)
        totals = torch.stack([loss_sum, torch.tensor(float(self.steps), dtype=torch.float64, device=loss_sum.device)])
        if self.setup.distributed:
            torch.distributed.all_reduce(totals)
        loss = float(totals[0] / totals[1])  # waits for the GPU, so the time below is the real one
        elapsed = time.perf_counter() - started
        self.train_speed = self.steps * self.train_sampler.global_batch / max(elapsed, 1e-9)
        return loss

    def validation_step(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with self.autocast():
            outputs = model(batch["image"])
        return self.task.validation_stats(outputs.float(), batch)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        # DDP's forward expects every rank to take part; validation shards are uneven, so use the bare model.
        model = unwrap_model(self.model) if self.setup.distributed else self.model
        model.eval()
        sums: dict[str, torch.Tensor] = {}
        rows: dict[str, list[torch.Tensor]] = {}
        for batch in self.val_loader:
            for key, value in self.validation_step(model, to_device(batch, self.setup.device, self.pinned)).items():
                if key.startswith(ROWS):
                    rows.setdefault(key, []).append(value.detach().cpu())
                else:
                    value = value.detach().double()
                    sums[key] = sums[key] + value if key in sums else value
        totals = {key: value.cpu() for key, value in sums.items()}
        totals.update({key: torch.cat(parts) for key, parts in rows.items()})
        if self.setup.distributed:
            totals = self._reduce(sums, rows)
        return self.task.finalize_metrics(totals)

    def _reduce(self, sums: dict[str, torch.Tensor], rows: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Sum the metric totals over ranks (one all_reduce) and gather the per-sample rows."""
        keys = sorted(sums)
        flat = torch.cat([sums[k].reshape(-1) for k in keys]).to(self.setup.device)
        torch.distributed.all_reduce(flat)
        totals, offset = {}, 0
        for key in keys:
            size = sums[key].numel()
            totals[key] = flat[offset : offset + size].reshape(sums[key].shape).cpu()
            offset += size
        for key in sorted(rows):
            gathered: list[Any] = [None] * self.setup.world_size
            torch.distributed.all_gather_object(gathered, torch.cat(rows[key]))
            totals[key] = torch.cat(gathered)
        return totals

    def on_epoch_end(self, epoch: int, train_loss: float, metrics: dict[str, float], seconds: float) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        row = {"epoch": epoch, "train_loss": train_loss, **metrics, "lr": lr, "seconds": round(seconds, 3)}
        self.history.append(row)
        improved = self._is_better(metrics.get(self.task.best_metric, math.nan))
        if improved:
            self.best = {"metric": self.task.best_metric, "value": metrics[self.task.best_metric], "epoch": epoch}
        if not self.setup.is_main:
            return
        # Snapshots go to the background writer; the next epoch trains while they are saved. Between --save-every
        # epochs only history.csv, curves.png and TensorBoard are written; a resume then redoes the epochs since
        # checkpoint_last.pt. A new best is saved as last too, so checkpoint_last is never older than best.
        final = epoch == self.engine.epochs
        due = epoch % self.engine.save_every == 0 or final or improved
        # After the final epoch nothing trains, so state already in host memory is saved as it is, not copied.
        live = final and self.setup.device.type == "cpu"
        checkpoint = self.checkpoint(epoch, live) if due else None
        self._writing(self.writer.submit, epoch, checkpoint, [dict(r) for r in self.history], improved)
        if not self.engine.quiet:
            self.console.print(self._summary(row, improved), highlight=False)

    # ----- helpers ----------------------------------------------------------------------------------------
    def _is_better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        best = self.best["value"]
        if best is None or not math.isfinite(best):
            return True
        return value > best if self.task.higher_is_better else value < best

    def checkpoint(self, epoch: int, live: bool = False) -> dict[str, Any]:
        """The checkpoint dict of this moment; live=True hands the live tensors over (when nothing trains on)."""
        state = {
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        return {
            "task": self.task.name,
            "config": self.config,
            "epoch": epoch,
            # Otherwise copies in host memory: training goes on updating the live tensors while the writer saves.
            **(state if live else self._host_snapshot(state)),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_state(),
            "history": [dict(r) for r in self.history],
            "best": dict(self.best),
        }

    def _host_snapshot(self, state: dict[str, Any]) -> dict[str, Any]:
        pin = self.setup.device.type == "cuda"
        snapshot = host_copy(state, pin)
        if pin:
            torch.cuda.synchronize(self.setup.device)  # the non_blocking copies are complete before the writer reads
        return snapshot

    def _writing(self, action: Callable[..., None], *args: Any) -> None:
        """Run a writer call; a failed save becomes one line (and, under torchrun, stops the other ranks)."""
        try:
            action(*args)
        except BodycompError:
            raise
        except Exception as error:
            raise BodycompError(
                f"{self.run_dir}: saving the run files failed ({type(error).__name__}: {error}); training stopped"
            ) from error

    def _summary(self, row: dict[str, Any], improved: bool) -> str:
        parts = [f"epoch {row['epoch']}/{self.engine.epochs}"]
        for key, value in row.items():
            if key not in ("epoch", "lr", "seconds"):
                # nan: no val series has what this metric scores (a level they don't cover), not a failure
                parts.append(f"{key} {value:.4f}" if math.isfinite(value) else f"{key} n/a")
        parts += [f"lr {row['lr']:.2e}", f"{row['seconds']:.1f} s", f"train {self.train_speed:.1f} samples/s"]
        if self.setup.device.type == "cuda":  # rank 0's GPU (DataParallel gathers on it, so it holds the most)
            parts.append(f"peak GPU memory {torch.cuda.max_memory_allocated(self.setup.device) / 2**30:.2f} GiB")
        return "  ".join(parts) + ("  (best)" if improved else "")

    def _progress(self, epoch: int):
        if self.engine.quiet or not self.setup.is_main:
            return contextlib.nullcontext((None, None))
        return _EpochBar(self.console, f"epoch {epoch}/{self.engine.epochs}", self.steps)

    def _how_to_resume(self) -> str:
        name, completed = self.run_dir.name, self.writer.saved_epoch if self.writer else 0
        if completed >= 1:
            return (
                f"interrupted: {self.run_dir / LAST} holds epoch {completed}. "
                f"To resume, run the same command with: -a {name} --resume"
            )
        return "interrupted before the first epoch finished: nothing to resume"


@contextlib.contextmanager
def _grad_stride_hint_ignored():
    # Depthwise convolutions (ConvNeXt, MobileNet) make DDP warn about grad strides: a speed hint only. Scoped to
    # the run, so the process's warning filters are as they were afterwards.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        yield


class _EpochBar:
    """A rich progress bar for one epoch: steps, loss and samples/s."""

    def __init__(self, console: Console, description: str, steps: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            # As often as the loss is read back. rich's default of 10 redraws a second took 1.1 % of a core in a
            # terminal (about 1 ms each, holding the GIL the training loop needs); 2 a second take 0.3 %.
            refresh_per_second=1 / PROGRESS_REFRESH_S,
        )
        self.description, self.steps = description, steps

    def __enter__(self):
        self.progress.start()
        bar = self.progress.add_task(self.description, total=self.steps, loss="", speed="")
        return self.progress, bar

    def __exit__(self, *exc_info) -> None:
        self.progress.stop()
