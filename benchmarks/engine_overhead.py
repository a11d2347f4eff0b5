"""Engine overhead: epochs through bodycomp's Trainer against a bare PyTorch loop doing the same work.

Both get the same smp model (SegmentationTask's unet/resnet34, same initial weights, channels_last), the same
in-memory data tensors (windowed HU and labels), the same batch size, Adam with the same learning rate, and
the same Dice + cross-entropy loss. The bare loop trains one pass and runs the model over the validation
tensors; the engine does that plus what it adds: the progress bar (drawn as in a terminal), per-tissue Dice,
checkpoint_last/best.pt, history.csv, curves.png and TensorBoard events, every epoch. CPU, DataLoader
workers 0 for both, and malloc as the CLI sets it (engine/memory.keep_freed_memory) for both.

An epoch is a realistic one of 100 steps (issue 15; issue 7 measured 6-step epochs, where the 293 MB checkpoint
of unet/resnet34 weighed far more than in any real run), at 64 px so that it takes minutes on 2 cores. A timed
run is 5 epochs and ends when fit() returns, so the wait for the last checkpoint counts (spread over 5 epochs).
Runs alternate (bare, engine, bare, ...) and the best of each counts. CPU seconds (all threads, the background
writer's included) are printed too: they move less with other jobs on the machine than wall time does.

    OMP_NUM_THREADS=1 python benchmarks/engine_overhead.py    # target: engine <= 1.05 x bare
    python benchmarks/engine_overhead.py --save-every 5       # the engine saving every 5th epoch
    python benchmarks/engine_overhead.py --tiny               # seconds-long smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_slices import cpu_model, ct_like_series  # noqa: E402

from bodycomp_cli.core.amp import choose_amp  # noqa: E402
from bodycomp_cli.core.preprocess import window_unit  # noqa: E402
from bodycomp_cli.engine import writer as writer_module  # noqa: E402
from bodycomp_cli.engine.config import EngineConfig  # noqa: E402
from bodycomp_cli.engine.devices import resolve_devices  # noqa: E402
from bodycomp_cli.engine.history import TensorBoardLog  # noqa: E402
from bodycomp_cli.engine.memory import keep_freed_memory  # noqa: E402
from bodycomp_cli.engine.run import build_config  # noqa: E402
from bodycomp_cli.engine.trainer import Trainer  # noqa: E402
from bodycomp_cli.prepare.slices import default_workers  # noqa: E402
from bodycomp_cli.tasks.segmentation import SegmentationSettings, SegmentationTask  # noqa: E402

TARGET = 1.05  # issue 7: engine epoch <= 1.05 x the bare loop's


class TensorSlices(Dataset):
    """Windowed images (N x 1 x S x S) and labels (N x S x S) held in memory; accepts (index, seed) items."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        index = item[0] if isinstance(item, tuple) else item
        return {"image": self.images[index], "mask": self.masks[index], "index": index}


def make_data(count: int, size: int, seed: int) -> TensorSlices:
    hu, _ = ct_like_series(count, size, seed)
    images = window_unit(hu)[:, None].contiguous()
    masks = torch.from_numpy(np.digitize(hu, [-200, -30, 150]).astype(np.int64))
    return TensorSlices(images, masks)


class InMemorySegmentation(SegmentationTask):
    """The real segmentation task (model, loss, metrics, "best" rule) over the benchmark's tensors."""

    def __init__(self, settings: SegmentationSettings, train: TensorSlices, val: TensorSlices) -> None:
        super().__init__(settings)
        self.train_set, self.val_set = train, val

    def datasets(self) -> tuple[TensorSlices, TensorSlices]:
        return self.train_set, self.val_set


@dataclass
class Timed:
    """Seconds per epoch of one run: wall, CPU (all threads), and where the time went."""

    wall: float
    cpu: float
    parts: dict[str, float] = field(default_factory=dict)


class TimedTrainer(Trainer):
    """The Trainer with a stopwatch around its hooks (a perf_counter call per epoch, not per step)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.parts: dict[str, float] = {}

    def _timed(self, name: str, action, *args):
        started = time.perf_counter()
        try:
            return action(*args)
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - started

    def train_epoch(self, epoch: int) -> float:
        return self._timed("training pass", super().train_epoch, epoch)

    def validate(self) -> dict[str, float]:
        return self._timed("validation (loss + per-tissue Dice)", super().validate)

    def on_epoch_end(self, *args) -> None:
        self._timed("epoch end (snapshot, hand-over, epoch line)", super().on_epoch_end, *args)


@contextlib.contextmanager
def writer_stopwatch(parts: dict[str, float]):
    """Time the background writer's files (wall and the writer thread's CPU) by wrapping what it calls."""
    targets = [(writer_module, name) for name in ("save_checkpoint", "link_as", "write_history", "draw_curves")]
    targets.append((TensorBoardLog, "log"))
    originals = {(owner, name): getattr(owner, name) for owner, name in targets}

    def wrap(name, action):
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return action(*args, **kwargs)
            finally:
                for kind, seconds in (("wall", time.perf_counter() - wall), ("CPU", time.thread_time() - cpu)):
                    key = f"writer thread: {name} ({kind})"
                    parts[key] = parts.get(key, 0.0) + seconds

        return timed

    for (owner, name), action in originals.items():
        setattr(owner, name, wrap("TensorBoard" if name == "log" else name, action))
    try:
        yield
    finally:
        for (owner, name), action in originals.items():
            setattr(owner, name, action)


def bare_epochs(task: SegmentationTask, weights: dict, epochs: int, batch: int, lr: float) -> Timed:
    """Seconds per epoch of the plain loop: forward, loss, backward, step; then a no-grad val pass."""
    model = task.build_model()
    model.load_state_dict(weights)
    model.to(memory_format=torch.channels_last)  # the layout the engine trains in, so that only overhead differs
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train = DataLoader(task.train_set, batch_size=batch, shuffle=True, drop_last=True)
    val = DataLoader(task.val_set, batch_size=batch)
    parts = {"training pass": 0.0, "validation (loss)": 0.0}
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        model.train()
        for batch_ in train:
            loss = task.loss(model(batch_["image"]), batch_)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        trained = time.perf_counter()
        parts["training pass"] += trained - start - sum(parts.values())
        model.eval()
        with torch.no_grad():
            val_loss = sum(float(task.loss(model(b["image"]), b)) for b in val)
        parts["validation (loss)"] += time.perf_counter() - trained
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert np.isfinite(val_loss)
    return Timed(wall / epochs, cpu / epochs, {k: v / epochs for k, v in parts.items()})


def engine_epochs(task: SegmentationTask, weights: dict, engine: EngineConfig, run_dir: Path) -> Timed:
    """Seconds per epoch of Trainer.fit (progress bar, metrics, checkpoints, history and curves included)."""
    model = task.build_model()
    model.load_state_dict(weights)
    setup = resolve_devices(0)
    amp = choose_amp(setup.device, engine.amp)  # as run_training decides it, once per run
    config = build_config(task, engine, setup, amp, run_dir.name, None).to_dict()
    run_dir.mkdir(parents=True)
    writer_parts: dict[str, float] = {}
    # The progress bar drawn as in a terminal (where users see it), into /dev/null so the output stays readable.
    with open(os.devnull, "w") as screen:
        console = Console(file=screen, force_terminal=True, width=120)
        trainer = TimedTrainer(task, model, setup, engine, run_dir, config, amp, console)
        start, cpu = time.perf_counter(), time.process_time()
        with writer_stopwatch(writer_parts):
            history = trainer.fit()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(history) == engine.epochs and (run_dir / "checkpoint_last.pt").is_file()
    parts = dict(trainer.parts)
    # What fit() spends outside the epochs: the wait for the last files (and the writer's start and stop).
    parts["after the last epoch (waiting for its files)"] = wall - sum(parts.values())
    parts.update(writer_parts)
    return Timed(wall / engine.epochs, cpu / engine.epochs, {k: v / engine.epochs for k, v in parts.items()})


def load_average() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def report(name: str, runs: list[Timed]) -> Timed:
    best = min(runs, key=lambda run: run.wall)
    walls = ", ".join(f"{run.wall:.3f}" for run in runs)
    print(f"{name} {best.wall:7.3f} s/epoch   (runs: {walls}); CPU {min(r.cpu for r in runs):7.3f} s/epoch (best)")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="32 px, resnet18, a few samples (smoke test)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--train", type=int, default=800, help="training slices (one epoch = train / batch steps)")
    parser.add_argument("--val", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5, help="epochs per timed run (the last file wait counts)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each; the best counts")
    parser.add_argument("--save-every", type=int, default=1, help="the engine's --save-every")
    parser.add_argument("--no-tensorboard", action="store_true", help="the engine without TensorBoard events")
    args = parser.parse_args()
    kept = keep_freed_memory()
    if args.tiny:
        args.size, args.encoder, args.train, args.val, args.batch, args.epochs, args.repeat = (
            32,
            "resnet18",
            4,
            2,
            2,
            1,
            1,
        )
    torch.manual_seed(0)
    settings = SegmentationSettings(encoder=args.encoder, image_size=args.size)
    task = InMemorySegmentation(settings, make_data(args.train, args.size, 0), make_data(args.val, args.size, 1))
    weights = copy.deepcopy(task.build_model().state_dict())
    engine = EngineConfig(
        epochs=args.epochs, batch_size=args.batch, learning_rate=1e-3, gpus=0, workers=0, save_every=args.save_every
    )
    engine.tensorboard = not args.no_tensorboard  # on by default in train-*, so counted as engine overhead
    threads = torch.get_num_threads()
    print(f"machine: {default_workers()} cores, {cpu_model()}; torch {torch.__version__}, {threads} threads")
    print(
        f"data: unet/{args.encoder}, {args.train} train + {args.val} val slices of {args.size} px, batch {args.batch} "
        f"({args.train // args.batch} steps), {args.epochs} epochs per run, best of {args.repeat} alternating runs; "
        f"save every {args.save_every}; TensorBoard {'off' if args.no_tensorboard else 'on'}; "
        f"malloc keeps freed memory: {kept}"
    )
    print(f"started {utc_now()}, load average {load_average()}")
    with tempfile.TemporaryDirectory(prefix="bodycomp-bench-engine-") as tmp:
        if not args.tiny:  # one untimed epoch of each first: imports (matplotlib), allocator, thread pools
            bare_epochs(task, weights, 1, args.batch, engine.learning_rate)
            engine_epochs(task, weights, EngineConfig(**{**vars(engine), "epochs": 1}), Path(tmp) / "warm")
        bare, ours = [], []
        for attempt in range(args.repeat):
            bare.append(bare_epochs(task, weights, args.epochs, args.batch, engine.learning_rate))
            ours.append(engine_epochs(task, weights, engine, Path(tmp) / f"run{attempt}"))
    print(f"ended {utc_now()}, load average {load_average()}")
    best_bare, best_ours = report("bare PyTorch loop:", bare), report("bodycomp engine:  ", ours)
    for name, best in (("bare loop", best_bare), ("engine", best_ours)):
        print(f"where the best {name} run's time went, s/epoch:")
        for part, seconds in best.parts.items():
            print(f"  {part:52s} {seconds:7.3f}")
    ratio = best_ours.wall / best_bare.wall
    cpu_ratio = min(r.cpu for r in ours) / min(r.cpu for r in bare)
    print(f"CPU ratio: {cpu_ratio:.3f}x")
    print(f"ratio: {ratio:.3f}x (target <= {TARGET}x): {'met' if ratio <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
