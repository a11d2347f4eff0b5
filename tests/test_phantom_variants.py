"""Phantom variants: drawn at their prevalence, off by default, with their truth in phantoms.json and
series.csv, and the anatomy or scan each one names (checked on pixels)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import assert_user_error, invoke

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.phantoms import SeriesRenderer, generate_phantoms, series_params
from bodycomp_cli.phantoms import tissues as T
from bodycomp_cli.phantoms.anatomy import vertebra_index
from bodycomp_cli.phantoms.extras import METAL_HU
from bodycomp_cli.phantoms.variants import VARIANT_NAMES, parse_prevalence
from bodycomp_cli.phantoms.writer import covered_levels, slice_positions

SIZE = 128


def _only(name: str) -> dict[str, float]:
    return parse_prevalence(f"{name}=1")


def _slice(name: str | None, v: float, index: int = 0, seed: int = 4, size: int = SIZE):
    params = series_params(seed, index, size, _only(name) if name else None)
    return params, SeriesRenderer(params).render_slice(float(params.spine.z_at(v)))


def test_off_by_default_and_variants_leave_the_other_draws_alone():
    everything = parse_prevalence("all=0.5")
    for index in range(10):
        plain = series_params(2, index, SIZE)
        assert plain.variants.names == () and plain == series_params(2, index, SIZE, parse_prevalence(""))
        varied = series_params(2, index, SIZE, everything)
        # Body build, tissues and noise are drawn from the series' own stream, whatever its variants.
        for field in ("sat_mm", "vat", "muscle_hu", "noise_sd", "texture_seed", "imat_fraction"):
            assert getattr(varied, field) == getattr(plain, field)


def test_prevalence_is_kept_over_many_series():
    prevalence = parse_prevalence("arms_down=0.2,ribs_11=0.1,ribs_13=0.1,chest_only=0.3")
    counts = dict.fromkeys(VARIANT_NAMES, 0)
    n = 600
    for index in range(n):
        for name in series_params(9, index, 32, prevalence).variants.names:
            counts[name] += 1
    for name, p in prevalence.items():
        assert abs(counts[name] / n - p) < 0.05, (name, counts[name])  # 0.05 is over 3 SD at n = 600


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("arms=0.1", "unknown variant 'arms'"),
        ("arms_down", "is not NAME=PREVALENCE"),
        ("scoliosis=x", "is not a number"),
        ("fov_cut=1.5", "outside 0-1"),
        ("ribs_11=0.6,ribs_13=0.6", "exceed 1"),
    ],
)
def test_bad_prevalence_is_refused(text, message):
    with pytest.raises(BodycompError, match=message):
        parse_prevalence(text)


def test_phantoms_command_writes_the_variants_truth(tmp_path):
    out = tmp_path / "set"
    args = ["phantoms", out, "--series", "3", "--size", "32", "--seg-slices", "1", "--workers", "1"]
    result = invoke([*args, "--variants", "ribs_13=1,sacralised_l5=1,arms_down=1,pelvis_only=1"])
    assert result.exit_code == 0, result.output
    with open(out / "series.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    summaries = json.loads((out / "phantoms.json").read_text())["series"]
    for row, summary in zip(rows, summaries, strict=True):
        assert row["variants"] == "ribs_13;sacralised_l5;arms_down;pelvis_only"
        variants = summary["variants"]
        assert variants["rib_pairs"] == 13 and variants["presacral"] == 23 and variants["lumbar_count"] == 3
        assert variants["arms_down"] is True and variants["coverage"] == "pelvis_only"
        assert row["z_L3"] == "" and row["z_L5"] != ""  # pelvis only: L3 not in the scan
    other = tmp_path / "other"
    assert_user_error(invoke(["phantoms", other, "--variants", "metal=0.1"]), "unknown variant 'metal'")
    assert not other.exists()


def test_coverage_variants_leave_l3_out():
    for index in range(20):
        for name, absent, present in (("chest_only", "L3", "T5"), ("pelvis_only", "L3", "L5")):
            params = series_params(6, index, 32, _only(name))
            z = slice_positions(params)
            levels = covered_levels(params, z)
            assert levels[absent] is None and levels[present] is not None
            # Not even the edge of the L3 vertebra (its end plates lie half a vertebra from its centre).
            l3 = vertebra_index("L3")
            l3_top, l3_bottom = params.spine.z_at(l3 - 0.5), params.spine.z_at(l3 + 0.5)
            assert z[-1] < l3_bottom or z[0] > l3_top


def _lateral_bone(hu: np.ndarray, renderer: SeriesRenderer, min_x: float = 75.0) -> int:
    """Bone pixels far from the midline: ribs (the iliac wings are lower than any slice tested here)."""
    return int(((hu > 300) & (np.abs(renderer.x) > min_x)).sum())


def test_rib_count_variants_move_the_last_rib():
    for index in range(3):
        # On a standard spine the ribs of T12 (vertebra 11) are cut just below its centre, none below L1.
        v_t12, v_l1 = vertebra_index("T12") + 0.3, vertebra_index("L1") + 0.3
        params = series_params(4, index, SIZE)
        renderer = SeriesRenderer(params)
        standard_t12 = renderer.render_slice(float(params.spine.z_at(v_t12))).hu
        standard_l1 = renderer.render_slice(float(params.spine.z_at(v_l1))).hu
        _, eleven = _slice("ribs_11", v_t12, index)
        _, thirteen = _slice("ribs_13", v_l1, index)
        assert _lateral_bone(standard_t12, renderer) > 0 and _lateral_bone(standard_l1, renderer) == 0
        assert _lateral_bone(eleven.hu, renderer) == 0  # T12 without ribs
        assert _lateral_bone(thirteen.hu, renderer) > 0  # L1 with a rib


def test_lumbosacral_variants_move_the_sacrum_and_keep_level_names():
    s1, l5 = vertebra_index("S1"), vertebra_index("L5")
    for index in range(3):
        standard = series_params(4, index, SIZE)
        for name, v, sacral in (("lumbarised_s1", s1 + 0.1, False), ("sacralised_l5", l5 + 0.1, True)):
            params, rendered = _slice(name, v, index)
            # Names count from the top: z_L3 and z_L5 are the standard spine's, whatever the sacrum does.
            assert params.spine.z_of("L3") == standard.spine.z_of("L3")
            _, plain = _slice(None, v, index)
            # The sacrum is wide (sacral alae): bright bone 30-60 mm from the midline, which a lumbar body is not.
            x = np.abs(SeriesRenderer(params).x)
            flank = (x > 30.0) & (x < 60.0)
            assert (((rendered.hu > 500) & flank).sum() > ((plain.hu > 500) & flank).sum()) == sacral, name


def test_arms_down_are_labelled_background_outside_the_trunk():
    v = vertebra_index("L3")
    plain_params, plain = _slice(None, v)
    params, armed = _slice("arms_down", v)
    renderer = SeriesRenderer(params)
    # Tissue (not air) at the flanks beyond the trunk, all of it background; the trunk's labels unchanged.
    trunk = plain.labels > 0
    trunk_extent = np.abs(renderer.x[trunk]).max()
    assert params.pixel_spacing_mm >= plain_params.pixel_spacing_mm  # the field of view opened for the arms
    arm_pixels = (armed.hu > -200) & (np.abs(renderer.x) > trunk_extent + 5.0) & (renderer.y < 40.0)
    assert arm_pixels.sum() > 50
    assert np.all(armed.labels[arm_pixels] == T.BACKGROUND)
    muscle_cm2 = lambda r, p: (r.labels == T.MUSCLE).sum() * p.pixel_spacing_mm**2 / 100  # noqa: E731
    assert muscle_cm2(armed, params) == pytest.approx(muscle_cm2(plain, plain_params), rel=0.1)


def test_metal_is_bright_with_streaks_and_the_labels_keep_the_anatomy():
    for name, v in (("spinal_metal", vertebra_index("L3") - 0.1), ("hip_metal", 19.6)):
        params = series_params(4, 1, SIZE, _only(name))
        if name == "spinal_metal":
            v = params.variants.metal_levels[1] - 0.1
        _, metal = _slice(name, v, index=1)
        _, plain = _slice(None, v, index=1)
        assert (metal.hu >= METAL_HU).sum() > 0
        soft = (plain.labels == T.SUBCUTANEOUS_FAT) | (plain.labels == T.MUSCLE)
        changed = np.abs(metal.hu - plain.hu)[soft & (metal.hu < METAL_HU)]
        assert (changed > 50).mean() > 0.02, name  # streaks cross the soft tissue
        same = (metal.labels == plain.labels) | (metal.hu >= METAL_HU)
        assert same.all()  # truth: the anatomy, not the artefact


def test_scoliosis_shifts_the_lumbar_spine_sideways():
    v = vertebra_index("L2")
    params, curved = _slice("scoliosis", v)
    _, straight = _slice(None, v)
    renderer = SeriesRenderer(params)
    centre = lambda hu: renderer.x[(hu > 500) & (np.abs(renderer.x) < 60) & (renderer.y > 0)].mean()  # noqa: E731
    shift = centre(curved.hu) - centre(straight.hu)
    assert np.sign(shift) == np.sign(params.variants.scoliosis_deg) and abs(shift) > 4.0


def test_fov_cut_puts_body_at_the_image_edge():
    for index in range(5):
        _, cut = _slice("fov_cut", vertebra_index("L3"), index)
        _, whole = _slice(None, vertebra_index("L3"), index)
        edges = lambda labels: np.concatenate([labels[:, 0], labels[:, -1]])  # noqa: E731
        assert (edges(cut.labels) > 0).sum() > 5 and (edges(whole.labels) > 0).sum() == 0


def test_variant_series_are_written_whole(tmp_path):
    out = tmp_path / "set"
    generate_phantoms(out, n_series=2, seed=1, size=32, seg_slices=1, workers=1, progress=False,
                      variants=parse_prevalence("all=0.5"))  # fmt: skip
    for path in sorted((out / "series").glob("*.npz")):
        data = np.load(path)
        assert data["hu"].shape == data["imat"].shape and data["hu"].max() <= 3071
