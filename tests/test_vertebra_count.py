"""The lumbar count from the CNN's vertebral phase between predicted anchor levels (estimate/vertebra_count.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bodycomp_cli.estimate.vertebra_count import is_lumbar, lumbar_count

Z = np.arange(0.0, 400.0, 3.0)
STEP_MM = 34.0  # vertebra length; v (vertebrae from C1) grows toward the feet
V_AT_TOP = 15.5  # v of the highest slice


def v_of(z: np.ndarray | float) -> np.ndarray:
    return V_AT_TOP + (Z.max() - np.asarray(z, dtype=np.float64)) / STEP_MM


def z_of(v: float) -> float:
    return float(Z.max() - (v - V_AT_TOP) * STEP_MM)


def phase_outputs(unsure: np.ndarray | None = None) -> np.ndarray:
    """The CNN's (cos, sin) of 2 pi v; (0, 0) on unsure slices (it cannot tell)."""
    angle = 2 * np.pi * v_of(Z)
    phase = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    if unsure is not None:
        phase[unsure] = 0.0
    return phase


@pytest.mark.parametrize(("v_l5", "count"), [(23.0, 5), (24.0, 6), (22.0, 4)])
def test_the_turns_between_l1_and_l5_count_the_lumbar_vertebrae(v_l5: float, count: int) -> None:
    # The head finds L1 below the last rib and "L5" above the sacrum; a sixth lumbar vertebra puts a turn more
    # between them.
    result = lumbar_count(Z, phase_outputs(), {"L1": z_of(19.0), "L3": z_of(21.0), "L5": z_of(v_l5)})
    assert result.count == count and result.reason == ""
    assert result.transitional is (count != 5)
    assert result.cells() == {"lumbar_vertebrae": count, "transitional": count != 5, "lumbar_vertebrae_reason": ""}
    expected = "" if count == 5 else f"the model counts {count} lumbar vertebrae: the level names may be shifted"
    assert result.review_reason == expected


def test_t12_serves_when_l1_is_not_predicted() -> None:
    assert lumbar_count(Z, phase_outputs(), {"T12": z_of(18.0), "L5": z_of(23.0)}).count == 5


def test_no_phase_or_no_anchor_leaves_the_count_blank_with_why() -> None:
    positions = {"L1": z_of(19.0), "L5": z_of(23.0)}
    none = lumbar_count(Z, None, positions)
    assert none.count is None and none.transitional is None
    assert none.reason == "the selection model gives no vertebral phase to count with"
    lone = lumbar_count(Z, phase_outputs(), {"L3": z_of(21.0)})
    assert (
        lone.count is None and lone.reason == "needs T12 or L1 and L5 or S1 among the model's levels, inside the scan"
    )
    swapped = lumbar_count(Z, phase_outputs(), {"L1": z_of(23.0), "L5": z_of(19.0)})
    assert swapped.count is None and swapped.reason == "L5 lies above L1"


def test_a_stretch_without_a_readable_phase_leaves_the_count_blank() -> None:
    unsure = np.abs(Z - z_of(21.0)) < 15.0  # 30 mm with no phase: a whole turn could hide in it
    result = lumbar_count(Z, phase_outputs(unsure), {"L1": z_of(19.0), "L5": z_of(23.0)})
    assert result.count is None and result.reason == "the vertebral phase is unread over more than 18 mm"


def test_lumbar_levels() -> None:
    assert [is_lumbar(name) for name in ("T12", "L1", "L5", "S1", "spleen")] == [False, True, True, False, False]


@pytest.mark.parametrize("variant", ["ribs_11", "ribs_13", "sacralised_l5", "lumbarised_s1", "none"])
def test_on_transitional_phantoms_the_count_is_the_one_phantoms_json_states(variant: str) -> None:
    """A model that names levels from the anatomy around them puts L1 at the first rib-free vertebra and L5 at the
    last one above the sacrum; the phase of each slice (what the CNN is trained to output) turns once per
    vertebra. On each transitional phantom the count between them is the `lumbar_count` of its truth."""
    from bodycomp_cli.core.vertebrae import phase_targets
    from bodycomp_cli.phantoms import series_params
    from bodycomp_cli.phantoms.writer import slice_positions

    prevalence = {} if variant == "none" else {variant: 1.0}
    checked = 0
    for index in range(24):
        params = series_params(7, index, 32, prevalence)
        spine, variants = params.spine, params.variants
        assert variant == "none" or variant in variants.names
        z = slice_positions(params)
        reader_l1 = float(spine.z_at(variants.rib_pairs))  # v: 0 = T1, so the first vertebra without a rib
        reader_l5 = float(spine.z_at(variants.sacrum_index - 1))
        if not (z.min() < reader_l5 < reader_l1 < z.max()):  # this series' coverage ends before an anchor
            continue
        phase, _ = phase_targets(spine.v_at(z))
        result = lumbar_count(z, phase, {"L1": reader_l1, "L5": reader_l5})
        expected = {"ribs_11": 6, "ribs_13": 4, "sacralised_l5": 4, "lumbarised_s1": 6, "none": 5}[variant]
        assert variants.lumbar_count == expected and result.count == expected, (index, result)
        assert result.transitional is (expected != 5)
        checked += 1
    assert checked >= 6
