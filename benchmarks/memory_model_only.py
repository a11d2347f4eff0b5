"""Peak RSS and step time of a bare unet/resnet34 training step at 512 px, batch 4, no data loading.

The baseline for memory.py, and the cost of each part of --low-memory (docs/performance.md):
    python benchmarks/memory_model_only.py                        # plain
    python benchmarks/memory_model_only.py --variant low-memory   # checkpointing + pinned mmap threshold
    python benchmarks/memory_model_only.py --variant checkpointing   (or --variant mmap-threshold)
    python benchmarks/memory_model_only.py --tiny                 # 64 px smoke mode
Each variant needs its own process: peak RSS and malloc settings last for the process's life.
"""

import argparse
import os
import resource
import time

import segmentation_models_pytorch as smp
import torch

from bodycomp_cli.engine import memory

VARIANTS = ("plain", "checkpointing", "mmap-threshold", "low-memory")
STEPS = 4  # the first is a warm-up (allocator and oneDNN caches); the others are averaged


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # ru_maxrss is in kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--variant", choices=VARIANTS, default="plain")
    args = parser.parse_args()
    size = 64 if args.tiny else 512
    print(f"machine: {os.cpu_count()} cores")
    torch.manual_seed(0)
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=4)
    if args.variant == "checkpointing":
        memory._recompute_blocks(model)
    elif args.variant == "mmap-threshold":
        memory.return_freed_buffers_to_os()
    elif args.variant == "low-memory":  # what train-* --low-memory does: both measures
        memory.return_freed_buffers_to_os()
        memory.enable_low_memory(model)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    images, labels = torch.rand(4, 1, size, size), torch.randint(0, 4, (4, size, size))
    print(f"after import + model: {peak_gb():.2f} GB peak RSS")
    seconds = []
    for _ in range(STEPS):
        started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
    mean = sum(seconds[1:]) / (STEPS - 1)
    print(
        f"bare training ({args.variant}), unet/resnet34 {size} px batch 4: {mean:.2f} s/step "
        f"(mean of steps 2-{STEPS}), {peak_gb():.2f} GB peak RSS"
    )


if __name__ == "__main__":
    main()
