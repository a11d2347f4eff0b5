"""LAMA/NAMA and IMAT areas at L3 and L1:L5 tissue volumes on phantoms: measured against the phantom's truth.

Truth: the clean (noise-free) phantom slice with its labels, from bodycomp_cli/phantoms (SeriesRenderer.render).
Measured: the same functions estimate uses (muscle_quality for LAMA/NAMA at L3; range_measures.tally_slices
for the volumes, as --volume does) on the noisy slice that the phantom writer makes, with the truth mask. So
the error is what CT noise alone does to each measure; a model's segmentation error comes on top (not scored
here). Volumes are scored as estimate computes them: --hu-ranges none (the mask as drawn) and alberta (only
pixels inside each tissue's HU range count, where noise pushes edge pixels out).

    python benchmarks/clinical_accuracy.py                 # 8 series at 256 px
    python benchmarks/clinical_accuracy.py --series 2 --size 64 --tiny
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bodycomp_cli.estimate.muscle_quality import muscle_quality  # noqa: E402
from bodycomp_cli.estimate.range_measures import tally_slices  # noqa: E402
from bodycomp_cli.phantoms.render import SeriesRenderer  # noqa: E402
from bodycomp_cli.phantoms.tissues import CLASS_NAMES  # noqa: E402
from bodycomp_cli.phantoms.writer import series_params  # noqa: E402

TISSUES = CLASS_NAMES[1:]


def l3_quality(renderer: SeriesRenderer, rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """LAMA/NAMA areas and shares and IMAT at the L3 centre: truth (clean HU; the IMAT mask) and measured (noisy
    HU), truth mask."""
    p = renderer.p
    rendered = renderer.render_slice(float(p.spine.z_of("L3")))
    clean, labels = rendered.hu, rendered.labels
    noisy = renderer.add_noise(clean, rng)
    spacing = (p.pixel_spacing_mm, p.pixel_spacing_mm)
    truth = muscle_quality(clean, labels, CLASS_NAMES, spacing)
    # IMAT's truth is the phantom's own intermuscular-fat mask, not a measure of the clean slice
    truth["imat_area_cm2"] = float(rendered.imat.sum()) * p.pixel_spacing_mm**2 / 100.0
    measured = muscle_quality(noisy, labels, CLASS_NAMES, spacing)
    return {"truth": truth, "measured": measured}


def l1_l5_volumes(renderer: SeriesRenderer, rng: np.random.Generator, max_slices: int) -> dict[str, dict]:
    """Per tissue, cm³ between the L1 and L5 centres at the series' slice step: truth, and measured with
    --hu-ranges none and alberta (noisy HU, truth mask)."""
    p = renderer.p
    top, bottom = float(p.spine.z_of("L1")), float(p.spine.z_of("L5"))
    step = p.slice_spacing_mm
    count = min(int(np.floor((top - bottom) / step)) + 1, max_slices)
    if count < int(np.floor((top - bottom) / step)) + 1:  # --tiny: fewer, thicker slices over the same span
        step = (top - bottom) / (count - 1)
    z = bottom + np.arange(count) * step
    clean = np.empty((count, p.size, p.size), np.float32)
    noisy = np.empty((count, p.size, p.size), np.int16)
    labels = np.empty((count, p.size, p.size), np.uint8)
    for k, position in enumerate(z):
        clean[k], labels[k] = renderer.render(float(position))
        noisy[k] = renderer.add_noise(clean[k], rng)
    voxel_cm3 = p.pixel_spacing_mm**2 * step / 1000.0
    out: dict[str, dict] = {"slices": count, "step_mm": step}

    for name, hu, ranges in (("truth", clean, "none"), ("none", noisy, "none"), ("alberta", noisy, "alberta")):
        tally = tally_slices(hu, range(count), truth_in_order(labels), CLASS_NAMES, ranges)
        out[name] = {tissue: tally.pixels.get(tissue, 0) * voxel_cm3 for tissue in TISSUES}
    return out


def truth_in_order(labels: np.ndarray):
    """A `segment` for tally_slices that answers each batch with the truth labels of the next slices (it is
    called on the slices in order)."""
    done = 0

    def segment(hu: np.ndarray) -> np.ndarray:
        nonlocal done
        batch = labels[done : done + len(hu)]
        done += len(hu)
        return batch

    return segment


def _errors(pairs: list[tuple[float, float]]) -> dict[str, float]:
    """Mean signed and absolute error, and the mean absolute error as a share of the mean truth (%), over
    (truth, measured). A share of the mean, not a mean of shares: one series with a tiny truth (little LAMA)
    would swamp a mean of shares."""
    errors = np.array([m - t for t, m in pairs])
    truths = np.array([t for t, _ in pairs])
    mean_truth = float(truths.mean())
    return {
        "mean_error": float(errors.mean()),
        "mean_abs_error": float(np.abs(errors).mean()),
        "mean_abs_error_percent": float(np.abs(errors).mean() / mean_truth * 100.0) if mean_truth > 0 else float("nan"),
        "mean_truth": float(truths.mean()),
    }


def phantom_accuracy(n_series: int, size: int, seed: int, max_slices: int = 10_000) -> dict:
    """Errors over n_series phantoms: LAMA/NAMA area (cm²) and share at L3, L1:L5 volumes (cm³) per tissue."""
    quality: dict[str, list[tuple[float, float]]] = {}
    volumes: dict[str, list[tuple[float, float]]] = {}
    slices = 0
    for index in range(n_series):
        renderer = SeriesRenderer(series_params(seed, index, size))
        rng = np.random.default_rng([seed, index, 7])  # noise as the phantom writer adds it (add_noise)
        at_l3 = l3_quality(renderer, rng)
        for field in ("lama_area_cm2", "nama_area_cm2", "lama_share", "imat_area_cm2"):
            quality.setdefault(field, []).append((at_l3["truth"][field], at_l3["measured"][field]))
        volume = l1_l5_volumes(renderer, rng, max_slices)
        slices += volume["slices"]
        for ranges in ("none", "alberta"):
            for tissue in TISSUES:
                volumes.setdefault(f"{tissue}_cm3 ({ranges})", []).append(
                    (volume["truth"][tissue], volume[ranges][tissue])
                )
    return {
        "series": n_series,
        "size": size,
        "seed": seed,
        "volume_slices": slices,
        "l3_quality": {field: _errors(pairs) for field, pairs in quality.items()},
        "l1_l5_volumes": {field: _errors(pairs) for field, pairs in volumes.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="at most 12 slices per volume (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = phantom_accuracy(args.series, args.size, args.seed, 12 if args.tiny else 10_000)
    print(f"{result['series']} phantoms at {result['size']} px (seed {result['seed']}), truth mask, noisy HU:")
    for section in ("l3_quality", "l1_l5_volumes"):
        for field, e in result[section].items():
            print(
                f"  {section} {field}: mean truth {e['mean_truth']:.3f}, error {e['mean_error']:+.3f}, "
                f"|error| {e['mean_abs_error']:.3f} ({e['mean_abs_error_percent']:.2f} %)"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
