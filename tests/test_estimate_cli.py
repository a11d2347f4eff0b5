"""`bodycomp estimate`: the pipeline on fake models (QC, resume, range, outputs), then the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate

LEVEL_Z_MM = 50.0  # where the fake selection model 'sees' L3 in every series
THRESHOLD_MM = 10.0
QUIET = EstimateOptions(previews=False, show_progress=False)


def write_series(path: Path, n_slices: int = 30, step: float = 4.0, pixel_spacing=(0.5, 0.5)) -> None:
    """An .npz series: air, a 'muscle' block (40 HU) and a 'fat' block (-100 HU); slice z in pixel [0, 0]."""
    z = np.arange(n_slices) * step
    hu = np.full((n_slices, 16, 16), -1000, dtype=np.int16)
    hu[:, 2:6, 2:12] = 40  # 40 muscle pixels
    hu[:, 8:10, 2:12] = -100  # 20 fat pixels
    hu[:, 0, 0] = np.rint(z)  # the fake model reads z here, as a real one reads anatomy
    np.savez(path, hu=hu, z_mm=z, pixel_spacing=np.array(pixel_spacing))


class FakeModels:
    """The selection model reads z from pixel [0, 0]; the segmentation thresholds HU."""

    levels = ["L3"]
    threshold_mm = THRESHOLD_MM

    def __init__(self, fail_on: str | None = None) -> None:
        self.segmented: list[int] = []  # slices per segment() call
        self.fail_on = fail_on  # a series whose first slice z makes the fake 'crash' (an interrupted run)

    def slice_outputs(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        z = hu_volume[:, 0, 0].astype(np.float64)
        if self.fail_on is not None and hu_volume.shape[0] == int(self.fail_on):
            raise KeyboardInterrupt
        return (1.0 / (1.0 + np.exp(-(z - LEVEL_Z_MM) / THRESHOLD_MM)))[:, None]

    def classes(self, level: str) -> list[str]:
        return ["background", "muscle", "subcutaneous_fat", "visceral_fat"]

    def segment(self, level: str, hu_slices: np.ndarray) -> np.ndarray:
        self.segmented.append(len(hu_slices))
        labels = np.zeros(hu_slices.shape, dtype=np.uint8)
        labels[(hu_slices >= 30) & (hu_slices <= 100)] = 1
        labels[(hu_slices >= -190) & (hu_slices <= -30)] = 2
        labels[:, 0, 0] = 0  # the z marker is no tissue
        return labels


def test_results_previews_and_masks_of_one_series(tmp_path: Path) -> None:
    write_series(tmp_path / "s1.npz")
    out = tmp_path / "out"
    options = EstimateOptions(save_masks=True, show_progress=False)
    summary = run_estimate(collect_inputs([tmp_path / "s1.npz"]), FakeModels(), out, options)
    assert summary.estimated == ["s1"] and summary.slices == 30
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["series"] == "s1"
    assert row["L3_slice_index"] == 12 and row["L3_z_mm"] == 48.0  # the slice nearest 50 mm (4 mm steps)
    assert row["L3_zero_crossings"] == 1
    assert row["L3_muscle_area_cm2"] == pytest.approx(40 * 0.25 / 100)
    assert row["L3_muscle_mean_hu"] == 40.0 and row["L3_muscle_iqr_hu"] == 0.0
    assert row["L3_subcutaneous_fat_area_cm2"] == pytest.approx(20 * 0.25 / 100)
    assert row["L3_subcutaneous_fat_median_hu"] == -100.0
    assert row["L3_visceral_fat_area_cm2"] == 0.0 and np.isnan(row["L3_visceral_fat_mean_hu"])
    document = json.loads((out / "results.json").read_text())
    level = document["series"][0]["levels"]["L3"]
    assert level["slice_index"] == 12 and level["tissues"]["muscle"]["mean_hu"] == 40.0
    assert level["tissues"]["visceral_fat"]["mean_hu"] is None
    mask = np.load(out / "masks" / "s1_L3.npy")
    assert mask.dtype == np.uint8 and mask.shape == (16, 16)
    assert (mask == 1).sum() == 40 and (mask == 2).sum() == 20
    preview = iio.imread(out / "previews" / "s1_L3.png")
    assert preview.ndim == 3 and preview.shape[1] > preview.shape[0]  # slice and curve side by side
    assert pd.read_csv(out / "qc.csv").empty


def test_range_segments_the_neighbours_and_averages(tmp_path: Path) -> None:
    write_series(tmp_path / "s1.npz")
    models = FakeModels()
    options = EstimateOptions(range_mm=8.0, previews=False, show_progress=False)
    run_estimate(collect_inputs([tmp_path / "s1.npz"]), models, tmp_path / "out", options)
    assert models.segmented == [5]  # z 40, 44, 48, 52, 56: within 8 mm of 48
    row = pd.read_csv(tmp_path / "out" / "results.csv").iloc[0]
    assert row["L3_muscle_area_cm2"] == pytest.approx(0.1)  # the same 40 px on every slice


def test_resume_continues_an_interrupted_cohort(tmp_path: Path) -> None:
    for name, n_slices in [("a", 30), ("b", 31), ("c", 32)]:
        write_series(tmp_path / f"{name}.npz", n_slices=n_slices)
    pd.DataFrame({"series": ["a", "b", "c"], "path": ["a.npz", "b.npz", "c.npz"]}).to_csv(
        tmp_path / "cohort.csv", index=False
    )
    inputs = collect_inputs([tmp_path / "cohort.csv"])
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):  # killed while on series b
        run_estimate(inputs, FakeModels(fail_on="31"), out, QUIET)
    assert list(pd.read_csv(out / "results.csv")["series"]) == ["a"]
    with pytest.raises(BodycompError, match="output folder exists"):
        run_estimate(inputs, FakeModels(), out, QUIET)
    models = FakeModels()
    summary = run_estimate(inputs, models, out, EstimateOptions(resume=True, previews=False, show_progress=False))
    assert summary.already_done == ["a"] and summary.estimated == ["b", "c"]
    assert models.segmented == [1, 1]  # a was not estimated again
    results = pd.read_csv(out / "results.csv")
    assert list(results["series"]) == ["a", "b", "c"]
    assert list(results["L3_slice_index"]) == [12, 12, 12]
    assert [entry["series"] for entry in json.loads((out / "results.json").read_text())["series"]] == ["a", "b", "c"]


def test_qc_failures_are_listed_and_the_run_goes_on(tmp_path: Path) -> None:
    write_series(tmp_path / "good.npz")
    write_series(tmp_path / "short.npz", n_slices=12)
    np.savez(tmp_path / "flat.npz", hu=np.zeros((25, 8, 8), dtype=np.int16), z_mm=np.arange(25.0))  # no air
    (tmp_path / "empty_dicom").mkdir()  # no DICOM files: the reader refuses it, QC skips it
    inputs = collect_inputs([tmp_path / n for n in ("short.npz", "good.npz", "flat.npz", "empty_dicom")])
    summary = run_estimate(inputs, FakeModels(), tmp_path / "out", QUIET)
    assert summary.estimated == ["good"]
    qc = pd.read_csv(tmp_path / "out" / "qc.csv")
    assert list(qc["series"]) == ["short", "flat", "empty_dicom"]
    assert qc["reason"][0] == "12 slices, fewer than the minimum 20"
    assert qc["reason"][1].startswith("no air in the series")
    assert "no DICOM image files" in qc["reason"][2]
    assert list(pd.read_csv(tmp_path / "out" / "results.csv")["series"]) == ["good"]


def test_every_series_failing_qc_is_a_user_error(tmp_path: Path) -> None:
    write_series(tmp_path / "short.npz", n_slices=5)
    with pytest.raises(BodycompError, match="every series failed QC"):
        run_estimate(collect_inputs([tmp_path / "short.npz"]), FakeModels(), tmp_path / "out", QUIET)
    assert "fewer than the minimum" in (tmp_path / "out" / "qc.csv").read_text()


def test_overwrite_replaces_an_earlier_run_only_after_success(tmp_path: Path) -> None:
    write_series(tmp_path / "s1.npz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("earlier run")
    with pytest.raises(KeyboardInterrupt):
        run_estimate(
            collect_inputs([tmp_path / "s1.npz"]),
            FakeModels(fail_on="30"),
            out,
            EstimateOptions(overwrite=True, previews=False, show_progress=False),
        )
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    run_estimate(
        collect_inputs([tmp_path / "s1.npz"]),
        FakeModels(),
        out,
        EstimateOptions(overwrite=True, previews=False, show_progress=False),
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "patients.csv",
        "qc.csv",
        "report.html",
        "results.csv",
        "results.json",
        "studies.csv",
    ]


def test_inputs_name_missing_paths_and_repeated_ids(tmp_path: Path) -> None:
    with pytest.raises(BodycompError, match="nope.npz does not exist"):
        collect_inputs([tmp_path / "nope.npz"])
    (tmp_path / "x").mkdir()
    write_series(tmp_path / "x" / "s.npz")
    write_series(tmp_path / "s.npz")
    with pytest.raises(BodycompError, match="series id `s` is given twice"):
        collect_inputs([tmp_path / "s.npz", tmp_path / "x" / "s.npz"])


def fake_run_folder(path: Path, task: str, checkpoint: bool) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"task": task, "levels": ["L3"], "classes": ["background", "muscle"]}))
    if checkpoint:
        (path / "checkpoint_last.pt").write_bytes(b"")
    return path


def test_cli_refusals_name_the_path_and_leave_no_output(tmp_path: Path) -> None:
    from conftest import assert_user_error, invoke

    write_series(tmp_path / "s1.npz")
    select = fake_run_folder(tmp_path / "select", "slice_selection", checkpoint=True)
    no_checkpoint = fake_run_folder(tmp_path / "seg", "segmentation", checkpoint=False)
    out = tmp_path / "out"
    base = ["estimate", tmp_path / "s1.npz", "--select-model", select, "-o", out]
    assert_user_error(invoke([*base, "--seg-model", no_checkpoint]), "seg: no checkpoint")
    assert_user_error(invoke([*base, "--seg-model", f"L3={tmp_path / 'absent'}"]), "absent: no such run folder")
    missing_input = ["estimate", tmp_path / "nope.nii.gz", "--select-model", select, "--seg-model", select]
    assert_user_error(invoke([*missing_input, "-o", out]), "nope.nii.gz does not exist")
    assert not out.exists()
    out.mkdir()
    (out / "results.csv").write_text("series\n")
    assert_user_error(invoke([*base, "--seg-model", select]), "output folder exists", "--overwrite")
    assert_user_error(invoke([*base, "--seg-model", select, "--resume", "--overwrite"]), "choose one")


def test_seg_model_level_mapping() -> None:
    from bodycomp_cli.estimate.models import parse_seg_model_specs

    levels = ["T5", "T8", "T10", "L3"]
    mapping = parse_seg_model_specs(["L3=runs/abdomen", "T5,T8,T10=runs/thorax"], levels)
    assert mapping == {"L3": Path("runs/abdomen"), **{level: Path("runs/thorax") for level in levels[:3]}}
    # One model without a level is the default for the levels not mapped.
    mapping = parse_seg_model_specs(["runs/all", "T5=runs/thorax"], levels)
    assert mapping["T5"] == Path("runs/thorax") and mapping["L3"] == Path("runs/all")
    with pytest.raises(BodycompError, match="no --seg-model for level T8, T10"):
        parse_seg_model_specs(["L3=a", "T5=b"], levels)
    with pytest.raises(BodycompError, match="level L1 is not estimated"):
        parse_seg_model_specs(["L1=a"], levels)
    with pytest.raises(BodycompError, match="a second model for all levels"):
        parse_seg_model_specs(["a", "b"], levels)


def test_a_seg_run_outside_its_region_gets_one_warning_line_each() -> None:
    from bodycomp_cli.estimate.models import seg_region_warnings

    four, thoracic = ["muscle", "subcutaneous_fat", "visceral_fat"], ["muscle", "subcutaneous_fat"]
    abdomen, thorax = Path("runs/abdomen"), Path("runs/thorax")
    # The README walk-through's mistake: the 4-class L3 run measuring T10.
    (line,) = seg_region_warnings({"T10": abdomen, "L3": abdomen}, {abdomen: four})
    assert "runs/abdomen" in line and "at T10," in line and "--seg-model T10=THORACIC_RUN" in line
    # Each run at the levels of its own region: nothing to say.
    levels = {"T5": thorax, "T8": thorax, "T10": thorax, "L3": abdomen}
    assert seg_region_warnings(levels, {abdomen: four, thorax: thoracic}) == []
    (line,) = seg_region_warnings({"T12": thorax, "L1": thorax}, {thorax: thoracic})
    assert "thoracic run" in line and "at L1:" in line


def test_cli_end_to_end_on_phantom_series(trained: dict[str, Path], tmp_path: Path) -> None:
    from conftest import invoke

    write_series(tmp_path / "too_short.npz", n_slices=8)
    out = tmp_path / "out"
    args = ["estimate", trained["series_csv"], tmp_path / "too_short.npz", "--select-model", trained["select"]]
    args += ["--seg-model", f"L3={trained['seg']}", "-o", out, "--save-masks", "-g", "0", "-b", "64"]
    result = invoke(args)
    assert result.exit_code == 0, result.output + (result.stderr or "")
    assert "too_short" in result.stderr  # the QC skip is reported as it happens
    assert "warning:" not in result.stderr  # the 4-class run at L3: its own region
    phantoms = pd.read_csv(trained["series_csv"], dtype={"series": str})
    results = pd.read_csv(out / "results.csv", dtype={"series": str})
    assert list(results["series"]) == list(phantoms["series"])
    assert list(pd.read_csv(out / "qc.csv")["series"]) == ["too_short"]
    for row, path in zip(results.itertuples(), phantoms["path"], strict=True):
        with np.load(trained["series_csv"].parent / path) as series:
            z_mm, spacing = series["z_mm"], tuple(series["pixel_spacing"])
        assert 0 <= row.L3_slice_index < len(z_mm) and row.L3_z_mm == pytest.approx(z_mm[row.L3_slice_index])
        mask = np.load(out / "masks" / f"{row.series}_L3.npy")
        assert mask.dtype == np.uint8 and mask.shape == (64, 64) and mask.max() <= 3
        # The areas in results.csv are the saved mask's pixel counts times the pixel area.
        for label, tissue in enumerate(["muscle", "subcutaneous_fat", "visceral_fat"], start=1):
            expected = (mask == label).sum() * spacing[0] * spacing[1] / 100
            assert getattr(row, f"L3_{tissue}_area_cm2") == pytest.approx(expected)
        assert (out / "previews" / f"{row.series}_L3.png").is_file()
    assert json.loads((out / "results.json").read_text())["columns"] == list(results.columns)

    again = invoke([*args, "--resume"])
    assert again.exit_code == 0, again.output + (again.stderr or "")
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv", dtype={"series": str}), results)


def test_cli_evaluate_both_tasks(trained: dict[str, Path], tmp_path: Path) -> None:
    from conftest import assert_user_error, invoke

    result = invoke(["evaluate", trained["seg"], trained["root"] / "seg_data", "-o", tmp_path / "seg_eval"])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    assert "Dice" in result.output
    report = json.loads((tmp_path / "seg_eval" / "evaluation.json").read_text())
    assert report["task"] == "segmentation" and report["slices"] == 2 and report["area_unit"] == "px"
    for tissue in ("muscle", "subcutaneous_fat", "visceral_fat"):
        dice = report["tissues"][tissue]["dice_pooled"]
        assert dice is None or 0.0 <= dice <= 1.0
    assert all((tmp_path / "seg_eval" / entry["png"]).is_file() for entry in report["worst_slices"])

    result = invoke(["evaluate", trained["select"], trained["root"] / "slice_data", "-o", tmp_path / "sel_eval"])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    level = json.loads((tmp_path / "sel_eval" / "evaluation.json").read_text())["levels"]["L3"]
    assert level["mae_mm"] >= 0 and level["n_near"] > 0
    assert level["selection"]["n_series"] == 1 and 0 <= level["selection"]["within_10mm"] <= 1

    again = invoke(["evaluate", trained["select"], trained["root"] / "slice_data", "-o", tmp_path / "sel_eval"])
    assert_user_error(again, "sel_eval", "--overwrite")
    assert_user_error(invoke(["evaluate", trained["seg"], trained["root"] / "slice_data"]), "val_images.npy: not found")
    assert not (trained["seg"] / "evaluation_val").exists()


def test_cli_more_gpus_than_visible(trained: dict[str, Path], tmp_path: Path) -> None:
    from conftest import assert_user_error, invoke

    args = ["estimate", trained["series_csv"], "--select-model", trained["select"], "--seg-model", trained["seg"]]
    assert_user_error(invoke([*args, "-o", tmp_path / "out", "-g", "64"]), "-g/--gpus 64")
    assert not (tmp_path / "out").exists()
