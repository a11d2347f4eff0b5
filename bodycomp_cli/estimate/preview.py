"""Preview PNGs: the chosen slice with its tissue overlay and measures, beside the model's level score along z."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bodycomp_cli.estimate.measure import measure_tissues
from bodycomp_cli.io.atomic import atomic_path
from bodycomp_cli.tasks.segmentation.overlay import overlay_rgb, tissue_colour


def save_preview(
    path: Path,
    hu_slice: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    smoothed: np.ndarray | None,
    z_mm: np.ndarray,
    index: int,
    title: str,
    pixel_spacing: tuple[float, float] | None = None,
) -> None:
    """Write the preview PNG for one level of one series (atomically).

    Example: save_preview(out / "previews/s1_L3.png", hu[i], mask, classes, choice.smoothed, z, i, "s1 L3")
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    figure = Figure(figsize=(10, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    image_axes, curve_axes = figure.subplots(1, 2, width_ratios=[1.6, 1])
    aspect = pixel_spacing[0] / pixel_spacing[1] if pixel_spacing else 1.0
    image_axes.imshow(overlay_rgb(hu_slice, labels, classes), aspect=aspect, interpolation="nearest")
    image_axes.set_axis_off()
    image_axes.set_title(title)
    # The legend gives each tissue's area and mean HU on this slice, as measure_tissues computes them for
    # results.csv (which, with --range, averages over the neighbouring slices too).
    measured = measure_tissues(hu_slice, labels, classes, pixel_spacing)
    handles = [
        Patch(color=tissue_colour(tissue, label), label=_tissue_label(tissue, measured[tissue]))
        for label, tissue in enumerate(classes)
        if label > 0
    ]
    image_axes.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.8, title="on this slice")

    if smoothed is None:  # a one-slice volume: no selection curve to show
        curve_axes.set_axis_off()
        curve_axes.text(0.5, 0.5, "slice selection skipped\n(one slice)", ha="center", va="center")
    else:
        _plot_curve(curve_axes, smoothed, z_mm, index)
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png")


def _tissue_label(tissue: str, values: dict[str, float]) -> str:
    """`muscle: 152.3 cm², mean 38 HU`; a blank stays out (no pixel spacing: no area; no pixels: no HU)."""
    parts = []
    if np.isfinite(values["area_cm2"]):
        parts.append(f"{values['area_cm2']:.1f} cm²")
    if np.isfinite(values["mean_hu"]):
        parts.append(f"mean {values['mean_hu']:.0f} HU")
    return f"{tissue.replace('_', ' ')}: {', '.join(parts) or 'none found'}"


def _plot_curve(curve_axes, smoothed: np.ndarray, z_mm: np.ndarray, index: int) -> None:  # noqa: ANN001
    # Distance runs up the page (toward the head), as in a coronal view, from the slice chosen.
    distance = np.asarray(z_mm, dtype=np.float64) - float(z_mm[index])
    curve_axes.plot(smoothed, distance, color="black", linewidth=1.2, label="model's level score (smoothed)")
    curve_axes.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
    curve_axes.axhline(0.0, color="tab:red", linewidth=1.0, linestyle="--")
    curve_axes.plot([smoothed[index]], [0.0], "o", color="tab:red", label=f"chosen slice: z = {z_mm[index]:.1f} mm")
    curve_axes.set_xlim(-1.05, 1.05)
    curve_axes.set_xlabel("model's level score\n(-1: slice below the level, +1: above it, 0: at it)")
    curve_axes.set_ylabel("distance from the chosen slice (mm, + toward the head)")
    curve_axes.legend(loc="lower right", fontsize=8)
