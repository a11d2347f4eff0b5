"""Peak memory of train-seg and prepare-seg on arrays bigger than they may hold (issue 6).

Generates a float32 train_images.npy of 6144 x 512 x 512 x 1 (6 GiB; a sparse file: only the first
slices hold CT-like data, the rest read back as 0 HU), uint8 masks of the same shape and a small val set.
Runs `bodycomp train-seg` on it for a bounded number of steps (as it is, with --low-memory, and with
--low-memory and --workers 0, where the RSS sum is one process's RSS), and
`bodycomp prepare-seg` on a manifest of 6144 labelled 512 x 512 slices (arrays of the same size, written
for real). Because a bounded run reads only a few slices, the train-seg DataLoader (SegmentationDataset,
same workers) is also run alone over every training slice once: a full epoch's reads. Each command
runs as a child process, sampled from /proc (see run_measured) over the process and all its descendants
(DataLoader workers included). Two sums are reported: PSS (smaps_rollup; a page shared by k processes
counts 1/k in each, so the sum is the tree's real footprint) and VmRSS (an upper bound: pages that forked
DataLoader workers share copy-on-write with the main process count once per process). The targets are
checked against the PSS sum; the RSS sum is printed beside it.

The baseline is what reading the arrays whole would take (their size); targets: train-seg < 2.5 GB,
prepare-seg < 1 GB peak RSS. 1 GB = 10^9 bytes.

    python benchmarks/memory.py                 # the full size (needs ~5 GB of real disk for prepare-seg)
    python benchmarks/memory.py --dir /scratch  # where the arrays go (default: the system temp folder)
    python benchmarks/memory.py --tiny          # seconds-long smoke run at 64 px
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_slices import cpu_model, ct_like_series  # noqa: E402

TRAIN_TARGET_GB = 2.5
PREPARE_TARGET_GB = 1.0
GB = 1e9
FILLED = 64  # slices that hold real data; the rest of the sparse file reads as zeros


@dataclass
class Peak:
    pss: int = 0  # bytes, sum of Pss over the process tree (shared pages split between their users)
    rss: int = 0  # bytes, sum of VmRSS over the process tree (shared pages counted in every process)
    processes: int = 0  # most processes seen at once


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # The command name (field 2) may hold spaces; ppid is the second field after its closing ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _read_kib(path: str, key: str) -> int:
    """One `key:  N kB` field of a /proc file, in bytes; 0 once the process has ended."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_pids(root: int) -> list[int]:
    """root and all its descendants (DataLoader workers, pool processes)."""
    children = _children_map()
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, []))
    return pids


def run_measured(args: list[str], interval: float = 0.05) -> tuple[Peak, float, str]:
    """Run a command, sampling its process tree's memory until it exits; returns (peak, seconds, output).

    VmRSS (from /proc/PID/status, cheap) is read every `interval`. PSS needs smaps_rollup, which walks the
    page tables (tens of ms for a torch process) and would perturb what it measures, so it is read at
    most every 0.25 s while RSS is growing past what the last PSS reading saw, and once a second otherwise.
    """
    peak = Peak()
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    last_pss_time, last_pss_rss = 0.0, 0
    while process.poll() is None:
        pids = tree_pids(process.pid)
        rss = sum(_read_kib(f"/proc/{pid}/status", "VmRSS:") for pid in pids)
        peak.rss, peak.processes = max(peak.rss, rss), max(peak.processes, len(pids))
        now = time.perf_counter()
        if (rss > 1.02 * last_pss_rss and now - last_pss_time >= 0.25) or now - last_pss_time >= 1.0:
            peak.pss = max(peak.pss, sum(_read_kib(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids))
            last_pss_time, last_pss_rss = now, rss
        time.sleep(interval)
    reader.join()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed (exit {process.returncode}):\n{''.join(output)[-3000:]}")
    return peak, seconds, "".join(output)


def labels_of(hu: np.ndarray) -> np.ndarray:
    """Plausible tissue labels from HU: fat, muscle, background; no visceral fat needed."""
    return np.digitize(hu, [-200, -30, 150]).astype(np.uint8) % 3


def make_train_data(folder: Path, slices: int, size: int, val: int) -> int:
    """Sparse float32 train images and uint8 masks (N x S x S x 1), small dense val; returns train bytes."""
    folder.mkdir(parents=True)
    images = np.lib.format.open_memmap(folder / "train_images.npy", "w+", np.float32, (slices, size, size, 1))
    masks = np.lib.format.open_memmap(folder / "train_masks.npy", "w+", np.uint8, (slices, size, size, 1))
    hu, _ = ct_like_series(min(FILLED, slices), size, seed=0)
    images[: len(hu), :, :, 0] = hu
    masks[: len(hu), :, :, 0] = labels_of(hu)
    nbytes = images.nbytes + masks.nbytes
    del images, masks  # unmap: the benchmark process must not hold the pages
    hu, _ = ct_like_series(val, size, seed=1)
    np.save(folder / "val_images.npy", hu.astype(np.float32)[..., None])
    np.save(folder / "val_masks.npy", labels_of(hu)[..., None])
    return nbytes


def make_seg_manifest(folder: Path, slices: int, size: int, val: int) -> tuple[Path, int]:
    """A prepare-seg manifest of `slices` rows (a few distinct slices, repeated); returns it and output bytes."""
    folder.mkdir(parents=True)
    hu, _ = ct_like_series(8, size, seed=2)
    for k in range(len(hu)):
        np.save(folder / f"image{k}.npy", hu[k].astype(np.int16))
        np.save(folder / f"mask{k}.npy", labels_of(hu[k]))
    rows = [
        {"id": f"s{i}", "image": f"image{i % 8}.npy", "mask": f"mask{i % 8}.npy", "split": "train"}
        for i in range(slices)
    ]
    rows += [
        {"id": f"v{i}", "image": f"image{i % 8}.npy", "mask": f"mask{i % 8}.npy", "split": "val"} for i in range(val)
    ]
    pd.DataFrame(rows).to_csv(folder / "seg.csv", index=False)
    return folder / "seg.csv", slices * size * size * (2 + 1)


def make_series_manifest(folder: Path, series: int, slices: int, size: int) -> tuple[Path, int]:
    """`series` int16 .npz series of `slices` x size x size for prepare-slices; returns the manifest, one's bytes."""
    folder.mkdir(parents=True)
    rows = []
    for i in range(series):
        hu, z_mm = ct_like_series(slices, size, seed=10 + i)
        np.savez(folder / f"ct{i}.npz", hu=hu, z_mm=z_mm)
        rows.append({"series": f"ct{i}", "path": f"ct{i}.npz", "z_L3": z_mm[slices // 2]})
    pd.DataFrame(rows).to_csv(folder / "series.csv", index=False)
    return folder / "series.csv", hu.nbytes


def stream_pass(data_dir: Path, workers: int) -> None:
    """Child mode: read every train slice once through SegmentationDataset and a DataLoader (a full epoch's
    reads without the model), so that pages a memmap keeps mapped would add up and show in the peak."""
    import torch
    from torch.utils.data import DataLoader

    from bodycomp_cli.data.segmentation import SegmentationDataset, SegmentationSplit

    shape = np.load(data_dir / "train_images.npy", mmap_mode="r").shape
    split = SegmentationSplit(data_dir / "train_images.npy", data_dir / "train_masks.npy", *shape[:3])
    # A small output size keeps the resize cheap; what is read from the memmap is the full slice.
    dataset = SegmentationDataset(split, 64, (40.0, 400.0), None)
    torch.set_num_threads(1)
    seen = sum(len(batch["index"]) for batch in DataLoader(dataset, batch_size=32, num_workers=workers))
    assert seen == shape[0]


def report(name: str, peak: Peak, seconds: float, data_bytes: int, target_gb: float) -> None:
    print(f"{name}: baseline (arrays read whole) {data_bytes / GB:6.2f} GB")
    print(
        f"{name}: peak memory {peak.pss / GB:6.2f} GB PSS (RSS summed per process: {peak.rss / GB:.2f} GB) over up "
        f"to {peak.processes} processes, {seconds:.0f} s; ratio to baseline {peak.pss / data_bytes:.3f}"
    )
    verdict = "met" if peak.pss / GB < target_gb else "NOT met"
    print(f"{name}: target < {target_gb} GB: ratio {peak.pss / GB / target_gb:.2f} ({verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="64 slices of 64 px (smoke test; targets not meaningful)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the arrays (default: temp folder)")
    parser.add_argument("--slices", type=int, default=6144)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4, help="train-seg steps (one epoch of --steps-per-epoch)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="train-seg DataLoader workers")
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--series", type=int, default=8, help="prepare-slices: series of --series-slices each")
    parser.add_argument("--series-slices", type=int, default=400)
    parser.add_argument("--skip-prepare", action="store_true", help="measure train-seg only")
    parser.add_argument("--stream-child", type=Path, default=None, help=argparse.SUPPRESS)  # internal: see stream_pass
    args = parser.parse_args()
    if args.stream_child is not None:
        return stream_pass(args.stream_child, args.workers)
    val = 8
    if args.tiny:
        args.slices, args.size, args.steps, args.batch, args.encoder, val = 64, 64, 1, 2, "resnet18", 2
        args.series, args.series_slices = 3, 8
        args.workers = 1
    bodycomp = [sys.executable, "-m", "bodycomp_cli"]
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}")
    with tempfile.TemporaryDirectory(prefix="bodycomp-bench-memory-", dir=args.dir) as tmp:
        root = Path(tmp)
        data_bytes = make_train_data(root / "data", args.slices, args.size, val)
        print(
            f"data: train_images.npy float32 {args.slices} x {args.size} x {args.size} x 1 (sparse), uint8 masks, "
            f"{val} val slices; train-seg {args.steps} steps of batch {args.batch}, {args.workers} workers, "
            f"unet/{args.encoder} at {args.size} px"
        )
        # As it is; with --low-memory; and with --low-memory and no workers, where the RSS sum is one process's.
        low = ["--low-memory"]
        variants = [("default", [], args.workers), ("low", low, args.workers), ("low0", low, 0)]
        for run_name, extra, workers in variants:
            name = f"train-seg {' '.join(extra)} --workers {workers}".replace("  ", " ")
            train = [*bodycomp, "train-seg", root / "data", root / "models", "-a", run_name, "-g", "0", "-e", "1"]
            train += ["--steps-per-epoch", args.steps, "-b", args.batch, "--workers", workers, *extra]
            train += ["--encoder", args.encoder, "--image-size", args.size, "--quiet"]
            peak, seconds, _ = run_measured([str(a) for a in train])
            if not (root / "models" / run_name / "checkpoint_last.pt").is_file():
                raise SystemExit(f"{name} wrote no checkpoint")
            report(name, peak, seconds, data_bytes, TRAIN_TARGET_GB)
        stream = [sys.executable, __file__, "--stream-child", root / "data", "--workers", args.workers]
        peak, seconds, _ = run_measured([str(a) for a in stream])
        report(f"train-seg loader, one pass over all {args.slices} slices", peak, seconds, data_bytes, TRAIN_TARGET_GB)
        if args.skip_prepare:
            return
        manifest, out_bytes = make_seg_manifest(root / "slices", args.slices, args.size, val)
        prepare = [*bodycomp, "prepare-seg", manifest, root / "prepared", "--size", args.size]
        peak, seconds, _ = run_measured([str(a) for a in prepare])
        built = np.load(root / "prepared" / "train_images.npy", mmap_mode="r").shape
        if built != (args.slices, args.size, args.size, 1):
            raise SystemExit(f"prepare-seg built {built}")
        print(f"prepare-seg: built train_images.npy {built} int16 and masks ({out_bytes / GB:.2f} GB written)")
        report("prepare-seg", peak, seconds, out_bytes, PREPARE_TARGET_GB)
        shutil.rmtree(root / "slices")
        shutil.rmtree(root / "prepared")
        measure_prepare_slices(root / "series", bodycomp, args)


def measure_prepare_slices(folder: Path, bodycomp: list[str], args: argparse.Namespace) -> None:
    """prepare-slices holds at most one series per worker: its peak is compared with what that allows."""
    manifest, one = make_series_manifest(folder, args.series, args.series_slices, args.size)
    workers = 2
    command = [*bodycomp, "prepare-slices", manifest, folder / "out", "--workers", workers]
    idle, _, _ = run_measured([*bodycomp[:1], "-c", "import bodycomp_cli.prepare.slices"])
    peak, seconds, _ = run_measured([str(a) for a in command])
    written = len(list((folder / "out").rglob("*.png")))
    print(
        f"prepare-slices: {args.series} series of {args.series_slices} x {args.size} x {args.size} int16 "
        f"({one / GB:.2f} GB each, {args.series * one / GB:.2f} GB in all), {workers} workers, {written} PNGs"
    )
    # One series in a worker: its int16 HU, plus the uint8 windowed copy and a slice's PNG buffers.
    allowed = (1 + workers) * idle.pss + workers * 1.5 * one
    print(
        f"prepare-slices: peak memory {peak.pss / GB:6.2f} GB PSS (RSS summed per process: {peak.rss / GB:.2f} GB) "
        f"over up to {peak.processes} processes, {seconds:.0f} s; a process's imports alone: {idle.pss / GB:.2f} GB"
    )
    verdict = "met" if peak.pss <= allowed else "NOT met"
    print(
        f"prepare-slices: target <= {allowed / GB:.2f} GB (3 processes' imports + {workers} x 1.5 series): "
        f"ratio {peak.pss / allowed:.2f} ({verdict}); all series at once would be {args.series * one / GB:.2f} GB"
    )


if __name__ == "__main__":
    main()
