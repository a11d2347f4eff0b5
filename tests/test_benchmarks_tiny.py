"""Every benchmark script runs in its --tiny smoke mode and prints its figures (no wall-clock thresholds here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_tiny(script: str, *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *extra], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize(
    ("script", "lines"),
    [
        ("loaders.py", ["segmentation loader (64 px): measured", "selection loader (64 px PNG -> 32): measured"]),
        ("memory_model_only.py", ["bare training (plain), unet/resnet34 64 px batch 4:"]),
        ("engine_overhead.py", ["bare PyTorch loop:", "bodycomp engine:", "ratio:"]),
        ("cpu_training.py", ["linknet/resnet18, 32 px, batch 2: fp32", "resnet18, 32 px, batch 2: fp32"]),
        (
            "estimate.py",
            ["old path (fp32, contiguous", "new path (as `bodycomp estimate` now", "ratio:", "bare selection"],
        ),
        (
            "estimate_overhead.py",
            ["old way ms/series", "growth of the per-series cost, 10 -> 40 series", "overlap: 4 series"],
        ),
        (
            "memory.py",
            [
                "train-seg --workers 1: peak memory",
                "train-seg --low-memory --workers 1: peak memory",
                "train-seg --low-memory --workers 0: peak memory",
                "prepare-seg: built train_images.npy (64, 64, 64, 1)",
                "prepare-slices: 3 series of 8 x 64 x 64 int16",
                "prepare-slices: peak memory",
            ],
        ),
    ],
)
def test_benchmark_runs_tiny_and_reports(script: str, lines: list[str]) -> None:
    output = run_tiny(script, "--tiny")
    assert output.startswith("machine: ")
    for line in lines:
        assert line in output, output


def test_run_all_lists_every_script_in_order() -> None:
    def listed(*extra: str) -> list[str]:
        output = run_tiny("run_all.py", "--tiny", "--dry-run", *extra)
        lines = [line for line in output.splitlines() if line.startswith("=== ") and ".py" in line]
        assert all("--tiny" in line for line in lines)
        return [line.split()[1].rstrip(":") for line in lines]

    review = {"held_out.py", "review_flag.py", "absent_levels.py", "realct_levels.py", "review_candidates.py"}
    assert review <= {p.name for p in BENCHMARKS.glob("*.py")}  # make bench-review's, with arguments of their own
    present = {p.name for p in BENCHMARKS.glob("*.py")} - {"run_all.py"} - review
    assert set(listed("--accuracy")) == present
    assert set(listed()) == present - {"accuracy.py"}  # long: only with --accuracy (make bench-accuracy)
    assert set(listed("--skip", "memory")) == present - {"accuracy.py", "memory.py"}
    order = listed()
    assert order.index("loaders.py") < order.index("engine_overhead.py") < order.index("memory.py")
