"""Preview PNGs: the chosen slice with its tissue overlay, beside the smoothed prediction curve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

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
    handles = [
        Patch(color=tissue_colour(tissue, label), label=tissue.replace("_", " "))
        for label, tissue in enumerate(classes)
        if label > 0
    ]
    image_axes.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.8)

    if smoothed is None:  # a one-slice volume: no selection curve to show
        curve_axes.set_axis_off()
        curve_axes.text(0.5, 0.5, "slice selection skipped\n(one slice)", ha="center", va="center")
    else:
        _plot_curve(curve_axes, smoothed, z_mm, index)
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png")


def _plot_curve(curve_axes, smoothed: np.ndarray, z_mm: np.ndarray, index: int) -> None:  # noqa: ANN001
    # z runs up the page (toward the head), as in a coronal view.
    curve_axes.plot(smoothed, z_mm, color="black", linewidth=1.2, label="smoothed 2(p - 0.5)")
    curve_axes.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
    curve_axes.axhline(z_mm[index], color="tab:red", linewidth=1.0, linestyle="--")
    curve_axes.plot([smoothed[index]], [z_mm[index]], "o", color="tab:red", label=f"chosen: z = {z_mm[index]:.1f} mm")
    curve_axes.set_xlim(-1.05, 1.05)
    curve_axes.set_xlabel("prediction (below -1 ... +1 above)")
    curve_axes.set_ylabel("z (mm, head up)")
    curve_axes.legend(loc="lower right", fontsize=8)
