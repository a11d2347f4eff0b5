"""Would a new review cue catch the wrong L3s the flag misses, at what cost in right L3s flagged?

Usage:
    python -m benchmarks.review_candidates --output DIR --models MODELS --series 50 --seeds 4 --first-seed 1005
Run it on tuning cohorts (not the 1001-1004 that docs/performance.md measures the flag on). Two candidates:

- test-time augmentation (segmentation): the L3 slice segmented again flipped left-right, scaled by 0.9 and
  1.1, shifted by 3 % (0.06 in affine_grid's coordinates) and rotated by 8 degrees either way (the training
  augmentation's kinds), each mapped back; the measure is the lowest tissue Dice between those labels and the
  model's own. A model sure of wrong
  labels might still change them when the slice moves.
- cut-away consistency (selection): the series head run again on the slices from 60 mm below the chosen L3
  upward (the pelvis cut away) and on those up to 60 mm above it (the ribs cut away); the measure is how far
  L3 moves. A name counted from the ribs that disagrees with one counted from the sacrum hints at a misnamed
  vertebra.

It prints each candidate's measure on the wrong L3s the present flag misses, and its quantiles on the right
L3s the flag leaves silent (the ones a new cue would start to flag).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.held_out import Cohort, add_arguments, estimated_cohorts, models_folder
from benchmarks.review_flag import OFF_MM, Scored, dice_per_tissue
from bodycomp_cli.core.preprocess import segmentation_input
from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.models import load_estimator_models
from bodycomp_cli.estimate.review import Tolerances
from bodycomp_cli.estimate.series import file_stem
from bodycomp_cli.io.volumes import read_volume
from bodycomp_cli.phantoms import SeriesRenderer
from bodycomp_cli.tasks.slice_selection.series_head import predict_offsets_mm

CUT_AWAY_MM = 60.0


def _affine(scale: float = 1.0, shift: float = 0.0, degrees: float = 0.0) -> torch.Tensor:
    angle = math.radians(degrees)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    return torch.tensor([[cos, -sin, shift], [sin, cos, shift]], dtype=torch.float32)


AUGMENTATIONS = {
    "scale 0.9": _affine(scale=0.9),
    "scale 1.1": _affine(scale=1.1),
    "shift +3 %": _affine(shift=0.06),
    "shift -3 %": _affine(shift=-0.06),
    "rotate +8": _affine(degrees=8.0),
    "rotate -8": _affine(degrees=-8.0),
}


def _warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta[None], list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _agreement(first: np.ndarray, second: np.ndarray, n_classes: int = 4) -> float:
    """The lowest Dice over the tissues between two label maps."""
    return float(np.nanmin(dice_per_tissue(first, second)[: n_classes - 1]))


@torch.no_grad()
def tta_agreement(run, hu_slice: np.ndarray) -> dict[str, float]:
    """Per augmentation, the lowest tissue Dice between the model's labels and its labels of the moved slice
    mapped back (on the model's grid)."""
    window = run.config.window
    images = segmentation_input(hu_slice[None], window.level, window.width, run.config.image_size).to(run.device)
    base = run.model(images).argmax(1)[0].cpu().numpy()
    flipped = torch.flip(run.model(torch.flip(images, dims=[3])), dims=[3]).argmax(1)[0].cpu().numpy()
    measures = {"flip": _agreement(base, flipped)}
    for name, theta in AUGMENTATIONS.items():
        probabilities = run.model(_warp(images, theta)).softmax(1)
        inverse = torch.linalg.inv(torch.cat([theta, torch.tensor([[0.0, 0.0, 1.0]])]))[:2]
        measures[name] = _agreement(base, _warp(probabilities, inverse).argmax(1)[0].cpu().numpy())
    measures["augmentations"] = min(measures[name] for name in AUGMENTATIONS)
    measures["shifts"] = min(measures["shift +3 %"], measures["shift -3 %"])
    return measures


def cut_away_moves(selector, hu: np.ndarray, z_mm: np.ndarray, chosen_z: float) -> dict[str, float]:
    """How far (mm) the series head's L3 moves with the scan cut CUT_AWAY_MM below or above the chosen slice
    (NaN where the cut leaves the scan whole or under four slices)."""
    _, features, phase = selector.series_features(hu, z_mm)
    column = selector.run.config.levels.index("L3")

    def level_z(keep: np.ndarray) -> float:
        offsets = predict_offsets_mm(selector.heads, z_mm[keep], features[keep], None if phase is None else phase[keep])
        return float(np.median(z_mm[keep] - offsets[:, column]))

    whole = level_z(np.ones(len(z_mm), dtype=bool))
    moves = {}
    for name, keep in (("pelvis cut", z_mm >= chosen_z - CUT_AWAY_MM), ("ribs cut", z_mm <= chosen_z + CUT_AWAY_MM)):
        moves[name] = abs(level_z(keep) - whole) if 4 <= keep.sum() < len(z_mm) else math.nan
    moves["cut away"] = float(np.nanmax([moves["pelvis cut"], moves["ribs cut"], 0.0]))
    return moves


def measure_cohort(cohort: Cohort, loaded) -> list[tuple[Scored, bool, dict[str, float]]]:
    """Per present L3: its scoring (review_flag's), whether the flag speaks, and every candidate's measure."""
    entries = {entry.series: entry for entry in collect_inputs([cohort.folder / "phantoms" / "series.csv"])}
    run = loaded.segmenters["L3"].run
    rows = []
    for series in cohort.truth:
        row = cohort.results.loc[series["series"]]
        true_z = series["levels_z_mm"].get("L3")
        if true_z is None or row["L3_reason"]:
            continue
        volume = read_volume(entries[series["series"]].path)
        chosen_z = float(row["L3_z_mm"])
        hu_slice = volume.hu[int(np.argmin(np.abs(volume.z_mm - chosen_z)))].astype(np.float32)
        mask = np.load(cohort.estimate / "masks" / f"{file_stem(series['series'])}_L3.npy")
        _, truth = SeriesRenderer(cohort.params(series)).render(chosen_z)
        edge = np.concatenate([truth[0], truth[-1], truth[:, 0], truth[:, -1]])
        scored = Scored(
            cohort.variant(series),
            "L3",
            abs(chosen_z - true_z),
            dice_per_tissue(mask, truth),
            bool((edge > 0).any()),
            row["L3_review_cues"],
        )
        measures = tta_agreement(run, hu_slice)
        measures.update(cut_away_moves(loaded.selector, volume.hu, volume.z_mm, chosen_z))
        rows.append((scored, bool(scored.fired(Tolerances())), measures))
    return rows


def report(rows: list[tuple[Scored, bool, dict[str, float]]]) -> None:
    wrong = [r for r in rows if r[0].wrong]
    missed = [r for r in wrong if not r[1]]
    quiet = [r for r in rows if not r[0].wrong and not r[1]]
    print(f"L3s {len(rows)}, wrong {len(wrong)}, missed by the flag {len(missed)}, right and unflagged {len(quiet)}")
    for scored, _, measures in missed:
        shown = ", ".join(f"{k} {v:.3g}" for k, v in measures.items())
        print(f"  missed: {scored.variant}: error {scored.error_mm:.1f} mm, Dice {np.round(scored.dice, 3)}: {shown}")
    for name in [*quiet[0][2]] if quiet else []:
        values = np.array([r[2][name] for r in quiet if np.isfinite(r[2][name])])
        higher_worse = name in ("pelvis cut", "ribs cut", "cut away")
        quantiles = np.quantile(values, [0.9, 0.95, 0.97, 0.99] if higher_worse else [0.1, 0.05, 0.03, 0.01])
        tail = "q90/95/97/99" if higher_worse else "q10/5/3/1"
        flagged = []
        for _, _, measures in missed:  # the right unflagged L3s a tolerance that just catches this miss would flag
            value = measures[name]
            hit = values >= value if higher_worse else values <= value
            flagged.append(f"{int(hit.sum())}/{len(values)}")
        print(
            f"{name:12} right unflagged {tail} {' / '.join(f'{q:.3g}' for q in quantiles)};"
            f" catching each miss would flag {', '.join(flagged) or '-'} right L3s"
        )
    off = [r for r in wrong if r[0].error_mm > OFF_MM]
    print(f"({len(off)} of the wrong L3s are > {OFF_MM:g} mm off)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    cohorts = estimated_cohorts(args)
    models = models_folder(args)
    loaded = load_estimator_models(models / "select", [str(models / "seg")], None, gpus=None)
    rows = [row for cohort in cohorts for row in measure_cohort(cohort, loaded)]
    print(f"{len(cohorts)} cohort(s) of {args.series} series (seeds {', '.join(str(c.seed) for c in cohorts)})")
    report(rows)


if __name__ == "__main__":
    main()
