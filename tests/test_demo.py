"""`bodycomp demo --fast`: every stage runs end to end on the CPU and summary.json has the promised keys."""

from __future__ import annotations

import json

import pytest
from conftest import assert_user_error, invoke

from bodycomp_cli.demo import FAST, FULL, TISSUES


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "bodycomp-demo"
    result = invoke(["demo", out, "--fast"])
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return out, result


def test_fast_demo_writes_every_stage_and_the_summary(fast_demo):
    out, result = fast_demo
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "fast"
    assert set(summary["dice"]) == set(TISSUES)
    for value in summary["dice"].values():
        assert value is None or 0.0 <= value <= 1.0
    l3 = summary["slice_error_mm"]["L3"]
    # One selection code path: estimate on the held-out volumes chooses the slices evaluate chose on their PNGs.
    # (evaluate reads z from the meta CSV, written to 4 decimals, so the two agree to 1e-4 mm, not to the bit.)
    assert summary["estimate"]["l3_error_mm_median"] == pytest.approx(l3["median"], abs=1e-4)
    assert set(l3) == {"median", "mean", "within_5mm", "within_10mm", "series"}
    assert l3["median"] >= 0.0 and 0.0 <= l3["within_10mm"] <= 1.0
    assert set(summary["seconds"]) == {
        "phantoms",
        "prepare",
        "train_seg",
        "train_select",
        "evaluate",
        "estimate",
        "total",
    }
    assert summary["quality_floor"]["claimed"] is False
    assert summary["held_out"]["series"] >= 1 and summary["estimate"]["series"] == summary["held_out"]["series"]
    for path in (
        "phantoms/series.csv",
        "data/seg/train_images.npy",
        "data/seg_test/val_masks.npy",
        "data/slices/meta/test.csv",
        "models/seg/checkpoint_best.pt",
        "models/select/checkpoint_best.pt",
        "evaluation/seg/evaluation.json",
        "evaluation/select/evaluation.json",
        "estimate/results.csv",
    ):
        assert (out / path).is_file(), path
    assert "Dice muscle" in result.output and "L3 error" in result.output
    assert not list(out.parent.glob(".bodycomp-tmp-*"))  # built aside, renamed into place


def test_demo_refuses_an_existing_output_without_overwrite(fast_demo):
    out, _ = fast_demo
    before = (out / "summary.json").read_bytes()
    assert_user_error(invoke(["demo", out, "--fast"]), str(out), "--overwrite")
    assert (out / "summary.json").read_bytes() == before


def test_demo_defaults_to_bodycomp_demo_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bodycomp-demo").mkdir()
    (tmp_path / "bodycomp-demo" / "mine.txt").write_text("keep")
    assert_user_error(invoke(["demo"]), "bodycomp-demo", "--overwrite")
    assert (tmp_path / "bodycomp-demo" / "mine.txt").read_text() == "keep"


def test_full_settings_are_larger_than_fast():
    assert FULL.series > FAST.series and FULL.seg_steps * FULL.seg_epochs > FAST.seg_steps * FAST.seg_epochs
    assert FULL.seg_size % 32 == 0 and FAST.seg_size % 32 == 0


def test_demo_names_files_as_they_lie_after_the_rename(fast_demo):
    """The demo builds in a temporary folder; neither its output nor its records may name that folder."""
    from bodycomp_cli.io.atomic import TEMP_PREFIX

    out, result = fast_demo
    assert TEMP_PREFIX not in result.output
    assert "into models/seg" in result.output and f"becomes {out} when the demo ends" in result.output
    records = [p for p in out.rglob("*") if p.suffix in (".csv", ".json", ".html", ".txt")]
    assert any(p.name == "train_index.csv" for p in records) and any(p.name == "config.json" for p in records)
    assert [p for p in records if TEMP_PREFIX in p.read_text()] == []
    index = (out / "data/seg/train_index.csv").read_text().splitlines()[1].split(",")
    assert (out / index[2]).is_file()  # the index's image path resolves from the output folder
    config = json.loads((out / "models/seg/config.json").read_text())
    assert (out / config["data_dir"] / "dataset.json").is_file()
