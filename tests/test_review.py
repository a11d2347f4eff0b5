"""The review flag and confidence (estimate/review.py): each cue on hand-made predictor outputs, then estimate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_estimate_cli import LEVEL_Z_MM, THRESHOLD_MM, FakeModels, write_series

from bodycomp_cli.core.metrics import outputs_from_offsets
from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.review import Segmentation, Tolerances, cues_of, level_positions, review_reasons
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate
from bodycomp_cli.tasks.slice_selection.evidence import SelectionEvidence

Z = np.arange(0.0, 200.0, 2.5)
T = THRESHOLD_MM
CLASSES = ["background", "muscle", "subcutaneous_fat", "visceral_fat"]


def curve(level_z: float, z: np.ndarray = Z) -> np.ndarray:
    """A perfect output column for a level at level_z."""
    return outputs_from_offsets(z - level_z, T)


def evidence(cnn: np.ndarray, outputs: np.ndarray | None = None, head: np.ndarray | None = None) -> SelectionEvidence:
    chosen = cnn if outputs is None else outputs
    return SelectionEvidence(["L3"], chosen[:, None], cnn[:, None], None if head is None else head[:, None])


def test_agreeing_cues_give_no_reason_and_full_confidence() -> None:
    review = review_reasons(evidence(curve(100.0), head=curve(100.0)), "L3", Z, T, 100.0)
    assert review.reasons == [] and review.text == ""
    assert review.confidence == pytest.approx(1.0, abs=1e-6)


def test_a_cnn_that_puts_the_level_elsewhere_is_a_reason() -> None:
    # The CNN's curve is sharp at 100 mm, but from 150 mm on it hovers at 0.5, as over a chest it never saw:
    # each of those slices reads the level at its own z, and they outnumber the slices near 100 mm.
    z = np.arange(0.0, 300.0, 2.5)
    cnn = curve(100.0, z)
    cnn[z >= 150.0] = 0.5
    review = review_reasons(evidence(cnn, outputs=curve(100.0, z)), "L3", z, T, 100.0)
    sharp = (np.abs(z - 100.0) < T * np.log(19.0)) & (z < 150.0)  # outputs within 0.05..0.95: each reads 100
    informative = np.concatenate([np.full(sharp.sum(), 100.0), z[z >= 150.0]])
    apart = np.median(informative) - 100.0
    assert review.reasons == [f"the per-slice CNN puts L3 {apart:.0f} mm from the chosen slice"]
    assert review.confidence == pytest.approx(1.0 / (1.0 + apart / Tolerances().position_mm))


def test_a_cnn_that_sees_no_level_in_the_scan_is_a_reason() -> None:
    review = review_reasons(evidence(np.ones_like(Z), outputs=curve(100.0)), "L3", Z, T, 100.0)
    assert review.reasons[0] == "the per-slice CNN sees no L3 in the scan"
    assert review.confidence == 0.0


def test_a_snap_that_moved_the_head_far_is_a_reason() -> None:
    review = review_reasons(evidence(curve(100.0), head=curve(115.0)), "L3", Z, T, 100.0)
    assert review.reasons == ["the vertebral phase moved L3 15 mm from the series head's"]
    assert review.confidence == pytest.approx(1.0 / (1.0 + 15.0 / Tolerances().snap_mm))


def test_a_blurred_curve_is_a_reason() -> None:
    cnn = curve(100.0)
    cnn[np.abs(Z - 100.0) <= 30.0] = 0.5  # flat where it should rise: each slice reads itself, the median 100 mm
    near = np.abs(Z - 100.0) <= 3 * T
    misfit = np.sqrt(np.mean((cnn[near] - curve(100.0)[near]) ** 2))
    assert misfit > Tolerances().misfit
    review = review_reasons(evidence(cnn), "L3", Z, T, 100.0)
    assert review.reasons == [f"the per-slice curve around L3 is not sharp (misfit {misfit:.2f})"]


def test_implausible_spacing_between_predicted_levels_is_a_reason() -> None:
    ok = evidence(curve(100.0))
    squeezed = review_reasons(ok, "L3", Z, T, 100.0, positions_mm={"L1": 110.0, "L3": 100.0, "L5": 10.0})
    # 5 mm per vertebra up to L1 (an adult's lumbar vertebra: 36 mm); 45 mm down to L5 is within 1.6x
    assert squeezed.reasons == ["L3 lies 5 mm per vertebra from L1 over 2 (an adult's: ~36)"]
    swapped = review_reasons(ok, "L3", Z, T, 100.0, positions_mm={"L1": 60.0, "L3": 100.0})
    assert swapped.reasons == ["L3 lies on the wrong side of L1"] and swapped.confidence == 0.0
    fine = review_reasons(ok, "L3", Z, T, 100.0, positions_mm={"L1": 172.0, "L3": 100.0, "T12": 200.0})
    assert fine.reasons == [] and fine.confidence > 0.9


def slice_with(hu_by_label: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((20, 20), np.uint8)
    labels[2:8], labels[8:12], labels[12:16] = 1, 2, 3
    hu = np.full((20, 20), -1000.0)
    for label, value in hu_by_label.items():
        hu[labels == label] = value
    return hu, labels


def test_segmentation_cues_each_give_their_reason() -> None:
    hu, labels = slice_with({1: 40.0, 2: -100.0, 3: -322.0})  # the "visceral fat" that was lung
    margin = np.ones(labels.shape, np.float32)
    margin[2:5] = 0.2  # 60 of the 280 tissue pixels: 21 %
    seg = Segmentation(hu, labels, CLASSES, margin, {"muscle": True, "visceral_fat": False})
    review = review_reasons(evidence(curve(100.0)), "L3", Z, T, 100.0, segmentation=seg)
    assert review.reasons == [
        "the segmentation is unsure of 21 % of the tissue",
        "muscle touches the edge of the field of view",
        "visceral fat mean -322 HU lies outside -190..-30 HU",
    ]
    assert review.confidence == pytest.approx(1.0 / (1.0 + (60 / 280) / Tolerances().uncertain_share))
    assert cues_of(review.text) == ["uncertainty", "field of view", "HU"]
    hu, labels = slice_with({1: 200.0, 2: -100.0, 3: -100.0})
    calm = review_reasons(None, "L3", Z, T, 100.0, segmentation=Segmentation(hu, labels, CLASSES))
    assert calm.reasons == ["muscle mean 200 HU lies outside -29..150 HU"] and calm.confidence == 0.5


def test_a_count_reason_is_passed_on() -> None:
    review = review_reasons(evidence(curve(100.0)), "L3", Z, T, 100.0, count_reason="six lumbar")
    assert review.reasons == ["six lumbar"] and review.confidence == 0.5


def test_level_positions_keep_the_levels_in_the_scan() -> None:
    both = SelectionEvidence(["L3", "T5"], np.stack([curve(100.0), curve(900.0)], 1), np.zeros((len(Z), 2)))
    positions = level_positions(both, Z, T)
    assert list(positions) == ["L3"] and positions["L3"] == pytest.approx(100.0)


class ReviewedModels(FakeModels):
    """FakeModels with evidence: pixel [0, 1] of a series set to 1 makes its CNN see L3 60 mm higher, and the
    segmentation's margin is 1 (sure) everywhere."""

    def selection_evidence(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> SelectionEvidence:
        outputs = self.slice_outputs(hu_volume, z_mm)
        z = hu_volume[:, 0, 0].astype(np.float64)
        shift = 60.0 if hu_volume[0, 0, 1] == 1 else 0.0
        cnn = outputs_from_offsets(z - LEVEL_Z_MM - shift, T)[:, None]
        return SelectionEvidence(["L3"], outputs, cnn)

    def segment_with_margin(self, level: str, hu_slices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels = self.segment(level, hu_slices)
        return labels, np.ones(labels.shape, np.float32)


def test_estimate_writes_review_and_confidence_and_puts_flagged_series_first(tmp_path: Path) -> None:
    write_series(tmp_path / "a_fine.npz")
    write_series(tmp_path / "b_off.npz")
    with np.load(tmp_path / "b_off.npz") as data:
        arrays = dict(data)
    arrays["hu"][:, 0, 1] = 1
    np.savez(tmp_path / "b_off.npz", **arrays)
    out = tmp_path / "out"
    inputs = collect_inputs([tmp_path / "a_fine.npz", tmp_path / "b_off.npz"])
    run_estimate(inputs, ReviewedModels(), out, EstimateOptions(previews=False, show_progress=False))
    table = pd.read_csv(out / "results.csv", keep_default_na=False).set_index("series")
    assert table.loc["a_fine", "L3_review"] == "" and float(table.loc["a_fine", "L3_confidence"]) > 0.8
    off = table.loc["b_off"]
    reasons = off["L3_review"].split("; ")  # the CNN reads L3 at 110 mm, the head's chosen slice is at 48 mm
    assert reasons[0] == "the per-slice CNN puts L3 62 mm from the chosen slice"
    assert reasons[1].startswith("the per-slice curve around L3 is not sharp") and len(reasons) == 2
    assert float(off["L3_confidence"]) <= 0.5 and off["L3_z_mm"] == 48.0  # the choice is the head's, unchanged
    # FakeModels gives no phase: the count is blank and says why
    assert off["lumbar_vertebrae"] == "" and off["transitional"] == ""
    assert off["lumbar_vertebrae_reason"] == "the selection model gives no vertebral phase to count with"
    page = (out / "report.html").read_text()
    assert page.index("<h3>b_off</h3>") < page.index("<h3>a_fine</h3>")
    assert "L3: the per-slice CNN puts L3 62 mm" in page
    assert not math.isnan(float(off["L3_confidence"]))


def test_a_series_head_run_gives_its_cnn_head_and_phase_apart(trained: dict[str, Path]) -> None:
    from bodycomp_cli.estimate.models import load_estimator_models
    from bodycomp_cli.io.volumes import read_volume

    models = load_estimator_models(trained["select"], [str(trained["seg"])], ["L3"], gpus=0)
    volume = read_volume(trained["root"] / "phantoms" / "series" / "phantom_0000.npz")
    evidence = models.selection_evidence(volume.hu, volume.z_mm)
    n = len(volume.z_mm)
    assert evidence.levels[0] == "L3" and evidence.outputs.shape == evidence.cnn_outputs.shape == (n, 1)
    # what the slice choice reads is still the head's, unchanged by the evidence
    np.testing.assert_array_equal(evidence.columns(["L3"]).outputs, models.selector.outputs(volume.hu, volume.z_mm))
    assert evidence.phase is not None and evidence.phase.shape == (n, 2)  # L3-labelled data: a phase run
    assert evidence.head_outputs is not None and evidence.head_outputs.shape == (n, 1)
    assert not np.array_equal(evidence.cnn_outputs, evidence.outputs)  # the CNN's own outputs, not the head's
    labels, margin = models.segment_with_margin("L3", volume.hu[:2])
    np.testing.assert_array_equal(labels, models.segment("L3", volume.hu[:2]))
    assert margin.shape == labels.shape and 0.0 <= margin.min() and margin.max() <= 1.0 + 1e-6
