"""What the variants add to a slice (see variants.py): the scoliotic spine's shift, arms beside the trunk,
and metal with its streak artefacts. Each draws on a slice that render.py has already filled."""

from __future__ import annotations

import numpy as np

from bodycomp_cli.phantoms import tissues as T
from bodycomp_cli.phantoms.canvas import Canvas
from bodycomp_cli.phantoms.variation import SeriesParams

METAL_HU = 3000.0  # steel and titanium reconstruct far above bone; int16 output clips at 3071
# A lumbar curve from T11 to L4 (vertebral coordinates 10-15): its apex, at L2-L3, shifts the most.
CURVE_FROM, CURVE_SEGMENTS = 10.0, 5.0
# The femoral heads' centre, in vertebral coordinates: near the bottom of the phantom series (19-20).
FEMORAL_HEAD_V, FEMORAL_HEAD_MM = 19.6, 24.0


def scoliosis_offset_mm(p: SeriesParams, v: float) -> float:
    """Sideways shift (mm, + to the patient's left) of the spine at v: half a sine over the curve, whose
    end vertebrae tilt by half the Cobb angle each (the Cobb angle is the angle between them)."""
    cobb = p.variants.scoliosis_deg
    if not cobb or not CURVE_FROM < v < CURVE_FROM + CURVE_SEGMENTS:
        return 0.0
    length = float(p.spine.z_at(CURVE_FROM) - p.spine.z_at(CURVE_FROM + CURVE_SEGMENTS))
    # x = A sin(pi t / L) has end slopes A pi / L; each end tilts by cobb / 2.
    amplitude = np.tan(np.deg2rad(abs(cobb)) / 2.0) * length / np.pi
    return float(np.sign(cobb) * amplitude * np.sin(np.pi * (v - CURVE_FROM) / CURVE_SEGMENTS))


def paint_arms(canvas: Canvas, outside: np.ndarray, p: SeriesParams, fat: np.ndarray, muscle: np.ndarray) -> None:
    """Both arms beside the trunk: skin, fat, muscle and humerus, all labelled background (the L3 protocol
    measures the trunk only). Painted outside the body, so the trunk's labels are never covered."""
    radius, gap = p.variants.arm_radius_mm, p.variants.arm_gap_mm
    row = int(np.argmin(np.abs(canvas.ys)))  # the arms lie level with the body's centre
    body_cols = np.nonzero(~outside[row])[0]
    if body_cols.size == 0:
        return
    half_width = 0.85 * radius
    for edge, side in ((canvas.xs[body_cols[0]], -1.0), (canvas.xs[body_cols[-1]], 1.0)):
        cx, cy = edge + side * (gap + half_width + 1.0), 0.0
        layers = (
            (half_width, radius, T.SKIN_HU),
            (half_width - 1.5, radius - 1.5, fat),
            (0.7 * half_width, 0.7 * radius, muscle),
            (10.0, 10.0, T.CORTICAL_BONE_HU * 0.85),  # humerus
            (6.5, 6.5, p.bone_hu),
        )
        for ax, ay, hu in layers:
            canvas.paint(canvas.ellipse(cx, cy, ax, ay), hu, T.BACKGROUND, within=outside)


def metal_objects(p: SeriesParams, v: float, g: dict) -> list[tuple[float, float, float, float, float]]:
    """(cx, cy, ax, ay, angle_deg) ellipses of metal in the slice at v: pedicle screws and rods
    (spinal), or the femoral heads of hip prostheses (hip)."""
    variants, s = p.variants, g["scale"]
    objects: list[tuple[float, float, float, float, float]] = []
    if variants.metal == "spinal":
        x0, y_vb, a, b = g["x0"], g["y_vb"], g["a_vb"], g["b_vb"]
        canal_r = 9.0 * s
        canal_y = y_vb + b + canal_r + 2.0
        for index in variants.metal_levels:
            if -0.35 < v - index < 0.15:  # through both pedicles into the vertebral body
                for side in (-1.0, 1.0):
                    entry = np.array([x0 + side * (canal_r + 8.0), canal_y + 4.0])
                    tip = np.array([x0 + side * 0.2 * a, y_vb - 0.3 * b])
                    middle, along = 0.5 * (entry + tip), tip - entry
                    angle = float(np.rad2deg(np.arctan2(along[1], along[0])))
                    objects.append((float(middle[0]), float(middle[1]), float(np.hypot(*along) / 2.0), 3.0, angle))
        if variants.metal_levels and variants.metal_levels[0] - 0.4 < v < variants.metal_levels[-1] + 0.4:
            for side in (-1.0, 1.0):  # the rods run along z, so a slice cuts them as small discs
                objects.append((x0 + side * (canal_r + 14.0), canal_y + canal_r + 4.0, 3.0, 3.0, 0.0))
    elif variants.metal == "hip":
        dz = (v - FEMORAL_HEAD_V) * 35.0 * s
        radius_mm = FEMORAL_HEAD_MM * s
        if abs(dz) < radius_mm:
            r = float(np.sqrt(radius_mm**2 - dz**2))
            for side in (-1.0, 1.0):
                objects.append((side * 0.62 * g["width"], g["cav_y"] + 0.15 * g["cav_b"], r, r, 0.0))
    return objects


def paint_metal(canvas: Canvas, objects: list[tuple[float, float, float, float, float]]) -> None:
    """Metal (labelled background) and its streaks: bright and dark rays from each object, and a dark band
    between pairs of objects (beam hardening and photon starvation along the line that crosses both).
    The tissue labels under the streaks stay what the anatomy is: the truth does not see the artefact."""
    x, y = np.meshgrid(canvas.xs.astype(np.float32), canvas.ys.astype(np.float32))
    field = np.zeros_like(x)
    big = max(ax for _, _, ax, _, _ in objects) > 15.0  # a femoral head streaks far more than a screw
    bright, dark, reach = (400.0, 400.0, 100.0) if big else (200.0, 150.0, 60.0)
    for cx, cy, _, _, _ in objects:
        phi = np.arctan2(y - cy, x - cx)
        rays = np.cos(9.0 * phi + 0.05 * (cx + cy))
        field += bright * np.sign(rays) * np.abs(rays) ** 12 * np.exp(-np.hypot(x - cx, y - cy) / reach)
    for i, (ax_, ay_, *_) in enumerate(objects):
        for bx, by, *_ in objects[i + 1 :]:
            length = np.hypot(bx - ax_, by - ay_)
            if length < 10.0:
                continue
            t = np.clip(((x - ax_) * (bx - ax_) + (y - ay_) * (by - ay_)) / length**2, 0.0, 1.0)
            distance = np.hypot(x - (ax_ + t * (bx - ax_)), y - (ay_ + t * (by - ay_)))
            field -= dark * np.exp(-((distance / 5.0) ** 2))
    canvas.hu += field
    for cx, cy, ax, ay, angle in objects:
        canvas.paint(canvas.ellipse(cx, cy, ax, ay, angle), METAL_HU, T.BACKGROUND)
