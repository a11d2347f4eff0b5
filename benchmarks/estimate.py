"""estimate throughput (slices/s) on one CT-like series, on the CPU by default: the old path against the new one.

Models with the default architectures and sizes (slice selection densenet121 at 256 px, segmentation
unet/resnet34 at 512 px) are made by one training step each, through the typed training functions:
throughput does not depend on how good the weights are. The timed part is run_estimate on the series:
reading, QC, the selection model on every slice, segmentation of the chosen slice, measurements, preview.

One run measures, in this order (the allocator setting cannot be undone, so the old path goes first):
- the old path, as estimate ran before issue 15: fp32 (--no-amp), models in the contiguous layout, glibc's
  default malloc settings;
- the bare selection model (forward only, batch as estimate's) as it ran before: fp32, contiguous, default malloc;
- the new path, as `bodycomp estimate --amp` runs now: the CLI's malloc setting (engine/memory.keep_freed_memory),
  channels_last models, bf16 autocast where the CPU has bf16 instructions (without --amp the CPU runs fp32);
- the bare selection model (forward only, batch as estimate's) in fp32 and bf16, with the new layout and
  allocator: the limit the pipeline can approach.

    python benchmarks/estimate.py            # one 300-slice 512 x 512 series (the issue's figure)
    python benchmarks/estimate.py --tiny     # seconds-long smoke run at 32 px
    python benchmarks/estimate.py --agreement DEMO_OUT   # chosen slices, new vs fp32 path (bodycomp demo DEMO_OUT)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_slices import cpu_model, cpu_seconds, ct_like_series, default_workers  # noqa: E402

from bodycomp_cli.core.amp import choose_amp  # noqa: E402
from bodycomp_cli.core.preprocess import window_hu  # noqa: E402
from bodycomp_cli.engine.config import EngineConfig  # noqa: E402
from bodycomp_cli.engine.memory import keep_freed_memory  # noqa: E402
from bodycomp_cli.estimate.inputs import collect_inputs  # noqa: E402
from bodycomp_cli.estimate.models import load_estimator_models  # noqa: E402
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate  # noqa: E402
from bodycomp_cli.tasks.segmentation import SegmentationSettings, train_segmentation  # noqa: E402
from bodycomp_cli.tasks.slice_selection import SliceSelectionSettings, train_slice_selection  # noqa: E402

ONE_STEP = {"epochs": 1, "batch_size": 2, "steps_per_epoch": 1, "workers": 0, "quiet": True, "gpus": 0}


def one_step_models(root: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """A segmentation run and a slice-selection run with the benchmark's architectures, one step each."""
    hu, _ = ct_like_series(4, args.seg_size, seed=1)
    masks = np.where(hu > -30, 1, np.where(hu > -190, 2, 0)).astype(np.uint8)
    seg_data = root / "seg_data"
    seg_data.mkdir()
    for split in ("train", "val"):
        np.save(seg_data / f"{split}_images.npy", hu[:2, ..., None])
        np.save(seg_data / f"{split}_masks.npy", masks[:2, ..., None])
    seg = train_segmentation(
        seg_data,
        root / "models",
        SegmentationSettings(encoder=args.seg_encoder, image_size=args.seg_size),
        EngineConfig(tensorboard=False, **ONE_STEP),
        name="seg",
    )
    slice_data = root / "slice_data"
    pixels = window_hu(ct_like_series(4, 64, seed=2)[0])
    for split in ("train", "val"):
        (slice_data / "images" / split).mkdir(parents=True)
        for index, image in enumerate(pixels):
            iio.imwrite(slice_data / "images" / split / f"{index:06d}.png", image)
        (slice_data / "meta").mkdir(exist_ok=True)
        pd.DataFrame({"ZOffset_L3": [-20.0, -5.0, 5.0, 20.0]}).to_csv(slice_data / "meta" / f"{split}.csv")
    select = train_slice_selection(
        slice_data,
        root / "models",
        SliceSelectionSettings(levels=["L3"], arch=args.select_arch, image_size=args.select_size),
        EngineConfig(tensorboard=False, learning_rate=1e-4, **ONE_STEP),
        name="select",
    )
    return seg, select


def estimate_rate(root: Path, seg: Path, select: Path, args: argparse.Namespace, old: bool) -> tuple[float, float]:
    """Slices per second and per CPU second of run_estimate on the benchmark series, by the old or the new path."""
    import torch

    models = load_estimator_models(select, [str(seg)], ["L3"], gpus=0, batch_size=args.batch_size, amp=not old)
    if old:  # before issue 15, models were used in the layout they were built in
        predictors = [models.selector, *models.segmenters.values()]
        for run in {id(p.run): p.run for p in predictors}.values():
            run.model.to(memory_format=torch.contiguous_format)
    options = EstimateOptions(show_progress=False, overwrite=True)
    # Untimed first: a short series, so one-time costs (oneDNN's kernels for each shape) are paid before timing.
    run_estimate(collect_inputs([root / "warm_up.npz"]), models, root / "out", options)
    cpu_before = cpu_seconds()
    summary = run_estimate(collect_inputs([root / "series.npz"]), models, root / "out", options)
    return summary.slices / summary.seconds, summary.slices / (cpu_seconds() - cpu_before)


def bare_model_rate(select: Path, args: argparse.Namespace, amp: bool, batches: int = 5, old: bool = False) -> float:
    """Slices/s of the selection model's forward pass alone on a random batch: the fastest of `batches` timed
    passes after an untimed one (the least disturbed by other work on a shared machine)."""
    import torch

    from bodycomp_cli.tasks import load_predictor

    run = load_predictor(select).run  # on the CPU; autocast below as asked
    if old:
        run.model.to(memory_format=torch.contiguous_format)
    images = torch.rand(args.batch_size, 1, args.select_size, args.select_size)
    seconds = []
    with torch.no_grad(), choose_amp("cpu", amp).autocast():
        run.model(images)
        for _ in range(batches):
            started = time.perf_counter()
            run.model(images)
            seconds.append(time.perf_counter() - started)
    return args.batch_size / min(seconds)


def agreement(demo: Path) -> None:
    """Print how often the new path chooses the fp32 path's slice, on every phantom series of a demo output."""
    from bodycomp_cli.core.selection import select_level_slice
    from bodycomp_cli.io.volumes import read_volume

    select, seg = demo / "models" / "select", demo / "models" / "seg"
    exact = load_estimator_models(select, [str(seg)], None, gpus=0, amp=False)
    fast = load_estimator_models(select, [str(seg)], None, gpus=0, amp=True)
    table = pd.read_csv(demo / "phantoms" / "series.csv", dtype={"series": str})
    shifts, pixels_same = [], []
    for path in table["path"]:
        volume = read_volume(demo / "phantoms" / path)
        outputs = {name: m.slice_outputs(volume.hu, volume.z_mm) for name, m in (("exact", exact), ("fast", fast))}
        for column, level in enumerate(exact.levels):
            chosen = {
                name: select_level_slice(values[:, column], volume.z_mm, exact.threshold_mm).index
                for name, values in outputs.items()
            }
            shifts.append(abs(chosen["fast"] - chosen["exact"]))
            hu = volume.hu[[chosen["exact"]]]  # the same slice through both segmentation paths
            pixels_same.append(float(np.mean(exact.segment(level, hu) == fast.segment(level, hu))))
    shifts_array = np.array(shifts)
    print(f"agreement on {len(table)} phantom series of {demo} ({', '.join(exact.levels)}): new path vs fp32 path")
    print(
        f"chosen slice identical: {int(np.sum(shifts_array == 0))}/{len(shifts)}, within one slice: "
        f"{int(np.sum(shifts_array <= 1))}/{len(shifts)}, largest shift {int(shifts_array.max())} slices"
    )
    print(f"segmentation labels equal: {np.mean(pixels_same):.5f} of pixels (lowest slice {min(pixels_same):.5f})")


def load_average() -> str:
    return "load average " + " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="smoke run: 40 slices of 64 px, 32 px models")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="in-plane size of the series")
    parser.add_argument("--select-arch", default="densenet121")
    parser.add_argument("--select-size", type=int, default=256)
    parser.add_argument("--seg-encoder", default="resnet34")
    parser.add_argument("--seg-size", type=int, default=512)
    parser.add_argument("-b", "--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a busy CPU")
    parser.add_argument(
        "--agreement", type=Path, metavar="DEMO_OUT", help="instead: new vs fp32 path on a demo's phantom series"
    )
    args = parser.parse_args()
    if args.agreement is not None:
        agreement(args.agreement)
        return
    if args.tiny:
        args.slices, args.size, args.select_arch, args.select_size = 40, 64, "resnet10t", 32
        args.seg_encoder, args.seg_size = "resnet18", 32
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"machine: {default_workers()} cores, {cpu_model()}; torch {torch.__version__}, {threads} threads")
    print(
        f"series: {args.slices} slices of {args.size} x {args.size}; selection {args.select_arch} at "
        f"{args.select_size} px, segmentation unet/{args.seg_encoder} at {args.seg_size} px, batch {args.batch_size}"
    )
    print(f"bf16 autocast on this CPU: {choose_amp('cpu', True).describe(training=False)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bodycomp-bench-estimate-") as tmp:
        root = Path(tmp)
        seg, select = one_step_models(root, args)
        hu, z_mm = ct_like_series(args.slices, args.size, seed=0)
        np.savez(root / "series.npz", hu=hu, z_mm=z_mm, pixel_spacing=np.array([0.8, 0.8]))
        warm = slice(0, min(args.slices, args.batch_size + 8))  # a full batch and a short one
        np.savez(root / "warm_up.npz", hu=hu[warm], z_mm=z_mm[warm], pixel_spacing=np.array([0.8, 0.8]))
        print(f"before: {load_average()}", flush=True)
        old, old_cpu = estimate_rate(root, seg, select, args, old=True)
        print(
            f"old path (fp32, contiguous, default malloc, every slice, no prefetch): {old:.1f} slices/s "
            f"({old_cpu:.1f} per CPU second)",
            flush=True,
        )
        before = bare_model_rate(select, args, amp=False, old=True)
        print(f"bare selection model as before (fp32, contiguous, default malloc): {before:.1f} slices/s", flush=True)
        kept = keep_freed_memory()
        new, new_cpu = estimate_rate(root, seg, select, args, old=False)
        print(
            f"new path (as `bodycomp estimate` now, with --amp; malloc keeps freed memory: {kept}): {new:.1f} slices/s "
            f"({new_cpu:.1f} per CPU second)"
        )
        print(f"ratio: {new / old:.2f}x (per CPU second {new_cpu / old_cpu:.2f}x; issue 15 target >= 3x)", flush=True)
        fp32, bf16 = bare_model_rate(select, args, amp=False), bare_model_rate(select, args, amp=True)
        print(
            f"bare selection model, channels_last, best of 5 batches: fp32 {fp32:.1f} slices/s, "
            f"autocast {bf16:.1f} slices/s (the limit)"
        )
        print(f"after: {load_average()}")


if __name__ == "__main__":
    main()
