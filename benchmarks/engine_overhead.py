"""Engine overhead: an epoch through bodycomp's Trainer against a bare PyTorch loop doing the same work.

Both get the same smp model (SegmentationTask's unet/resnet34, same initial weights), the same in-memory
data tensors (128 x 128, windowed HU and labels), the same batch size, Adam with the same learning rate,
and the same Dice + cross-entropy loss. The bare loop trains one pass and runs the model over the
validation tensors; the engine does that plus what it adds: the progress bar, per-tissue Dice,
checkpoint_last/best.pt, history.csv and curves.png, every epoch. CPU, DataLoader workers 0 for both, and
malloc as the CLI sets it (engine/memory.keep_freed_memory) for both.

The default epoch is a realistic one of 100 steps (issue 15; issue 7 measured 6-step epochs, where the 293 MB
checkpoint of unet/resnet34 weighed far more than in any real run), at 64 px so that it takes minutes on 2 cores.

    python benchmarks/engine_overhead.py          # 100 steps of batch 8 at 64 px; target: engine <= 1.05 x bare
    python benchmarks/engine_overhead.py --save-every 5 --epochs 5   # the engine saving every 5th epoch
    python benchmarks/engine_overhead.py --tiny   # seconds-long smoke run
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_slices import cpu_model, ct_like_series  # noqa: E402

from bodycomp_cli.core.preprocess import window_unit  # noqa: E402
from bodycomp_cli.engine.config import EngineConfig  # noqa: E402
from bodycomp_cli.engine.devices import resolve_devices  # noqa: E402
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


def bare_epochs(task: SegmentationTask, weights: dict, epochs: int, batch: int, lr: float) -> float:
    """Seconds per epoch of the plain loop: forward, loss, backward, step; then a no-grad val pass."""
    model = task.build_model()
    model.load_state_dict(weights)
    model.to(memory_format=torch.channels_last)  # the layout the engine trains in, so that only overhead differs
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train = DataLoader(task.train_set, batch_size=batch, shuffle=True, drop_last=True)
    val = DataLoader(task.val_set, batch_size=batch)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for batch_ in train:
            loss = task.loss(model(batch_["image"]), batch_)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = sum(float(task.loss(model(b["image"]), b)) for b in val)
    assert np.isfinite(val_loss)
    return (time.perf_counter() - start) / epochs


def engine_epochs(task: SegmentationTask, weights: dict, engine: EngineConfig, run_dir: Path) -> float:
    """Seconds per epoch of Trainer.fit (progress bar, metrics, checkpoints, history and curves included)."""
    model = task.build_model()
    model.load_state_dict(weights)
    setup = resolve_devices(0)
    trainer = Trainer(
        task, model, setup, engine, run_dir, build_config(task, engine, setup, run_dir.name, None).to_dict()
    )
    run_dir.mkdir(parents=True)
    start = time.perf_counter()
    history = trainer.fit()
    seconds = (time.perf_counter() - start) / engine.epochs
    assert len(history) == engine.epochs and (run_dir / "checkpoint_last.pt").is_file()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="32 px, resnet18, a few samples (smoke test)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--train", type=int, default=800, help="training slices (one epoch = train / batch steps)")
    parser.add_argument("--val", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed run")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each; the best counts")
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
    engine = EngineConfig(epochs=args.epochs, batch_size=args.batch, learning_rate=1e-3, gpus=0, workers=0)
    engine.tensorboard = False  # an optional extra; the bare loop writes no events either
    threads = torch.get_num_threads()
    print(f"machine: {default_workers()} cores, {cpu_model()}; torch {torch.__version__}, {threads} threads")
    print(
        f"data: unet/{args.encoder}, {args.train} train + {args.val} val slices of {args.size} px, batch {args.batch}, "
        f"{args.epochs} epochs per run, best of {args.repeat} alternating runs; malloc keeps freed memory: {kept}"
    )
    with tempfile.TemporaryDirectory(prefix="bodycomp-bench-engine-") as tmp:
        if not args.tiny:  # one untimed epoch of each first: imports (matplotlib), allocator, thread pools
            bare_epochs(task, weights, 1, args.batch, engine.learning_rate)
            engine_epochs(task, weights, EngineConfig(**{**vars(engine), "epochs": 1}), Path(tmp) / "warm")
        bare, ours = [], []
        for attempt in range(args.repeat):
            bare.append(bare_epochs(task, weights, args.epochs, args.batch, engine.learning_rate))
            ours.append(engine_epochs(task, weights, engine, Path(tmp) / f"run{attempt}"))
    print(f"bare PyTorch loop: {min(bare):7.3f} s/epoch   (runs: {', '.join(f'{s:.3f}' for s in bare)})")
    print(f"bodycomp engine:   {min(ours):7.3f} s/epoch   (runs: {', '.join(f'{s:.3f}' for s in ours)})")
    ratio = min(ours) / min(bare)
    print(f"ratio: {ratio:.3f}x (target <= {TARGET}x): {'met' if ratio <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
