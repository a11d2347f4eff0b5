"""Training loader throughput per worker: samples/s of one process producing training samples, no model.

Segmentation: SegmentationDataset over a memmapped N x 512 x 512 x 1 int16 HU array (memmap read,
window to [0, 1], joint rotation/shift/scale/intensity augmentation, image size 512).
Slice selection: SliceSelectionDataset over 512 x 512 8-bit PNGs (PNG decode, antialiased resize to 256,
rotation/shift augmentation).

A DataLoader worker runs one sample at a time with torch limited to one thread, so that is how each
loader is timed here ("per worker"); `--dataloader-workers N` also times a real DataLoader with N
workers (the figure for a GPU box with many cores). There is no baseline program: the issue's targets
(>= 150 and >= 300 samples/s per worker) stand in for it and the ratio is measured / target.

    python benchmarks/loaders.py                          # 512 px segmentation, 512 -> 256 px selection
    python benchmarks/loaders.py --dataloader-workers 16  # plus a 16-worker DataLoader (GPU box)
    python benchmarks/loaders.py --tiny                   # seconds-long smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_slices import cpu_model, ct_like_series  # noqa: E402

from bodycomp_cli.core.metacsv import read_meta_csv  # noqa: E402
from bodycomp_cli.core.preprocess import window_hu  # noqa: E402
from bodycomp_cli.data.augment import AffineRanges  # noqa: E402
from bodycomp_cli.data.sampling import TrainSampler  # noqa: E402
from bodycomp_cli.data.segmentation import SegmentationDataset, SegmentationSplit  # noqa: E402
from bodycomp_cli.data.slices import SliceSelectionDataset, SliceSplit  # noqa: E402
from bodycomp_cli.prepare.slices import default_workers  # noqa: E402
from bodycomp_cli.tasks.segmentation import SegmentationSettings, SegmentationTask  # noqa: E402
from bodycomp_cli.tasks.slice_selection import SliceSelectionSettings  # noqa: E402

SEG_TARGET = 150.0  # samples/s per worker at 512 px (issue 7)
SELECT_TARGET = 300.0  # samples/s per worker, PNG decode + resize to 256 + augmentation (issue 7)


def seg_dataset(folder: Path, count: int, size: int) -> SegmentationDataset:
    """A memmapped int16 HU array and uint8 masks on disk, read through the training dataset."""
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.int16, (count, size, size, 1))
    masks = np.lib.format.open_memmap(folder / "masks.npy", "w+", np.uint8, (count, size, size, 1))
    for start in range(0, count, 16):
        hu, _ = ct_like_series(min(16, count - start), size, seed=start)
        images[start : start + len(hu), :, :, 0] = hu
        masks[start : start + len(hu), :, :, 0] = np.digitize(hu, [-200, -30, 150]).astype(np.uint8)
    images.flush()
    masks.flush()
    del images, masks
    settings = SegmentationSettings(image_size=size)  # the training defaults for window and augmentation
    ranges = AffineRanges(settings.rotation_deg, settings.shift, settings.scale, settings.intensity)
    split = SegmentationSplit(folder / "images.npy", folder / "masks.npy", count, size, size)
    window = SegmentationTask(settings).window  # the default window, Window() (no data folder to read)
    return SegmentationDataset(split, size, (window.level, window.width), ranges)


def select_dataset(folder: Path, count: int, size: int, image_size: int) -> SliceSelectionDataset:
    """prepare-slices-like 8-bit PNGs (windowed CT, zlib level 1) read through the training dataset."""
    image_dir = folder / "images"
    image_dir.mkdir()
    hu, z_mm = ct_like_series(count, size, seed=7)
    for index, slice_hu in enumerate(hu):
        iio.imwrite(image_dir / f"{index:06d}.png", window_hu(slice_hu), compress_level=1)
    pd.DataFrame({"z_mm": z_mm, "ZOffset_L3": z_mm - z_mm[count // 2]}).to_csv(folder / "meta.csv")
    settings = SliceSelectionSettings(image_size=image_size)
    ranges = AffineRanges(rotation_deg=settings.rotation_deg, shift=settings.shift, scale=0.0, intensity=0.0)
    split = SliceSplit(image_dir, read_meta_csv(folder / "meta.csv", ["L3"]))
    return SliceSelectionDataset(split, image_size, settings.threshold_mm, ranges)


def per_worker_rate(dataset: torch.utils.data.Dataset, samples: int, repeat: int) -> float:
    """Best samples/s of one process with one torch thread, on (index, seed) items as the TrainSampler makes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a DataLoader worker gets
    try:
        items = list(TrainSampler(len(dataset), 1, seed=0, steps_per_epoch=samples))
        dataset[items[0]]  # open the memmap / warm the PNG decoder once
        best = 0.0
        for _ in range(repeat):
            start = time.perf_counter()
            for item in items:
                dataset[item]
            best = max(best, samples / (time.perf_counter() - start))
        return best
    finally:
        torch.set_num_threads(threads)


def dataloader_rate(dataset: torch.utils.data.Dataset, samples: int, workers: int, batch: int) -> float:
    """samples/s of a DataLoader with `workers` processes (after the workers have started)."""
    sampler = TrainSampler(len(dataset), batch, seed=0, steps_per_epoch=max(2, samples // batch))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, persistent_workers=True)
    for _ in loader:  # first pass starts the workers
        pass
    start = time.perf_counter()
    count = sum(len(batch_["index"]) for batch_ in loader)
    return count / (time.perf_counter() - start)


def report(name: str, rate: float, target: float, extra: Callable[[], float] | None, workers: int) -> None:
    print(f"{name}: target (baseline) {target:6.0f} samples/s per worker")
    print(f"{name}: measured          {rate:6.1f} samples/s per worker   ratio {rate / target:.2f}x of target")
    if extra is not None:
        print(f"{name}: DataLoader with {workers} workers {extra():7.1f} samples/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few 64 px samples (smoke test)")
    parser.add_argument("--samples", type=int, default=200, help="samples timed per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts (shared machine)")
    parser.add_argument("--dataloader-workers", type=int, default=0, help="also time a DataLoader with N workers")
    args = parser.parse_args()
    seg_size, select_size, image_size, count = 512, 512, 256, 64
    if args.tiny:
        seg_size, select_size, image_size, count, args.samples, args.repeat = 64, 64, 32, 8, 8, 1
    print(f"machine: {default_workers()} cores, {cpu_model()}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="bodycomp-bench-loaders-") as tmp:
        (Path(tmp) / "seg").mkdir()
        (Path(tmp) / "select").mkdir()
        seg = seg_dataset(Path(tmp) / "seg", count, seg_size)
        select = select_dataset(Path(tmp) / "select", count, select_size, image_size)
        print(f"data: {count} slices; segmentation {seg_size} px memmap int16; selection {select_size} px PNG")
        workers = args.dataloader_workers

        def loader_rate(dataset: torch.utils.data.Dataset) -> Callable[[], float]:
            return lambda: dataloader_rate(dataset, args.samples * workers, workers, batch=16)

        rate = per_worker_rate(seg, args.samples, args.repeat)
        report(f"segmentation loader ({seg_size} px)", rate, SEG_TARGET, loader_rate(seg) if workers else None, workers)
        rate = per_worker_rate(select, args.samples, args.repeat)
        name = f"selection loader ({select_size} px PNG -> {image_size})"
        report(name, rate, SELECT_TARGET, loader_rate(select) if workers else None, workers)


if __name__ == "__main__":
    main()
