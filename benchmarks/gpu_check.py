"""GPU acceptance check: run this first on a new cluster node (a few minutes on phantoms).

With N visible GPUs it trains both models on phantom data with -g 1, -g N (DataParallel) and under torchrun
(DDP, one process per GPU), with mixed precision on and off; resumes a run on fewer GPUs than it was trained on
(CUDA_VISIBLE_DEVICES=0); and runs estimate with -g 1. It prints one table (samples/s, peak GPU memory, the
validation metric) with pass or FAIL per check, and exits 1 if any check failed.
Without a GPU it says so, runs the CPU parts (and DDP over two gloo processes), and exits 0 when they pass.

    python benchmarks/gpu_check.py                # the full check (on a GPU node: under 5 minutes)
    python benchmarks/gpu_check.py --tiny         # seconds-long CPU smoke run (the test suite's)
    python benchmarks/gpu_check.py --keep DIR     # keep the phantoms, runs and logs in DIR
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from bodycomp_cli.phantoms.writer import generate_phantoms
from bodycomp_cli.prepare.seg import prepare_seg
from bodycomp_cli.prepare.slices import prepare_slices

BODYCOMP = [sys.executable, "-m", "bodycomp_cli"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
SPEED = re.compile(r"train ([\d.]+) samples/s")
MEMORY = re.compile(r"peak GPU memory ([\d.]+) GiB")


@dataclass
class Check:
    name: str
    command: list[str]
    run_dir: Path | None = None  # a training run: its history.csv gives the metric
    metric: str = ""  # the history column shown (val_dice_mean or val_error_mm)
    epochs: int = 0  # the rows history.csv must hold
    env: dict[str, str] = field(default_factory=dict)
    passed: bool = False
    note: str = ""
    speed: float | None = None
    memory_gib: float | None = None
    value: float | None = None
    seconds: float = 0.0


@dataclass
class Sizes:
    series: int  # phantom series (each gives slices for both models)
    phantom_px: int
    image_px: int  # model input size for both tasks
    epochs: int
    steps: int  # steps per epoch
    batch: int  # global batch per GPU (times the number of devices)


def sizes_for(gpus: int, tiny: bool) -> Sizes:
    if tiny:
        return Sizes(series=3, phantom_px=64, image_px=32, epochs=1, steps=1, batch=2)
    if gpus == 0:
        return Sizes(series=4, phantom_px=64, image_px=64, epochs=2, steps=2, batch=4)
    # every DDP rank needs validation slices: about a fifth of the series, 4 labelled slices each, go to val
    return Sizes(series=max(8, 2 * gpus), phantom_px=256, image_px=256, epochs=2, steps=20, batch=16)


def make_data(root: Path, sizes: Sizes) -> dict[str, Path]:
    phantoms = root / "phantoms"
    generate_phantoms(phantoms, n_series=sizes.series, size=sizes.phantom_px, seg_slices=4, progress=False)
    prepare_seg(phantoms / "seg.csv", root / "seg_data", size=sizes.phantom_px)
    prepare_slices(phantoms / "series.csv", root / "slice_data", levels=["L3"])
    return {"seg": root / "seg_data", "select": root / "slice_data", "series": phantoms / "series.csv"}


def train_command(task: str, data: dict[str, Path], models: Path, name: str, sizes: Sizes, batch: int) -> list[str]:
    command = ["train-seg" if task == "seg" else "train-select", str(data[task]), str(models), "-a", name]
    command += ["-e", str(sizes.epochs), "--steps-per-epoch", str(sizes.steps), "-b", str(batch)]
    command += ["--image-size", str(sizes.image_px)]
    if task == "seg":
        command += ["--encoder", "resnet18" if sizes.image_px < 64 else "resnet34"]
    else:
        command += ["--arch", "resnet10t" if sizes.image_px < 64 else "densenet121", "-L", "L3"]
    return command


def plan(gpus: int, data: dict[str, Path], models: Path, sizes: Sizes, tiny: bool) -> list[Check]:
    """The checks for this machine, in order (a resume follows the run it resumes)."""
    checks: list[Check] = []
    metric = {"seg": "val_dice_mean", "select": "val_error_mm"}

    def train(task: str, name: str, launcher: list[str], gpu_option: list[str], batch: int, extra=(), env=None):
        run = models / name
        command = [*launcher, *train_command(task, data, models, name, sizes, batch), *gpu_option, *extra]
        checks.append(Check(name, command, run, metric[task], sizes.epochs, env or {}))

    for task in ("seg", "select"):
        if gpus == 0:
            train(task, f"{task}-cpu", BODYCOMP, ["-g", "0"], sizes.batch, ["--workers", "0"])
            continue
        train(task, f"{task}-g1-amp", BODYCOMP, ["-g", "1"], sizes.batch)
        train(task, f"{task}-g1-no-amp", BODYCOMP, ["-g", "1"], sizes.batch, ["--no-amp"])
        if gpus > 1:
            train(task, f"{task}-g{gpus}-dataparallel", BODYCOMP, ["-g", str(gpus)], sizes.batch * gpus)
        ddp = [*TORCHRUN, f"--nproc_per_node={gpus}", "-m", "bodycomp_cli"]
        train(task, f"{task}-ddp{gpus}", ddp, [], sizes.batch * gpus)
    if gpus == 0 and not tiny:  # DDP over two CPU processes (gloo): torchrun's own path, minus NCCL
        ddp = [*TORCHRUN, "--nproc_per_node=2", "-m", "bodycomp_cli"]
        train("select", "select-ddp2-gloo", ddp, [], sizes.batch, ["--workers", "0"])
    resumed = f"select-ddp{gpus}" if gpus > 1 else ("select-g1-amp" if gpus else "select-cpu")
    if not tiny:
        more = sizes.epochs + 1
        batch = sizes.batch * max(1, gpus)  # the global batch it was trained with
        command = [*BODYCOMP, *train_command("select", data, models, resumed, sizes, batch), "--resume"]
        command[command.index("-e") + 1] = str(more)
        command += ["-g", "1"] if gpus else ["-g", "0", "--workers", "0"]
        note = "CUDA_VISIBLE_DEVICES=0" if gpus > 1 else ""
        checks.append(
            Check(f"resume {resumed} on 1 GPU" if gpus else f"resume {resumed}", command, models / resumed,
                  metric["select"], more, {"CUDA_VISIBLE_DEVICES": "0"} if gpus > 1 else {}, note=note)
        )  # fmt: skip
    seg_run, select_run = (models / "seg-g1-amp", models / "select-g1-amp") if gpus else (
        models / "seg-cpu", models / "select-cpu")  # fmt: skip
    estimate = [*BODYCOMP, "estimate", str(data["series"]), "--select-model", str(select_run)]
    estimate += ["--seg-model", str(seg_run), "-o", str(models.parent / "estimate"), "-g", "1" if gpus else "0"]
    checks.append(Check(f"estimate -g {1 if gpus else 0}", estimate))
    return checks


def run_check(check: Check, log_dir: Path) -> None:
    env = {**os.environ, **check.env, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    done = subprocess.run(check.command, env=env, capture_output=True, text=True)
    check.seconds = time.perf_counter() - started
    log = log_dir / (re.sub(r"[^\w.-]+", "_", check.name) + ".log")
    log.write_text(" ".join(check.command) + "\n\n" + done.stdout + "\n" + done.stderr)
    speeds, memories = SPEED.findall(done.stdout), MEMORY.findall(done.stdout)
    check.speed = float(speeds[-1]) if speeds else None
    check.memory_gib = max(map(float, memories)) if memories else None
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        check.note = f"exit {done.returncode}: {last[:100]} (log: {log})"
        return
    if check.run_dir is None:
        check.passed, check.note = True, check.note or "results.csv written"
        return
    rows = pd.read_csv(check.run_dir / "history.csv")
    check.value = float(rows[check.metric].iloc[-1])
    finite = math.isfinite(check.value) and rows["train_loss"].map(math.isfinite).all()
    check.passed = rows["epoch"].tolist() == list(range(1, check.epochs + 1)) and bool(finite)
    if not check.passed:
        check.note = f"history.csv: epochs {rows['epoch'].tolist()}, {check.metric} {check.value}"


def table(checks: list[Check]) -> str:
    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    header = f"{'check':34s} {'result':6s} {'samples/s':>10s} {'peak GiB':>9s} {'val metric':>22s} {'time s':>7s}  note"
    lines = [header, "-" * len(header)]
    for c in checks:
        metric = f"{c.metric.removeprefix('val_')} {number(c.value, 3)}" if c.metric else "-"
        result = "pass" if c.passed else "FAIL"
        lines.append(
            f"{c.name:34s} {result:6s} {number(c.speed, 1):>10s} {number(c.memory_gib, 2):>9s} {metric:>22s} "
            f"{c.seconds:7.1f}  {c.note}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: smallest data, no DDP or resume")
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it (default: a temp folder)")
    args = parser.parse_args()
    gpus = 0 if args.tiny else torch.cuda.device_count()
    names = [torch.cuda.get_device_name(i) for i in range(gpus)]
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {gpus} GPU(s) {', '.join(names)}".rstrip())
    if gpus == 0:
        reason = "--tiny" if args.tiny else "no CUDA GPU visible"
        print(f"{reason}: running the CPU parts only (the GPU checks need a GPU node)")
    sizes = sizes_for(gpus, args.tiny)
    with tempfile.TemporaryDirectory(prefix="bodycomp-gpu-check-") as temp:
        root = args.keep or Path(temp)
        if args.keep and args.keep.exists() and any(args.keep.iterdir()):
            raise SystemExit(f"--keep {args.keep}: not empty (give a new folder)")
        root.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        started = time.perf_counter()
        data = make_data(root, sizes)
        checks = plan(gpus, data, root / "models", sizes, args.tiny)
        for check in checks:
            print(f"running {check.name} ...", flush=True)
            run_check(check, root / "logs")
        print()
        print(table(checks))
        failed = [c.name for c in checks if not c.passed]
        print(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed in {time.perf_counter() - started:.0f} s")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
