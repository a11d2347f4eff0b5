"""benchmarks/gpu_check.py plans every check the issue lists for N GPUs, and its table shows pass or FAIL.

Running it (even --tiny: three subprocesses that each import torch) is kept out of the suite; the paths it
drives are tested directly (test_gpu_paths.py, test_ddp.py, test_amp.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import gpu_check  # noqa: E402

DATA = {"seg": Path("d/seg"), "select": Path("d/select"), "series": Path("d/series.csv")}


def plan(gpus: int, tiny: bool = False) -> dict[str, gpu_check.Check]:
    sizes = gpu_check.sizes_for(gpus, tiny)
    return {check.name: check for check in gpu_check.plan(gpus, DATA, Path("m"), sizes, tiny)}


def test_four_gpus_get_every_check_of_the_issue():
    checks = plan(4)
    assert list(checks) == [
        "seg-g1-amp", "seg-g1-no-amp", "seg-g4-dataparallel", "seg-ddp4",
        "select-g1-amp", "select-g1-no-amp", "select-g4-dataparallel", "select-ddp4",
        "resume select-ddp4 on 1 GPU", "estimate -g 1",
    ]  # fmt: skip
    assert checks["seg-g1-no-amp"].command[-1] == "--no-amp"
    assert checks["seg-g4-dataparallel"].command[-2:] == ["-g", "4"]
    ddp = checks["select-ddp4"].command
    assert "--nproc_per_node=4" in ddp and "-g" not in ddp and ddp[ddp.index("-b") + 1] == "64"
    resume = checks["resume select-ddp4 on 1 GPU"]
    assert resume.env == {"CUDA_VISIBLE_DEVICES": "0"} and resume.command[-3:] == ["--resume", "-g", "1"]
    assert resume.command[resume.command.index("-e") + 1] == "3" and resume.epochs == 3
    assert resume.command[resume.command.index("-b") + 1] == "64"  # the global batch it was trained with
    assert checks["estimate -g 1"].command[-2:] == ["-g", "1"]


def test_one_gpu_and_no_gpu():
    assert list(plan(1)) == [
        "seg-g1-amp", "seg-g1-no-amp", "seg-ddp1", "select-g1-amp", "select-g1-no-amp", "select-ddp1",
        "resume select-g1-amp on 1 GPU", "estimate -g 1",
    ]  # fmt: skip
    cpu = plan(0)
    assert list(cpu) == ["seg-cpu", "select-cpu", "select-ddp2-gloo", "resume select-cpu", "estimate -g 0"]
    assert "--nproc_per_node=2" in cpu["select-ddp2-gloo"].command
    assert list(plan(0, tiny=True)) == ["seg-cpu", "select-cpu", "estimate -g 0"]


def test_table_shows_pass_fail_and_figures():
    ok = gpu_check.Check("seg-g1-amp", [], metric="val_dice_mean", passed=True, speed=812.5, memory_gib=3.25)
    ok.value = 0.5
    failed = gpu_check.Check("seg-ddp2", [], note="exit 1: boom")
    lines = gpu_check.table([ok, failed]).splitlines()
    assert lines[2].split()[:5] == ["seg-g1-amp", "pass", "812.5", "3.25", "dice_mean"]
    assert lines[3].split()[:2] == ["seg-ddp2", "FAIL"] and lines[3].endswith("exit 1: boom")
