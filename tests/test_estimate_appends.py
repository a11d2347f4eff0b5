"""estimate's per-series writes: one appended record per series (never a rewrite), a torn last record dropped
by --resume, and the same outputs whether the series are read ahead by worker processes or not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_estimate_cli import FakeModels, write_series

import bodycomp_cli.estimate.row_files as row_files
from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate
from bodycomp_cli.io import journal
from bodycomp_cli.io.journal import complete_records

QUIET = EstimateOptions(previews=False, show_progress=False)
FINAL_FILES = ("results.csv", "results.json", "qc.csv", "studies.csv", "report.html")


def cohort(folder: Path, count: int = 5) -> list[Path]:
    paths = []
    for index in range(count):
        write_series(folder / f"s{index}.npz", n_slices=30 + index)
        paths.append(folder / f"s{index}.npz")
    return paths


def test_a_torn_last_record_is_dropped_even_inside_quotes():
    assert complete_records(b"a,b\n1,2\n3,") == b"a,b\n1,2\n"
    assert complete_records(b"a,b\n1,2\n") == b"a,b\n1,2\n"
    assert complete_records(b"a,b") == b""
    # A quoted field holding a newline: a cut just after that newline is inside the record, not its end.
    assert complete_records(b'a,b\n"x\ny",2\n"p\n') == b'a,b\n"x\ny",2\n'
    assert complete_records(b'a,b\n"say ""hi""\nthere",2\n') == b'a,b\n"say ""hi""\nthere",2\n'


def test_each_series_appends_one_record_and_nothing_is_rewritten_per_series(tmp_path, monkeypatch):
    appended: list[str] = []
    renamed: list[str] = []
    real_append, real_write = journal.append_text, row_files.atomic_write_text
    monkeypatch.setattr(
        row_files, "append_text", lambda path, text: (appended.append(path.name), real_append(path, text))
    )
    monkeypatch.setattr(
        row_files, "atomic_write_text", lambda path, text: (renamed.append(path.name), real_write(path, text))
    )
    write_series(tmp_path / "short.npz", n_slices=5)  # fails QC: its record goes to qc.csv
    paths = [*cohort(tmp_path), tmp_path / "short.npz"]
    run_estimate(collect_inputs(paths), FakeModels(), tmp_path / "out", QUIET)
    assert appended == ["results.csv"] * 5 + ["qc.csv"]
    assert renamed == ["results.csv", "qc.csv"]  # each created once, with its header, before the first series
    lines = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["series", "s0", "s1", "s2", "s3", "s4"]


def test_resume_after_a_torn_row_equals_an_uninterrupted_run(tmp_path):
    inputs = collect_inputs(cohort(tmp_path))
    straight, out = tmp_path / "straight", tmp_path / "out"
    run_estimate(inputs, FakeModels(), straight, QUIET)
    # A run killed by a power cut in the middle of appending s2's row: s0 and s1 complete, s2 half there.
    lines = (straight / "results.csv").read_bytes().splitlines(keepends=True)
    out.mkdir()
    (out / "results.csv").write_bytes(b"".join(lines[:3]) + lines[3][:25])
    models = FakeModels()
    summary = run_estimate(inputs, models, out, EstimateOptions(resume=True, previews=False, show_progress=False))
    assert summary.already_done == ["s0", "s1"] and summary.estimated == ["s2", "s3", "s4"]
    for name in FINAL_FILES:
        assert (out / name).read_bytes() == (straight / name).read_bytes(), name


@pytest.mark.parametrize("workers", [1, 2])
def test_reading_ahead_in_workers_gives_the_same_outputs_in_input_order(tmp_path, workers):
    paths = cohort(tmp_path, 4)
    write_series(tmp_path / "short.npz", n_slices=12)
    np.savez(tmp_path / "flat.npz", hu=np.zeros((25, 8, 8), dtype=np.int16), z_mm=np.arange(25.0))  # no air
    (tmp_path / "empty_dicom").mkdir()  # the reader refuses it in the worker: a QC row, as in-process
    inputs = collect_inputs([paths[0], tmp_path / "short.npz", *paths[1:3], tmp_path / "flat.npz"])
    inputs += collect_inputs([tmp_path / "empty_dicom", paths[3]])
    here = run_estimate(inputs, FakeModels(), tmp_path / "here", QUIET)
    ahead = run_estimate(
        inputs, FakeModels(), tmp_path / "ahead", EstimateOptions(previews=False, show_progress=False, workers=workers)
    )
    assert ahead.estimated == here.estimated == ["s0", "s1", "s2", "s3"]
    assert [row["series"] for row in ahead.qc_failed] == ["short", "flat", "empty_dicom"]
    for name in FINAL_FILES:
        assert (tmp_path / "ahead" / name).read_bytes() == (tmp_path / "here" / name).read_bytes(), name
