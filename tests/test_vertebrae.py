"""The vertebral coordinate and phase read from level offsets (core/vertebrae.py), and the CNN's phase loss."""

import numpy as np
import pytest
import torch

from bodycomp_cli.core.vertebrae import (
    nominal_step_mm,
    phase_targets,
    spine_index,
    spine_levels,
    vertebral_coordinate,
)

NAN = np.nan


def test_spine_index_counts_from_c1_and_ignores_other_names():
    names = ("C1", "T1", "t12", "L1", "L3", "S1", "carina")
    assert [spine_index(name) for name in names] == [0, 7, 18, 19, 21, 24, None]
    assert spine_levels(["L3", "T12", "carina", "L3", "L1"]) == [1, 4, 0]  # head to feet, duplicates once


def test_vertebral_coordinate_interpolates_between_labelled_levels_only():
    levels = ["L3", "L1"]  # any column order
    offsets = np.array(
        [
            [25.0, -10.0],  # 10 mm below L1, 25 mm above L3: 2/7 of the way from L1 (19) to L3 (21)
            [0.0, -70.0],  # at L3
            [-3.0, -73.0],  # below L3: outside the labelled span
            [NAN, -10.0],  # only L1 known: its nominal step, 36 mm
            [35.0, 0.0],  # at L1
        ]
    )
    v = vertebral_coordinate(offsets, levels)
    np.testing.assert_allclose(v[[0, 1, 3, 4]], [19.0 + 2.0 * 10.0 / 35.0, 21.0, 19.0 + 10.0 / 36.0, 19.0])
    assert np.isnan(v[2])


def test_vertebral_coordinate_uses_the_levels_each_slice_has():
    offsets = np.array([[-20.0, NAN, 30.0], [-20.0, 10.0, 30.0]])  # T12, L1, L3; row 0 lacks L1
    v = vertebral_coordinate(offsets, ["T12", "L1", "L3"])
    np.testing.assert_allclose(v, [18.0 + 3.0 * 20.0 / 50.0, 18.0 + 20.0 / 30.0])  # T12 to L3, T12 to L1
    # T12 alone: 20 mm below it is 20/27 of T12's nominal step (27 mm) toward L1
    np.testing.assert_allclose(vertebral_coordinate(offsets[:, :1], ["T12"]), [18.0 + 20.0 / 27.0] * 2)
    assert np.isnan(vertebral_coordinate(offsets[:, :1], ["carina"])).all()  # not a vertebra: no phase


def test_one_labelled_level_gives_a_phase_within_one_nominal_step_of_it():
    assert [nominal_step_mm(spine_index(name)) for name in ("C3", "T1", "T12", "L3")] == [16.0, 20.0, 27.0, 36.0]
    # offsets from L3 (36 mm step): its centre, the L3/L4 disc, L4's and L2's centres, then beyond one step
    offsets = np.array([[0.0], [-18.0], [-36.0], [36.0], [-36.5], [50.0], [NAN]])
    v = vertebral_coordinate(offsets, ["L3"])
    np.testing.assert_allclose(v[:4], [21.0, 21.5, 22.0, 20.0])
    assert np.isnan(v[4:]).all()
    targets, valid = phase_targets(v)
    np.testing.assert_allclose(targets[:2], [[1.0, 0.0], [-1.0, 0.0]], atol=1e-6)  # centre, then disc
    np.testing.assert_array_equal(valid, [1, 1, 1, 1, 0, 0, 0])


@pytest.mark.parametrize(("levels", "phase_outputs"), [(("L3",), 2), (("carina",), 0)])
def test_a_single_vertebral_level_is_enough_for_phase_outputs(tmp_path, levels, phase_outputs):
    from helpers_train import make_select_data

    from bodycomp_cli.tasks.slice_selection import SliceSelectionSettings, SliceSelectionTask

    data = make_select_data(tmp_path / "data", levels=levels, n_series=(1, 1), slices=3, size=32)
    task = SliceSelectionTask(SliceSelectionSettings(levels=list(levels)))
    head = task._head_for(data)
    assert head is not None and head.feature_levels == list(levels)
    assert head.phase_outputs == phase_outputs


def test_phase_targets_are_cos_and_sin_of_the_phase():
    targets, valid = phase_targets(np.array([21.0, 21.5, 20.25, NAN]))
    np.testing.assert_allclose(targets, [[1, 0], [-1, 0], [0, 1], [0, 0]], atol=1e-6)
    np.testing.assert_array_equal(valid, [1, 1, 1, 0])


def test_the_phase_loss_adds_to_the_level_loss_of_slices_with_a_phase():
    from bodycomp_cli.tasks.slice_selection import SliceSelectionSettings, SliceSelectionTask
    from bodycomp_cli.tasks.slice_selection.series_head import HeadSettings
    from bodycomp_cli.tasks.slice_selection.task import PHASE_WEIGHT

    task = SliceSelectionTask(SliceSelectionSettings(levels=["L3"]))
    task.head = HeadSettings(feature_levels=["L3", "L1"], phase_outputs=2)
    outputs = torch.tensor([[0.0, 0.0, 0.5, 0.0], [0.0, 0.0, 3.0, 3.0]])
    batch = {
        "target": torch.full((2, 2), 0.5),
        "valid": torch.ones(2, 2),
        "phase": torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
        "phase_valid": torch.tensor([1.0, 0.0]),  # the second slice has no phase: its outputs do not count
    }
    assert float(task.loss(outputs, batch)) == pytest.approx(PHASE_WEIGHT * 0.5 / 2.0)
    stats = task.validation_stats(outputs, {**batch, "offset_mm": torch.zeros(2, 2), "index": torch.arange(2)})
    assert float(stats["phase_sum"]) == pytest.approx(0.5) and float(stats["phase_count"]) == 2.0


def _phase_outputs(z, centre, length, rng=None, noise=0.0):
    """(cos, sin) of the phase of a spine whose vertebrae are `length` mm long with one centred at `centre`."""
    v = (centre - np.asarray(z)) / length  # grows toward the feet
    outputs = np.stack([np.cos(2 * np.pi * v), np.sin(2 * np.pi * v)], axis=1)
    return outputs + (rng.normal(0, noise, outputs.shape) if rng is not None else 0.0)


def test_the_snap_moves_an_estimate_to_the_nearest_place_of_the_target_phase():
    from bodycomp_cli.core.vertebrae import snap_to_phase

    rng = np.random.default_rng(0)
    z = np.arange(0.0, 200.0, 2.5)
    phase = _phase_outputs(z, centre=100.0, length=35.0, rng=rng, noise=0.05)
    assert snap_to_phase(z, phase, 112.0, 0.0) == pytest.approx(100.0, abs=1.0)  # within half a vertebra
    assert snap_to_phase(z, phase, 88.0, 0.0) == pytest.approx(100.0, abs=1.0)
    assert snap_to_phase(z, phase, 120.0, 0.0) == pytest.approx(135.0, abs=1.5)  # nearer the next centre
    assert snap_to_phase(z, phase, 100.0, 0.25) == pytest.approx(100.0 - 0.25 * 35.0, abs=1.0)
    assert snap_to_phase(z, phase * 0.1, 112.0, 0.0) == 112.0  # no confident phase: the estimate stays


def test_the_series_head_snaps_its_estimate_to_the_level_phase_it_learned():
    from bodycomp_cli.tasks.slice_selection.series_head import (
        HeadSettings,
        SeriesFeatures,
        predict_offsets_mm,
        train_heads,
    )

    rng = np.random.default_rng(1)

    def series(spacing):
        # A coarse cue (a ramp that ends 40 mm below the level, offset by up to +-12 mm per series, as organs
        # slide along the spine) and the phase, here at a level whose readers mark its lower end plate (0.4).
        level = rng.uniform(-30.0, 30.0)
        z = np.arange(level - 150.0, level + 150.0, spacing)
        cue = np.clip((z - level + 40.0 + rng.uniform(-12.0, 12.0)) / 100.0, 0.0, 1.0)
        features = np.stack([cue, rng.normal(0, 0.1, len(z))], axis=1).astype(np.float32)
        phase = _phase_outputs(z, level + 0.4 * 34.0, 34.0, rng, 0.03)
        return SeriesFeatures(z, features, np.array([level]), phase)

    train = [series(s) for s in rng.choice([1.0, 2.5, 5.0], 16)]
    heads = train_heads(train, HeadSettings(feature_levels=["L3"], steps=150, members=1), seed=0)
    assert float(heads[0].level_phase[0]) == pytest.approx(0.4, abs=0.03)
    snapped, coarse = [], []
    for entry in (series(s) for s in (1.0, 2.0, 3.0, 1.5, 2.5)):
        truth = entry.level_z_mm[0]
        unsnapped = predict_offsets_mm(heads, entry.z_mm, entry.features)[:, 0]
        coarse.append(abs(truth - np.median(entry.z_mm - unsnapped)))
        offsets = predict_offsets_mm(heads, entry.z_mm, entry.features, entry.phase)[:, 0]
        snapped.append(abs(float(np.median(entry.z_mm - offsets)) - truth))
    assert max(snapped) <= 1.5, (snapped, coarse)
    assert max(coarse) > 4.0, coarse  # the cue alone places the level only to within its slide


def test_levels_that_count_the_vertebrae_otherwise_than_their_neighbours_move_by_whole_vertebrae():
    from bodycomp_cli.core.vertebrae import agree_on_vertebra_count, spine_index

    rng = np.random.default_rng(3)
    z = np.arange(-200.0, 200.0, 1.5)
    # A spine with 35 mm vertebrae and L3's centre at z = 0: v(z) = 21 - z / 35.
    phase = _phase_outputs(z, centre=0.0, length=35.0, rng=rng, noise=0.05)
    levels = ["T12", "L1", "L3", "L5", "carina"]
    spine = np.array([np.nan if spine_index(n) is None else spine_index(n) for n in levels], dtype=np.float64)
    truth = np.array([105.0, 70.0, 0.0, -70.0, 150.0])
    found = truth + np.array([0.3, -0.4, -35.2, 0.1, 0.0])  # L3 snapped onto L4's centre
    moved = agree_on_vertebra_count(z, phase, found, spine, np.zeros(5))
    np.testing.assert_allclose(moved[[0, 1, 3, 4]], found[[0, 1, 3, 4]])  # agreeing levels and non-vertebrae stay
    assert moved[2] == pytest.approx(0.0, abs=1.0)
    # With only one neighbour, nothing outvotes a level.
    lonely = agree_on_vertebra_count(z, phase, np.array([np.nan, 70.0, -35.2, np.nan, np.nan]), spine, np.zeros(5))
    assert lonely[2] == -35.2
