"""estimate under torchrun: two CPU processes (gloo) shard the series, and rank 0's merged outputs are those of
one process; a distributed run killed mid-way is resumed (by two ranks or by one)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import assert_user_error, invoke
from helpers_atomic import wait_for_marker
from test_estimate_cli import FakeModels, write_series
from test_estimate_dicom import build_export

from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.ranks import Ranks
from bodycomp_cli.estimate.row_files import RANKS_FOLDER
from bodycomp_cli.estimate.run import EstimateOptions, file_stem, run_estimate
from bodycomp_cli.io.atomic import PAUSE_AT, PAUSE_MARKER, TEMP_PREFIX

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "bodycomp_cli"]
COMPARED = ("results.csv", "qc.csv", "studies.csv")
QUIET = EstimateOptions(previews=False, show_progress=False)


@pytest.fixture(scope="module")
def cohort(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Inputs (a PACS export with QC failures and two studies, four phantom series, one too short) and the
    outputs of one process."""
    root = tmp_path_factory.mktemp("ranks")
    build_export(root / "pacs")
    write_series(root / "too_short.npz", n_slices=8)
    args = ["estimate", root / "pacs", trained["series_csv"], root / "too_short.npz"]
    args += ["--select-model", trained["select"], "--seg-model", trained["seg"], "--min-matrix", "64", "--save-masks"]
    single = invoke([*args, "-o", root / "single", "-g", "0", "--workers", "1"])
    assert single.exit_code == 0, single.output + (single.stderr or "")
    return {"args": [str(a) for a in args], "single": root / "single", "root": root}


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def assert_same_outputs(folder: Path, single: Path) -> None:
    for name in COMPARED:  # rows in input order, as one process writes them: equal byte for byte
        assert (folder / name).read_bytes() == (single / name).read_bytes(), name
    assert files_under(folder) == files_under(single)  # previews and masks of every rank, no .ranks left
    assert not [p for p in folder.rglob("*") if p.name.startswith(TEMP_PREFIX)]


def summary_count(stdout: str, row: str) -> int:
    """A count from rank 0's summary table (`│ estimated │ 8 │`)."""
    match = re.search(re.escape(row) + r"\s*│\s*(\d+)", stdout)
    assert match is not None, stdout
    return int(match.group(1))


def descendants(pid: int) -> list[int]:
    """The processes started by `pid`, and theirs (torchrun puts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        parent = int(text[text.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def kill_launch(process: subprocess.Popen) -> None:
    """SIGKILL a torchrun launch: the agent and every process under it, as a node failure would."""
    for pid in [process.pid, *descendants(process.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.communicate()


def torchrun(args: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [*TORCHRUN, *args], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def test_two_gloo_ranks_write_what_one_process_writes(cohort, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("an earlier run")  # --overwrite: rank 0 builds aside, every rank writes there
    process = torchrun([*cohort["args"], "-o", str(out), "--workers", "1", "--overwrite"])
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "2 torchrun processes, one device each (rank 0: cpu)" in stdout
    assert stdout.count("estimate ->") == 1  # rank 0 alone prints the summary
    assert_same_outputs(out, cohort["single"])
    assert summary_count(stdout, "estimated") == 8 and summary_count(stdout, "failed QC (qc.csv)") == 3


def test_a_distributed_run_killed_midway_is_resumed(cohort, tmp_path):
    out, marker = tmp_path / "out", tmp_path / "paused"
    # Both ranks stop after their first series' row is appended; the whole launch is killed there.
    env = {PAUSE_AT: "appended:results.csv", PAUSE_MARKER: str(marker)}
    process = torchrun([*cohort["args"], "-o", str(out), "--workers", "0"], env)
    try:
        wait_for_marker(marker, process, timeout=300)
    finally:
        kill_launch(process)
    assert marker.read_text() == "appended:results.csv"
    parts = list((out / RANKS_FOLDER).glob("rank-*/results.csv"))
    assert parts and not (out / "results.json").exists()  # the rows are in the ranks' files, nothing merged
    done = sum(len(pd.read_csv(part)) for part in parts)
    assert 1 <= done <= 2

    resumed = torchrun([*cohort["args"], "-o", str(out), "--resume"])
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    assert_same_outputs(out, cohort["single"])
    assert summary_count(stdout, "already done (--resume)") == done  # what any rank finished is not done again
    assert summary_count(stdout, "estimated") == 8 - done


def test_a_killed_distributed_run_is_resumed_by_one_process(cohort, tmp_path):
    out = tmp_path / "out"
    one_rank_done = out / RANKS_FOLDER / "rank-1"
    # What a killed 2-rank launch leaves: rank 1's part with one row (its first series), no merged outputs;
    # the run that takes it up writes every row in input order, as an uninterrupted run does.
    single_rows = pd.read_csv(cohort["single"] / "results.csv", dtype=str, keep_default_na=False)
    one_rank_done.mkdir(parents=True)
    single_rows.iloc[[1]].to_csv(one_rank_done / "results.csv", index=False)
    for kind, suffix in (("masks", "npy"), ("previews", "png")):  # and the files it wrote before its row
        name = f"{file_stem(single_rows['series'][1])}_L3.{suffix}"
        (out / kind).mkdir()
        if (cohort["single"] / kind / name).is_file():  # none when the model put L3 outside the series
            shutil.copy(cohort["single"] / kind / name, out / kind / name)
    (one_rank_done / "qc.csv").write_text("series,reason,path,patient_id,study_instance_uid,series_instance_uid\n")
    result = invoke([*cohort["args"], "-o", out, "--resume", "-g", "0", "--workers", "0"])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    assert "already done (--resume)" in result.output
    assert_same_outputs(out, cohort["single"])
    assert not (out / RANKS_FOLDER).exists()


def test_cli_shards_then_a_resume_write_what_one_process_writes(cohort, tmp_path):
    out = tmp_path / "out"
    for shard in ("1/2", "0/2"):  # in any order, each alone, into one folder
        result = invoke([*cohort["args"], "-o", out, "-g", "0", "--workers", "0", "--shard", shard])
        assert result.exit_code == 0, result.output + (result.stderr or "")
        assert f"shard {shard} done" in result.output
    assert not (out / "results.json").exists()
    merged = invoke([*cohort["args"], "-o", out, "-g", "0", "--resume"])
    assert merged.exit_code == 0, merged.output + (merged.stderr or "")
    assert summary_count(merged.output, "estimated") == 0  # the shards did every series; QC failures are retried
    assert_same_outputs(out, cohort["single"])


def test_shards_are_round_robin_and_cover_every_series_once():
    series = [f"s{index}" for index in range(7)]
    shards = [Ranks(rank, 3).shard(series) for rank in range(3)]
    assert shards == [["s0", "s3", "s6"], ["s1", "s4"], ["s2", "s5"]]
    assert Ranks().shard(series) == series


def test_shards_of_a_slurm_array_then_one_resume_equal_one_process(tmp_path):
    # Three tasks of `--shard K/3`, each alone (no process group), the third killed before it starts (no
    # rows); then one `--resume` without --shard does what is left and merges, as one process would have.
    inputs = collect_inputs([write_npz(tmp_path / f"s{index}.npz", 30 + index) for index in range(7)])
    straight, out = tmp_path / "straight", tmp_path / "out"
    run_estimate(inputs, FakeModels(), straight, QUIET)
    for shard in (0, 1):
        summary = run_estimate(inputs, FakeModels(), out, QUIET, Ranks(shard, 3))
        assert summary.estimated == [f"s{index}" for index in range(shard, 7, 3)]
        assert not (out / "results.json").exists()  # nothing merged while other shards may still run
    again = run_estimate(inputs, FakeModels(), out, QUIET, Ranks(1, 3))  # a retried task skips what it did
    assert again.estimated == [] and again.already_done == ["s1", "s4"]
    assert sorted(p.name for p in (out / RANKS_FOLDER).iterdir()) == ["rank-0", "rank-1"]
    models = FakeModels()
    merged = run_estimate(inputs, models, out, EstimateOptions(resume=True, previews=False, show_progress=False))
    assert merged.estimated == ["s2", "s5"] and len(models.segmented) == 2
    for name in COMPARED:
        assert (out / name).read_bytes() == (straight / name).read_bytes(), name
    assert not (out / RANKS_FOLDER).exists()


def test_shard_option_is_checked_before_anything_is_written(tmp_path):
    write_npz(tmp_path / "s.npz", 30)
    base = ["estimate", tmp_path / "s.npz", "--select-model", tmp_path, "--seg-model", tmp_path, "-o", tmp_path / "o"]
    for spec in ("3/3", "1", "a/2", "-1/2"):
        assert_user_error(invoke([*base, "--shard", spec]), f"--shard {spec}: expected K/N with 0 <= K < N")
    assert_user_error(invoke([*base, "--shard", "0/2", "--overwrite"]), "--shard and --overwrite")
    assert not (tmp_path / "o").exists()


def write_npz(path: Path, n_slices: int) -> Path:
    write_series(path, n_slices=n_slices)
    return path
