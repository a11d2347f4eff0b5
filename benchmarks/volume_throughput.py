"""--volume's segmentation throughput on the CPU: slices/s over a range, against one slice per call.

The segmentation run has the default architecture (unet/resnet34 at 512 px), made by one training step
(throughput does not depend on the weights). Both rates run through EstimatorModels.segment, as estimate does,
with estimate's default AMP choice (load_estimator_models amp=None) and the CLI's default batch (-b 32):
- range: range_measures.tally_slices over SLICES slices of SIZE x SIZE, segmented RANGE_BATCH (16) at a time,
  then gated and counted, as --volume and --per-vertebra do;
- one slice: one call per slice, as estimate segments each level's chosen slice today.
Both are the best of --repeats timed passes after an untimed one (a shared CPU disturbs single passes), in
wall seconds and in this process's CPU seconds.

    python benchmarks/volume_throughput.py               # 64 slices of 512 x 512
    python benchmarks/volume_throughput.py --tiny        # smoke run at 64 px, 32 px model
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from estimate import one_step_models  # noqa: E402
from prepare_slices import cpu_model, ct_like_series, default_workers  # noqa: E402

from bodycomp_cli.estimate.models import load_estimator_models  # noqa: E402
from bodycomp_cli.estimate.range_measures import tally_slices  # noqa: E402


def best_seconds(work, repeats: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the fastest of `repeats` timed passes after an untimed one
    (one-time costs: kernel choice for each shape). CPU seconds tell the work apart from a shared CPU's waits."""
    work()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        work()
        best = min(best, (time.perf_counter() - started, time.process_time() - cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="smoke run: 8 slices of 64 px, a 32 px model")
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seg-encoder", default="resnet34")
    parser.add_argument("--seg-size", type=int, default=512)
    parser.add_argument("-b", "--batch-size", type=int, default=32)
    parser.add_argument("--one-slice-calls", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    # one_step_models also makes a selection run (resnet10t at 32 px: cheap); only the segmentation is timed
    args.select_arch, args.select_size = "resnet10t", 32
    if args.tiny:
        args.slices, args.size, args.seg_encoder, args.seg_size, args.one_slice_calls = 8, 64, "resnet18", 32, 2
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"machine: {default_workers()} cores, {cpu_model()}; torch {torch.__version__}, {threads} threads")
    series = f"{args.slices} slices of {args.size} x {args.size}"
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"segmentation unet/{args.seg_encoder} at {args.seg_size} px; {series}; batch {args.batch_size}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bodycomp-bench-volume-") as tmp:
        seg, select = one_step_models(Path(tmp), args)
        models = load_estimator_models(select, [str(seg)], ["L3"], gpus=0, batch_size=args.batch_size)
        hu, _ = ct_like_series(args.slices, args.size, seed=0)
        classes = models.classes("L3")

        def segment(slices):
            return models.segment("L3", slices)

        ranged = best_seconds(lambda: tally_slices(hu, range(args.slices), segment, classes, "none"), args.repeats)
        calls = args.one_slice_calls
        single = best_seconds(lambda: [segment(hu[k : k + 1]) for k in range(calls)], args.repeats)
    print(f"range (--volume): {args.slices / ranged[0]:.2f} slices/s ({args.slices / ranged[1]:.2f} per CPU second)")
    print(f"one slice per call: {calls / single[0]:.2f} slices/s ({calls / single[1]:.2f} per CPU second)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
