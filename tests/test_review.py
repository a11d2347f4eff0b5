"""The review flag and confidence (estimate/review.py): each cue on hand-made predictor outputs, then estimate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_estimate_cli import LEVEL_Z_MM, THRESHOLD_MM, FakeModels, write_series

from bodycomp_cli.core.metrics import outputs_from_offsets
from bodycomp_cli.core.vertebrae import nominal_step_mm
from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.review import (
    Segmentation,
    Tolerances,
    review_from_measures,
    review_reasons,
)
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
    near = np.abs(Z - 100.0) <= 3 * T
    cnn = curve(100.0)
    cnn[near] = 1.0 - cnn[near]  # falls where it should rise: each slice reads 200 - z, the median still 100 mm
    misfit = np.sqrt(np.mean((cnn[near] - curve(100.0)[near]) ** 2))
    assert misfit > Tolerances().misfit
    review = review_reasons(evidence(cnn), "L3", Z, T, 100.0)
    assert review.reasons == [f"the per-slice curve around L3 is not sharp (misfit {misfit:.2f})"]


def test_implausible_spacing_between_predicted_levels_is_a_reason() -> None:
    ok = evidence(curve(100.0))
    squeezed = review_reasons(ok, "L3", Z, T, 100.0, positions_mm={"L1": 110.0, "L3": 100.0, "L5": 30.0})
    # 5 mm per vertebra up to L1 (an adult's lumbar vertebra: 36 mm); 35 mm down to L5 is within the tolerance
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
    expected = [np.nan, 0.85, 0.97, np.nan]  # muscle below the 0.90 the segmentation must expect; VAT unread
    seg = Segmentation(hu, labels, CLASSES, expected, {"muscle": True, "visceral_fat": False})
    review = review_reasons(evidence(curve(100.0)), "L3", Z, T, 100.0, segmentation=seg)
    assert review.reasons == [
        "the segmentation expects muscle Dice 0.85",
        "muscle touches the edge of the field of view",
        "visceral fat mean -322 HU lies outside -190..-30 HU",
    ]
    shortfall = (1.0 - 0.85) / (1.0 - Tolerances().expected_dice)
    assert review.confidence == pytest.approx(1.0 / (1.0 + shortfall))
    assert review_from_measures(review.measures, Tolerances()) == ["uncertainty", "field of view", "HU"]
    # every cue's measure is written, whether it spoke or not
    measures = dict(item.split("=") for item in review.measures.split("; "))
    assert measures["expected_dice_muscle"] == "0.85" and measures["expected_dice_subcutaneous_fat"] == "0.97"
    assert measures["edge_muscle"] == "1" and measures["edge_visceral_fat"] == "0"
    assert measures["hu_muscle"] == "0" and measures["hu_visceral_fat"] == "1"
    # under a looser expected-Dice tolerance the same measures give one reason fewer
    assert review_from_measures(review.measures, Tolerances(expected_dice=0.8)) == ["field of view", "HU"]
    hu, labels = slice_with({1: 200.0, 2: -100.0, 3: -100.0})
    calm = review_reasons(None, "L3", Z, T, 100.0, segmentation=Segmentation(hu, labels, CLASSES))
    assert calm.reasons == ["muscle mean 200 HU lies outside -29..150 HU"] and calm.confidence == 0.5


def test_metal_on_the_chosen_slice_is_a_reason_when_its_area_is_known() -> None:
    hu, labels = slice_with({1: 40.0, 2: -100.0, 3: -100.0})
    hu[0, :3] = 3000.0  # three pixels of a screw: 12 mm² at 2 x 2 mm pixels
    review = review_reasons(None, "L3", Z, T, 100.0, segmentation=Segmentation(hu, labels, CLASSES, None, {}, (2, 2)))
    assert review.reasons == ["metal on the slice (12 mm² at 2500 HU or more): streaks change HU and labels"]
    assert review_from_measures(review.measures, Tolerances()) == ["metal"] and review.confidence == 0.5
    small = review_reasons(None, "L3", Z, T, 100.0, segmentation=Segmentation(hu, labels, CLASSES, None, {}, (1, 1)))
    assert small.reasons == [] and "metal=0" in small.measures  # 3 mm²: below the 10 a screw's section exceeds
    unknown = review_reasons(None, "L3", Z, T, 100.0, segmentation=Segmentation(hu, labels, CLASSES))
    assert "metal" not in unknown.measures  # no pixel spacing, no area: the cue is not read


def test_a_count_reason_is_passed_on() -> None:
    review = review_reasons(evidence(curve(100.0)), "L3", Z, T, 100.0, count_reason="six lumbar")
    assert review.reasons == ["six lumbar"] and review.confidence == 0.5


class ReviewedModels(FakeModels):
    """FakeModels with evidence: pixel [0, 1] of a series set to 1 makes its CNN see L3 60 mm higher, and the
    segmentation expects Dice 1 (sure) of every class."""

    def selection_evidence(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> SelectionEvidence:
        outputs = self.slice_outputs(hu_volume, z_mm)
        z = hu_volume[:, 0, 0].astype(np.float64)
        shift = 60.0 if hu_volume[0, 0, 1] == 1 else 0.0
        cnn = outputs_from_offsets(z - LEVEL_Z_MM - shift, T)[:, None]
        return SelectionEvidence(["L3"], outputs, cnn)

    def segment_with_expected_dice(self, level: str, hu_slices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels = self.segment(level, hu_slices)
        return labels, np.ones((len(labels), len(self.classes(level))))


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
    labels, expected = models.segment_with_expected_dice("L3", volume.hu[:2])
    np.testing.assert_array_equal(labels, models.segment("L3", volume.hu[:2]))
    agreement = models.shift_agreement("L3", volume.hu[:2])
    assert agreement.shape == (2,) and (np.isnan(agreement) | ((agreement >= 0.0) & (agreement <= 1.0))).all()
    assert expected.shape == (2, len(models.classes("L3")))
    found = np.isfinite(expected)
    assert found[:, 0].all() and 0.0 < expected[found].min() and expected[found].max() <= 1.0 + 1e-9


def test_expected_dice_is_the_soft_dice_of_the_probabilities_against_the_argmax() -> None:
    import torch

    from bodycomp_cli.tasks.segmentation.predictor import expected_dice

    probabilities = torch.tensor([[[[0.9, 0.3]], [[0.1, 0.7]]]])  # 1 slice, 2 classes, 1 x 2 pixels
    logits = probabilities.log()
    dice = expected_dice(logits, logits.argmax(dim=1))
    # class 0: its mask is pixel 0; 2 * 0.9 / (0.9 + 0.3 + 1); class 1: 2 * 0.7 / (0.1 + 0.7 + 1)
    np.testing.assert_allclose(dice.numpy(), [[2 * 0.9 / 2.2, 2 * 0.7 / 1.8]], rtol=1e-6)
    absent = expected_dice(torch.tensor([[[[9.0, 9.0]], [[0.0, 0.0]]]]), torch.zeros(1, 1, 2, dtype=torch.long))
    assert absent[0, 0] == pytest.approx(2 * 2 * (1 / (1 + np.exp(-9))) / (2 * (1 / (1 + np.exp(-9))) + 2))
    assert torch.isnan(absent[0, 1])  # under one pixel of class 1 in the probabilities and none in the labels


def test_labels_that_change_when_the_slice_moves_are_a_reason() -> None:
    hu, labels = slice_with({1: 40.0, 2: -100.0, 3: -100.0})
    tol = Tolerances().shift_agreement
    moved = Segmentation(hu, labels, CLASSES, shift_agreement=0.90)
    review = review_reasons(None, "L3", Z, T, 100.0, segmentation=moved)
    assert review.reasons == [
        "the segmentation changes when the slice moves by 3 % of the image (lowest tissue Dice 0.90 against it)"
    ]
    assert review.confidence == pytest.approx(1.0 / (1.0 + (1.0 - 0.90) / (1.0 - tol)))
    assert review_from_measures(review.measures, Tolerances()) == ["shift"]
    steady = review_reasons(
        None, "L3", Z, T, 100.0, segmentation=Segmentation(hu, labels, CLASSES, shift_agreement=0.97)
    )
    assert steady.reasons == [] and "shift_agreement=0.97" in steady.measures


def test_a_vertebra_skipped_higher_up_the_spine_is_a_reason_for_every_level_below() -> None:
    # T10 read a vertebra high (12 mm per vertebra from T8, an adult's ~25): T12, L1 and L3 follow it at an
    # adult's spacing, so L3's own neighbours say nothing
    regular = {"T8": 400.0, "T10": 350.0, "T12": 297.0, "L1": 270.0, "L3": 198.0}
    shifted = {**regular, "T10": 375.0, "T12": 322.0, "L1": 295.0, "L3": 223.0}
    review = review_reasons(None, "L3", Z, T, 223.0, positions_mm=shifted)
    assert review.reasons == [
        "T8 and T10 lie 12 mm per vertebra apart (an adult's: ~25): the level names along the spine may be shifted"
    ]
    factor = (400.0 - 375.0) / 2 / np.mean([nominal_step_mm(14), nominal_step_mm(15)])
    assert review.confidence == pytest.approx(1.0 / (1.0 + math.log(1 / factor) / math.log(Tolerances().chain_factor)))
    assert review_from_measures(review.measures, Tolerances()) == ["spacing"]
    assert review_reasons(None, "L3", Z, T, 198.0, positions_mm=regular).reasons == []
    # the level's own neighbours are the spacing cue's, not this one's: T10 itself is read against T8 there
    assert (
        "chain_factor"
        not in review_reasons(None, "T10", Z, T, 375.0, positions_mm={"T8": 400.0, "T10": 375.0}).measures
    )
