"""CPU training step: fp32 against channels_last, bf16 autocast and both, on the demo's two models.

One torch thread, CPU time of the training thread (forward, loss, backward, Adam step), best of --steps
steps after a warm-up one: CPU time, not wall time, so the figure holds on a machine shared with other work.
malloc is set as the CLI sets it (engine/memory.keep_freed_memory). The demo trains linknet/resnet18 at
128 px (batch 16) for the tissues and resnet18 at 64 px (batch 32) for slice selection.

    python benchmarks/cpu_training.py          # the demo's models and batches
    python benchmarks/cpu_training.py --tiny   # seconds-long smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_slices import cpu_model, default_workers  # noqa: E402

from bodycomp_cli.core.amp import cpu_has_bf16  # noqa: E402
from bodycomp_cli.engine.memory import keep_freed_memory  # noqa: E402

VARIANTS = {  # name: (autocast dtype or None, memory format)
    "fp32": (None, torch.contiguous_format),
    "channels_last": (None, torch.channels_last),
    "bf16": (torch.bfloat16, torch.contiguous_format),
    "bf16 + channels_last": (torch.bfloat16, torch.channels_last),
}


def step_cpu_seconds(model: torch.nn.Module, images, target, loss, dtype, layout, steps: int) -> float:
    """Best CPU seconds of one training step of `model` in the given precision and layout."""
    model = model.to(memory_format=layout).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    best = float("inf")
    for step in range(steps + 1):
        started = time.thread_time()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            value = loss(model(images).float(), target)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if step:  # the first step builds oneDNN's kernels for the shapes
            best = min(best, time.thread_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="32 px, batch 2, one step (smoke test)")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    kept = keep_freed_memory()
    import segmentation_models_pytorch as smp
    import timm

    seg_size, seg_batch, select_size, select_batch = (32, 2, 32, 2) if args.tiny else (128, 16, 64, 32)
    steps = 1 if args.tiny else args.steps
    generator = torch.Generator().manual_seed(0)
    cases = {
        f"linknet/resnet18, {seg_size} px, batch {seg_batch}": (
            lambda: smp.create_model(
                "linknet", encoder_name="resnet18", encoder_weights=None, classes=4, in_channels=1
            ),
            torch.rand(seg_batch, 1, seg_size, seg_size, generator=generator),
            torch.randint(0, 4, (seg_batch, seg_size, seg_size), generator=generator),
            F.cross_entropy,
        ),
        f"resnet18, {select_size} px, batch {select_batch}": (
            lambda: timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=1),
            torch.rand(select_batch, 1, select_size, select_size, generator=generator),
            torch.rand(select_batch, 1, generator=generator),
            F.binary_cross_entropy_with_logits,
        ),
    }
    print(f"machine: {default_workers()} cores, {cpu_model()}; torch {torch.__version__}, 1 thread")
    print(f"bf16 instructions: {cpu_has_bf16()}; malloc keeps freed memory: {kept}; best of {steps} steps")
    for name, (build, images, target, loss) in cases.items():
        torch.manual_seed(0)
        model = build()
        seconds = {
            variant: step_cpu_seconds(model, images, target, loss, dtype, layout, steps)
            for variant, (dtype, layout) in VARIANTS.items()
        }
        parts = [f"{variant} {1000 * s:.0f} ms ({seconds['fp32'] / s:.2f}x)" for variant, s in seconds.items()]
        print(f"{name}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
