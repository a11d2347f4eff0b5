"""A level outside the scanned z-range: blank measures, `not in scan`, no slice, preview or mask (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_estimate_cli import THRESHOLD_MM, FakeModels, write_series

from bodycomp_cli.core.metrics import outputs_from_offsets
from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.level_presence import (
    NOT_IN_SCAN,
    level_presence,
    level_presence_of_evidence,
    positions_in_scan,
    predicted_level_z_mm,
    pressed_against_an_end,
    series_presence,
)
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate

Z = np.arange(30) * 4.0  # 0..116 mm


def head_outputs(level_z: float) -> np.ndarray:
    """A series head's outputs for a level at level_z, as the predictor gives them (float32)."""
    return outputs_from_offsets((Z - level_z)[:, None], THRESHOLD_MM).astype(np.float32)[:, 0]


@pytest.mark.parametrize("level_z", [-300.0, -150.0, -25.0, -8.0, 124.0, 145.0, 400.0])
def test_a_level_beyond_either_end_is_not_in_the_scan(level_z: float) -> None:
    presence = level_presence(head_outputs(level_z), Z, THRESHOLD_MM)
    assert not presence.in_scan and presence.reason == NOT_IN_SCAN
    assert (presence.level_z_mm < -THRESHOLD_MM / 2) == (level_z < 0)


@pytest.mark.parametrize("level_z", [-4.0, 0.0, 50.0, 116.0, 120.0])
def test_a_level_inside_or_within_the_margin_is_in_the_scan(level_z: float) -> None:
    presence = level_presence(head_outputs(level_z), Z, THRESHOLD_MM)
    assert presence.in_scan and presence.reason == ""
    assert presence.level_z_mm == pytest.approx(level_z, abs=0.5)


def test_a_flat_curve_gives_a_bound_beyond_the_nearer_end() -> None:
    bound = THRESHOLD_MM * np.log(0.95 / 0.05)
    assert predicted_level_z_mm(np.ones(30), Z, THRESHOLD_MM) == pytest.approx(-bound)
    assert predicted_level_z_mm(np.zeros(30), Z, THRESHOLD_MM) == pytest.approx(116.0 + bound)


def test_the_margin_is_a_setting() -> None:
    assert not level_presence(head_outputs(-8.0), Z, THRESHOLD_MM, margin_mm=5.0).in_scan
    assert level_presence(head_outputs(-8.0), Z, THRESHOLD_MM, margin_mm=10.0).in_scan


def test_every_reading_must_put_the_level_inside() -> None:
    # The snap moved the head's level from 30 mm above the top slice (116 mm) to 110 mm: the chosen outputs
    # alone say "in the scan", the head before the snap does not.
    snapped, head, cnn = head_outputs(110.0), head_outputs(146.0), head_outputs(112.0)
    assert level_presence(snapped, Z, THRESHOLD_MM).in_scan
    moved = level_presence_of_evidence([snapped, head, cnn], Z, THRESHOLD_MM)
    assert not moved.in_scan and moved.reason == NOT_IN_SCAN and moved.level_z_mm == pytest.approx(110.0, abs=0.5)
    # the per-slice CNN sees every slice far below the level (saturated at 1): not in the scan either
    saturated = level_presence_of_evidence([snapped, None, np.ones_like(Z)], Z, THRESHOLD_MM)
    assert not saturated.in_scan
    # all three inside (a run without a head before the snap gives None): in the scan, at the chosen position
    inside = level_presence_of_evidence([snapped, None, cnn], Z, THRESHOLD_MM)
    assert inside.in_scan and inside.reason == "" and inside.level_z_mm == pytest.approx(110.0, abs=0.5)


def test_a_level_squeezed_against_an_end_is_beyond_it() -> None:
    # Z runs 0..116 mm. L5 found at 4 mm with L3 at 24 mm: 10 mm per vertebra, where an adult's L3 -> L5 is 72 mm,
    # so L5 lies near 24 - 72 = -48 mm, far below the first slice.
    assert pressed_against_an_end("L5", 4.0, {"L3": 24.0, "L5": 4.0}, Z, THRESHOLD_MM)
    # the same at the top: T12 at 112 mm with L1 at 100 mm (an adult's T12 -> L1 about 27 mm)
    assert pressed_against_an_end("T12", 112.0, {"T12": 112.0, "L1": 100.0}, Z, THRESHOLD_MM)
    # spaced as an adult's: L5 at 4 mm with L3 at 76 mm puts it at 4 mm, inside
    assert not pressed_against_an_end("L5", 4.0, {"L3": 76.0, "L5": 4.0}, Z, THRESHOLD_MM)
    # away from the ends, without a neighbour on the inner side, or not a vertebra: never
    assert not pressed_against_an_end("L5", 60.0, {"L3": 70.0, "L5": 60.0}, Z, THRESHOLD_MM)
    assert not pressed_against_an_end("L5", 4.0, {"S1": 1.0, "L5": 4.0}, Z, THRESHOLD_MM)
    assert not pressed_against_an_end("umbilicus", 4.0, {"L3": 24.0}, Z, THRESHOLD_MM)


def test_the_spine_order_carries_absence_past_a_level_beyond_an_end() -> None:
    from bodycomp_cli.tasks.slice_selection.evidence import SelectionEvidence

    # A chest scan (0..116 mm): T12 at 60 mm, L1 read 60 mm below the first slice; L3's own readings put it
    # at 20 mm (inside), which cannot be: it lies below L1.
    columns = np.stack([head_outputs(60.0), head_outputs(-60.0), head_outputs(20.0)], axis=1)
    evidence = SelectionEvidence(["T12", "L1", "L3"], columns, columns)
    presence = series_presence(evidence, Z, THRESHOLD_MM)
    assert presence["T12"].in_scan and not presence["L1"].in_scan
    assert not presence["L3"].in_scan and presence["L3"].reason == NOT_IN_SCAN
    # the same readings with L1 inside: L3 stays in the scan
    columns[:, 1] = head_outputs(40.0)
    assert series_presence(SelectionEvidence(["T12", "L1", "L3"], columns, columns), Z, THRESHOLD_MM)["L3"].in_scan


def test_a_lumbar_level_counted_up_from_the_sacrum_needs_the_vertebra_above_it_in_the_scan() -> None:
    from bodycomp_cli.tasks.slice_selection.evidence import SelectionEvidence

    # A pelvis scan (0..116 mm): T12 and L1 read far above its top, so the lumbar names were counted up from the
    # sacrum. L3 read 6 mm below the top: were it the true L4 (a lumbarised S1), L3 would lie ~30 mm above the
    # scan, so it is not in the scan; L5 at 40 mm has L4 (76 mm) inside the scan and stays.
    def presence(l3_z: float, t12_z: float = 300.0) -> dict:
        columns = np.stack([head_outputs(z) for z in (t12_z, 230.0, l3_z, 40.0)], axis=1)
        return series_presence(SelectionEvidence(["T12", "L1", "L3", "L5"], columns, columns), Z, THRESHOLD_MM)

    near_top = presence(110.0)
    assert not near_top["L3"].in_scan and near_top["L3"].reason == NOT_IN_SCAN
    assert near_top["L5"].in_scan and not near_top["T12"].in_scan
    # L2 (36 mm above L3) within half a threshold of the top slice, the presence margin: kept
    assert presence(80.0)["L3"].in_scan
    # a run without a level from T12 up cannot tell what anchored the names: the rule does not apply
    columns = np.stack([head_outputs(110.0), head_outputs(40.0)], axis=1)
    assert series_presence(SelectionEvidence(["L3", "L5"], columns, columns), Z, THRESHOLD_MM)["L3"].in_scan


def test_four_lumbar_vertebrae_without_the_sacrum_in_the_scan_leave_l5_beyond_it() -> None:
    from test_vertebra_count import Z as LONG_Z
    from test_vertebra_count import phase_outputs, z_of

    from bodycomp_cli.tasks.slice_selection.evidence import SelectionEvidence

    # Slices 0..397 mm, 34 mm per vertebra, v 15.5 at the top (T9/T10). The model put L1 on v 19, "L3" on v 20
    # and "L5" on v 22 (the true L4), two vertebrae below its L3 as an adult's: the phase turns three times between
    # L1 and L5, so it counts four lumbar vertebrae.
    def presence(bottom_v: float) -> dict:
        z = LONG_Z[LONG_Z >= z_of(bottom_v)]
        keep = len(z)
        columns = np.stack([
            outputs_from_offsets((z - z_of(v))[:, None], THRESHOLD_MM)[:, 0] for v in (19.0, 20.0, 22.0)
        ], axis=1)  # fmt: skip
        evidence = SelectionEvidence(["L1", "L3", "L5"], columns, columns, None, phase_outputs()[:keep])
        return series_presence(evidence, z, THRESHOLD_MM)

    # the scan ends 0.3 vertebra below "L5": no sacrum in it, so four vertebrae cannot be told from a misnamed L4
    cut = presence(22.3)
    assert not cut["L5"].in_scan and cut["L5"].reason == NOT_IN_SCAN and cut["L3"].in_scan
    # the scan goes on 1.5 vertebrae below "L5", over the sacrum: a sacralised L5, kept
    assert presence(23.5)["L5"].in_scan


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one prediction per slice"):
        predicted_level_z_mm(np.ones(3), Z, THRESHOLD_MM)


class TwoLevelModels(FakeModels):
    """L3 at 50 mm as FakeModels; T12 at 300 mm, above every slice of the test series."""

    levels = ["L3", "T12"]

    def slice_outputs(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        z = hu_volume[:, 0, 0].astype(np.float64)
        return np.stack([1 / (1 + np.exp(-(z - level) / THRESHOLD_MM)) for level in (50.0, 300.0)], axis=1)


def test_estimate_leaves_an_absent_level_blank_and_says_why(tmp_path: Path) -> None:
    write_series(tmp_path / "s1.npz")
    out = tmp_path / "out"
    options = EstimateOptions(save_masks=True, show_progress=False)
    models = TwoLevelModels()
    run_estimate(collect_inputs([tmp_path / "s1.npz"]), models, out, options)
    assert models.segmented == [1]  # only L3 was segmented
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["L3_slice_index"] == 12 and pd.isna(row["L3_reason"])
    assert row["T12_reason"] == NOT_IN_SCAN
    t12 = [column for column in row.index if column.startswith("T12_") and column != "T12_reason"]
    # the slice's 4 columns, 6 per tissue, and the clinical measures per level (issue 23): every one blank
    assert len(t12) >= 4 + 3 * 6 and row[t12].isna().all(), row[t12][row[t12].notna()]
    assert sorted(path.name for path in (out / "previews").iterdir()) == ["s1_L3.png"]
    assert sorted(path.name for path in (out / "masks").iterdir()) == ["s1_L3.npy"]
    level = json.loads((out / "results.json").read_text())["series"][0]["levels"]["T12"]
    assert level["reason"] == NOT_IN_SCAN and level["slice_index"] is None
    assert level["tissues"]["muscle"]["area_cm2"] is None
    assert "T12: not in scan" in (out / "report.html").read_text()
    # --resume reads the blank level back and writes the same files
    before = (out / "results.csv").read_text()
    run_estimate(
        collect_inputs([tmp_path / "s1.npz"]), TwoLevelModels(), out, EstimateOptions(resume=True, show_progress=False)
    )
    assert (out / "results.csv").read_text() == before


def test_integer_columns_stay_integers_beside_blank_cells() -> None:
    # a level absent from one series leaves its slice index blank; the other series' index must not become 12.0
    from bodycomp_cli.estimate.report import csv_text

    rows = [{"series": "a", "L3_slice_index": 12, "lumbar_vertebrae": 4}, {"series": "b", "L3_slice_index": None}]
    text = csv_text(rows, ["series", "L3_slice_index", "lumbar_vertebrae", "L3_z_mm"])
    assert text.splitlines() == ["series,L3_slice_index,lumbar_vertebrae,L3_z_mm", "a,12,4,", "b,,,"]


class SqueezedL5Models(FakeModels):
    """L1 at 116 mm, L3 at 50 mm (as FakeModels) and L5 squeezed to 4 mm, against the last slice (0 mm):
    at an adult's spacing from L3 it lies some 20 mm below it, so series_presence calls it absent."""

    levels = ["L1", "L3", "L5"]

    def slice_outputs(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        z = hu_volume[:, 0, 0].astype(np.float64)
        return np.stack([1 / (1 + np.exp(-(z - level) / THRESHOLD_MM)) for level in (116.0, 50.0, 4.0)], axis=1)


def test_a_level_called_absent_is_no_neighbour_of_the_others(tmp_path: Path) -> None:
    from bodycomp_cli.estimate.review import parse_measures
    from bodycomp_cli.tasks.slice_selection.evidence import SelectionEvidence

    outputs = SqueezedL5Models().slice_outputs(np.rint(Z)[:, None, None] * np.ones((1, 1, 2)), Z)
    presences = series_presence(SelectionEvidence(SqueezedL5Models.levels, outputs, outputs), Z, THRESHOLD_MM)
    assert not presences["L5"].in_scan and sorted(positions_in_scan(presences)) == ["L1", "L3"]
    write_series(tmp_path / "s1.npz")
    out = tmp_path / "out"
    run_estimate(collect_inputs([tmp_path / "s1.npz"]), SqueezedL5Models(), out, EstimateOptions(show_progress=False))
    row = pd.read_csv(out / "results.csv", keep_default_na=False).iloc[0]
    assert row["L5_reason"] == NOT_IN_SCAN and row["L5_review_cues"] == ""
    # L3's spacing is read against L1 (33 mm per vertebra, an adult's ~36) and not against the absent L5, whose
    # 23 mm per vertebra would have flagged it
    measures = {cue.key for cue in parse_measures(row["L3_review_cues"])}
    assert "spacing_factor_L1" in measures and "spacing_factor_L5" not in measures
    assert "spacing" not in row["L3_review"] and "L5" not in row["L3_review"]
