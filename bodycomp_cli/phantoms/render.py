"""Draw one axial slice of a phantom series: clean HU and tissue labels, then CT-like noise.

Geometry is in mm around the body centre: x grows toward the patient's left (image columns), y toward
the back (image rows), so the slice is already in the DICOM display orientation. Every structure is
placed by the vertebral coordinate v of the slice (see anatomy.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_erosion, gaussian_filter
from scipy.stats import norm

from bodycomp_cli.phantoms import tissues as T
from bodycomp_cli.phantoms.anatomy import bell, profile, vertebra_index
from bodycomp_cli.phantoms.canvas import Canvas
from bodycomp_cli.phantoms.extras import metal_objects, paint_arms, paint_metal, scoliosis_offset_mm
from bodycomp_cli.phantoms.variation import SeriesParams

RIGHT, LEFT = -1.0, 1.0  # sign of x on the patient's right / left
# The abdominal wall at bulk 1 (mm): each rectus 70 mm wide and up to 10 mm thick beside a 5 mm linea alba;
# the flank's three layers together 14 mm. Ultrasound puts the layers in the order transversus < external
# oblique < internal oblique < rectus (Tahan N et al. J Physiol Anthropol 2016;35:17, 156 healthy adults).
LINEA_ALBA_MM, RECTUS_WIDTH_MM, RECTUS_MM, FLANK_MM = 5.0, 70.0, 10.0, 14.0


@dataclass(frozen=True)
class RenderedSlice:
    """One slice with its truth: clean HU (float32, before noise), labels (uint8, 0-3) and the
    intermuscular fat (IMAT) mask (bool): fat-HU pixels inside the muscle compartment, labelled muscle."""

    hu: np.ndarray
    labels: np.ndarray
    imat: np.ndarray


@dataclass(frozen=True)
class _Loop:
    """A bowel loop: a tube that runs along z between v0 and v1 and drifts in-plane."""

    v0: float
    v1: float
    ux: float  # position in the abdominal cavity, in units of its semi-axes
    uy: float
    radius: float  # mm
    drift: float  # mm of sideways drift per vertebra
    content: float  # HU of the lumen (gas, fluid or stool)


def _texture(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, waves: int = 6) -> np.ndarray:
    """A smooth random field in about [-1, 1] (sum of plane waves 40-150 mm long)."""
    field = np.zeros((len(ys), len(xs)), np.float32)
    for _ in range(waves):
        angle, phase = rng.uniform(0, 2 * np.pi, size=2)
        k = 2 * np.pi / rng.uniform(40.0, 150.0)
        field += np.cos(k * (np.cos(angle) * xs[None, :] + np.sin(angle) * ys[:, None]) + phase).astype(np.float32)
    return field / np.float32(np.sqrt(waves / 2.0) * 1.5)


class SeriesRenderer:
    """Renders slices of one phantom series at any z (mm)."""

    def __init__(self, params: SeriesParams) -> None:
        self.p = params
        size, spacing = params.size, params.pixel_spacing_mm
        centred = (np.arange(size) - (size - 1) / 2.0) * spacing
        # Shift the body up a little so that the scanner table fits behind the back.
        self.xs = centred.astype(np.float64)
        self.ys = (centred + 0.04 * size * spacing).astype(np.float64)
        x, y = np.meshgrid(self.xs, self.ys)
        self.x, self.y = x.astype(np.float32), y.astype(np.float32)
        self.rho = np.hypot(x, y).astype(np.float32)
        theta = np.arctan2(y, x)
        self.cos, self.sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
        self.anterior_w = np.clip(-self.sin, 0, None)
        self.posterior_w = np.clip(self.sin, 0, None)
        self.lateral_w = np.abs(self.cos)
        self.from_front = np.abs(np.arctan2(x, -y)).astype(np.float32)  # angle from the anterior midline, 0-pi
        wobble = np.zeros_like(self.rho)
        for k, (amplitude, phase) in enumerate(params.wobble, start=2):
            wobble += amplitude * np.cos(k * theta + phase).astype(np.float32)
        self.wobble = 1.0 + wobble
        rng = np.random.default_rng(params.texture_seed)
        self.fat_texture = _texture(rng, self.xs, self.ys)
        self.muscle_texture = _texture(rng, self.xs, self.ys)
        self.organ_texture = _texture(rng, self.xs, self.ys)
        self.loops = self._bowel_loops(rng)
        # A separate stream, so that the IMAT fields leave every other draw (and older phantoms) unchanged.
        imat_rng = np.random.default_rng([params.texture_seed, 1])
        self.imat_fields = [self._speckle(imat_rng) for _ in range(2)]
        self.bowel_fields = [self._speckle(imat_rng, sigma_mm=14.0) for _ in range(2)]
        deepest = max(params.chest_depth, params.abdomen_depth, params.pelvis_depth)
        self.table_y = deepest * 0.88 + params.sat_mm * 0.9 + 6.0

    def _bowel_loops(self, rng: np.random.Generator) -> list[_Loop]:
        # Less visceral fat means more bowel filling the cavity (the classic anatomy had far fewer loops).
        realistic = self.p.anatomy == "realistic"
        count = int(60 + 160 * (1.0 - self.p.vat)) if realistic else int(30 + 50 * (1.0 - self.p.vat))
        contents = [T.GAS_HU, T.FLUID_HU, 25.0]
        loops = []
        for _ in range(count):
            v0 = rng.uniform(11.0, 20.0)
            loops.append(
                _Loop(
                    v0=v0,
                    v1=v0 + rng.uniform(0.6, 2.2),
                    ux=rng.uniform(-0.75, 0.75),
                    uy=rng.uniform(-0.75, 0.35),
                    radius=rng.uniform(8.0, 17.0) if realistic else rng.uniform(7.0, 15.0),
                    drift=rng.uniform(-8.0, 8.0),
                    content=float(rng.choice(contents, p=[0.2, 0.4, 0.4]) if realistic else rng.choice(contents)),
                )
            )
        return loops

    def _speckle(self, rng: np.random.Generator, sigma_mm: float = 2.0) -> np.ndarray:
        """Smoothed white noise with blobs about 2 sigma_mm across, scaled to unit SD (seeds of IMAT and of
        the bowel packed between the visceral fat)."""
        sigma_px = max(0.5, sigma_mm / self.p.pixel_spacing_mm)
        field = gaussian_filter(rng.standard_normal(self.rho.shape).astype(np.float32), sigma_px)
        return field / np.float32(max(float(field.std()), 1e-6))

    # ----------------------------------------------------------------------------------------------
    def render(self, z_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """Clean HU (float32, before noise) and labels (uint8, 0-3) of the slice at z_mm."""
        rendered = self.render_slice(z_mm)
        return rendered.hu, rendered.labels

    def render_slice(self, z_mm: float) -> RenderedSlice:
        """The slice at z_mm with its truth masks (see RenderedSlice)."""
        p = self.p
        v = float(self.p.spine.v_at(z_mm))
        t = 0.5 + 0.5 * np.sin(z_mm / 37.0)  # slow change of texture along z
        fat = np.clip(p.fat_hu + 12.0 * (t * self.fat_texture + (1 - t) * self.organ_texture), -180.0, -40.0)
        muscle = np.clip(p.muscle_hu + 10.0 * self.muscle_texture, -20.0, 140.0)
        canvas = Canvas.blank(self.xs, self.ys, T.AIR_HU)
        self._table(canvas)
        g = self._body(canvas, v, fat, muscle)
        if v < 12.0:
            self._thorax(canvas, v, g)
        if v > 8.0:
            self._abdomen(canvas, v, g, fat, muscle)
        if v > 15.5:
            self._pelvis(canvas, v, g, muscle)
        self._spine(canvas, v, g)
        if v < p.variants.rib_pairs:
            self._ribs(canvas, v, g)
        if p.variants.arms_down:
            paint_arms(canvas, g["outside"], p, fat, muscle)
        imat = self._intermuscular_fat(canvas, z_mm, fat)
        metal = metal_objects(p, v, g)
        if metal:
            paint_metal(canvas, metal)
        return RenderedSlice(canvas.hu, canvas.label, imat)

    def add_noise(self, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """CT-like noise (slightly correlated between neighbouring pixels), rounded to int16 HU."""
        noise = gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), 0.6)
        noise *= np.float32(self.p.noise_sd / max(float(noise.std()), 1e-6))
        return np.clip(np.rint(hu + noise), -1024, 3071).astype(np.int16)

    def _blend(self, fields: list[np.ndarray], z_mm: float) -> np.ndarray:
        """Two unit-SD fields mixed slowly along z (still unit SD), so blobs drift between slices."""
        t = 0.5 + 0.5 * np.sin(z_mm / 23.0)
        return (t * fields[0] + (1.0 - t) * fields[1]) / np.hypot(t, 1.0 - t)

    def _intermuscular_fat(self, canvas: Canvas, z_mm: float, fat: np.ndarray) -> np.ndarray:
        """Turn blobs of the muscle compartment's interior into fat HU, keeping the muscle label (as the
        L3 protocol does: IMAT is counted inside the muscle compartment). Painted last, on the final muscle
        mask, so that nothing drawn later can cover it and the returned mask is exact."""
        muscle = canvas.label == T.MUSCLE
        # At least 3 mm from the compartment's edge, so that IMAT never touches SAT or VAT.
        interior = binary_erosion(muscle, iterations=max(1, int(np.ceil(3.0 / self.p.pixel_spacing_mm))))
        blend = self._blend(self.imat_fields, z_mm)
        imat = interior & (blend > np.float32(norm.ppf(1.0 - self.p.imat_fraction)))
        canvas.hu[imat] = fat[imat]
        return imat

    # ----------------------------------------------------------------------------------------------
    def _table(self, canvas: Canvas) -> None:
        rows = (self.ys >= self.table_y) & (self.ys < self.table_y + 9.0)
        cols = np.abs(self.xs) < 210.0
        canvas.paint_mask(rows[:, None] & cols[None, :], T.TABLE_HU, T.BACKGROUND)

    def _body(self, canvas: Canvas, v: float, fat: np.ndarray, muscle: np.ndarray) -> dict:
        """Skin, subcutaneous fat, the muscle wall and the cavity inside it; returns the geometry."""
        p = self.p
        chest = profile(v, (9.0, 11.5), (1.0, 0.0))
        pelvis = profile(v, (15.5, 17.5), (0.0, 1.0))
        width = profile(
            v,
            (-2.0, 0.5, 8.0, 11.5, 15.0, 16.8),
            (0.85 * p.chest_width, p.chest_width, p.chest_width, p.abdomen_width, p.abdomen_width, p.pelvis_width),
        )
        depth = profile(
            v,
            (-2.0, 0.5, 8.0, 11.5, 15.0, 16.8),
            (0.8 * p.chest_depth, p.chest_depth, p.chest_depth, p.abdomen_depth, p.abdomen_depth, p.pelvis_depth),
        )
        flatten = 1.0 - 0.12 * self.posterior_w**2  # the back is flatter than the belly
        radius = width * depth / np.sqrt((depth * self.cos) ** 2 + (width * self.sin) ** 2) * flatten * self.wobble
        belly = 1.0 - chest
        sat = p.sat_mm * (0.55 * chest + belly * (1.0 - pelvis) + 1.1 * pelvis)
        sat = (
            sat
            * (
                1.0
                + 0.9 * p.android * self.anterior_w * belly
                + 1.2 * p.gynoid * self.lateral_w * pelvis
                + 0.4 * p.gynoid * self.lateral_w * belly
            )
            * (1.0 - 0.35 * self.posterior_w)
            + 2.0
        )
        outer = radius + sat
        skin = max(1.5, 0.8 * p.pixel_spacing_mm)
        canvas.paint_mask(self.rho < outer, fat, T.SUBCUTANEOUS_FAT)
        canvas.paint_mask((self.rho < outer) & (self.rho >= outer - skin), T.SKIN_HU, T.BACKGROUND)
        s, bulk = p.spine.scale, p.muscle_bulk
        inside_wall = self.rho < radius
        # Realistic: between the lungs and the pelvis the wall is the abdominal muscles, thin and separate;
        # elsewhere (chest wall, pelvic girdle) a ring down to the cavity, as the classic anatomy everywhere.
        if p.anatomy == "realistic":
            abdominal = belly * (1.0 - pelvis)
            wall = inside_wall & (self.rho >= radius - self._wall_thickness(radius, abdominal, bulk, s))
        else:  # classic: the ring down to the cavity everywhere
            abdominal, wall = 0.0, inside_wall
        canvas.paint_mask(inside_wall & ~wall, fat, T.VISCERAL_FAT)  # extraperitoneal fat, inside the wall
        canvas.paint_mask(wall, muscle, T.MUSCLE)
        if abdominal > 0.3:  # linea alba: the recti's fibrous seam, neither muscle nor fat
            seam = inside_wall & (self.rho >= radius - 2.5) & (self.from_front * radius < LINEA_ALBA_MM * s)
            canvas.paint_mask(seam, 40.0, T.BACKGROUND)

        x0 = scoliosis_offset_mm(p, v)  # the spine's sideways shift (0 without scoliosis)
        back = depth * 0.88  # posterior muscle surface (flattened) at the midline
        spine_depth = profile(v, (0.0, 11.0, 16.0), (64.0, 72.0, 80.0)) * s * (0.85 + 0.15 * bulk)
        y_vb = back - spine_depth  # centre of the vertebral body
        a_vb = profile(v, (0.0, 11.0, 16.0), (13.0, 19.0, 25.0)) * s
        b_vb = a_vb * profile(v, (0.0, 11.0, 16.0), (1.0, 0.85, 0.72))
        front_wall = (8.0 + 6.0 * belly) * bulk
        side_wall = (9.0 + 4.0 * belly + 24.0 * pelvis) * bulk
        top = -depth + front_wall
        # The cavity reaches behind the vertebral bodies on both sides (lung gutters, kidney fossae);
        # the paraspinal muscles and the vertebral arches are drawn over it later.
        bottom = y_vb + b_vb + (22.0 * chest + 14.0 * belly) * s
        cav_a, cav_b, cav_y = width - side_wall, (bottom - top) / 2.0, (bottom + top) / 2.0
        cavity = ((self.x / cav_a) ** 2 + ((self.y - cav_y) / cav_b) ** 2 < 1.0) & (self.rho < radius - 3.0)
        # Fat inside the muscle wall: visceral fat below the diaphragm (intrathoracic fat is relabelled
        # background by the thoracic writer).
        canvas.paint_mask(cavity, fat, T.VISCERAL_FAT)
        canal_y = y_vb + b_vb + (9.0 + 2.0 * (v > 11.5)) * s + 2.0
        for side in (RIGHT, LEFT):  # erector spinae, and quadratus lumborum at lumbar levels
            half_w = (14.0 + 8.0 * belly) * bulk * s
            canvas.paint(
                canvas.ellipse(
                    x0 + side * (8.0 * s + half_w), 0.5 * (canal_y + back), half_w, 0.5 * (back - canal_y) + 6.0
                ),
                muscle,
                T.MUSCLE,
            )
            ql = bell(v, 11.0, 12.5, 15.5, 16.8) * bulk * s
            if ql > 0:
                canvas.paint(
                    canvas.ellipse(x0 + side * (a_vb + 40.0 * s), y_vb + b_vb + 8.0 * s, 16.0 * ql, 11.0 * ql),
                    muscle,
                    T.MUSCLE,
                )
        return {
            "chest": chest,
            "pelvis": pelvis,
            "cavity": cavity,
            "cav_a": cav_a,
            "cav_b": cav_b,
            "cav_y": cav_y,
            "y_vb": y_vb,
            "a_vb": a_vb,
            "b_vb": b_vb,
            "top": top,
            "scale": s,
            "bulk": bulk,
            "x0": x0,
            "z_mm": float(p.spine.z_at(v)),
            "outside": self.rho >= outer,
            "width": width,
        }

    def _wall_thickness(self, radius: np.ndarray, abdominal: float, bulk: float, s: float) -> np.ndarray:
        """Muscle wall thickness (mm) around the outline: at abdominal levels the paired recti beside the
        linea alba, the thin linea semilunaris, then the flank's three layers (external and internal oblique,
        transversus: RECTUS_MM and FLANK_MM at bulk 1), and behind the flank the full depth down to the
        cavity (quadratus lumborum, paraspinals). abdominal (0-1) blends to the full ring."""
        arc = self.from_front * radius  # mm along the outline from the anterior midline
        linea, rectus_w = LINEA_ALBA_MM * s, RECTUS_WIDTH_MM * s
        across = np.clip((arc - linea) / rectus_w, 0.0, 1.0)
        rectus = RECTUS_MM * bulk * (0.55 + 0.45 * np.sin(np.pi * across))
        flank = FLANK_MM * bulk * np.clip((arc - linea - rectus_w) / 25.0, 0.25, 1.0)
        thickness = np.where(arc < linea, 0.0, np.where(arc < linea + rectus_w, rectus, flank))
        thickness = thickness + 200.0 * np.clip((self.from_front - 1.9) / 0.35, 0.0, 1.0)
        return thickness + (1.0 - abdominal) * 80.0

    def _thorax(self, canvas: Canvas, v: float, g: dict) -> None:
        p, cav = self.p, g["cavity"]
        ca, cb, cy, s = g["cav_a"], g["cav_b"], g["cav_y"], g["scale"]
        blood = 190.0 if p.contrast else 42.0
        d = p.diaphragm_shift
        for side, end in ((RIGHT, 10.6 + d), (LEFT, 11.0 + d)):
            f = bell(v, -2.3, 0.8, 6.0, end)
            if f <= 0:
                continue
            low = max(0.0, v - 6.0) / max(end - 6.0, 1e-3)  # near the diaphragm only the back recess is left
            region = canvas.ellipse(
                side * ca * 0.5, cy + 0.1 * cb + 0.45 * low * cb, ca * 0.46 * np.sqrt(f), cb * 0.88 * np.sqrt(f)
            )
            canvas.paint(region, T.LUNG_HU + 15.0 * self.organ_texture, T.BACKGROUND, within=cav)
        h = bell(v, 3.0, 5.0, 7.5, 9.3 + d)
        if h > 0:
            canvas.paint(
                canvas.ellipse(0.12 * ca, cy - 0.12 * cb, 0.44 * ca * h**0.5, 0.5 * cb * h**0.5, 30),
                -95.0,
                T.VISCERAL_FAT,
                within=cav,
            )  # pericardial fat
            canvas.paint(
                canvas.ellipse(0.12 * ca, cy - 0.12 * cb, 0.38 * ca * h**0.5, 0.44 * cb * h**0.5, 30),
                blood,
                T.BACKGROUND,
                within=cav,
            )
        if 2.0 < v < 3.6:  # aortic arch
            canvas.paint(
                canvas.ellipse(0.1 * ca, g["y_vb"] - g["b_vb"] - 30.0, 35.0 * s, 11.0 * s, -25), blood, T.BACKGROUND
            )
        if -2.5 < v < 3.5:  # trachea
            ty = g["y_vb"] - g["b_vb"] - 22.0 * s
            canvas.paint(canvas.ellipse(0.0, ty, 10.0 * s, 9.0 * s), 30.0, T.BACKGROUND)
            canvas.paint(canvas.ellipse(0.0, ty, 8.0 * s, 7.0 * s), T.AIR_HU + 50.0, T.BACKGROUND)
        if -1.0 < v < 10.5:  # oesophagus
            canvas.paint(
                canvas.ellipse(0.25 * g["a_vb"], g["y_vb"] - g["b_vb"] - 7.0 * s, 7.0 * s, 6.0 * s), 35.0, T.BACKGROUND
            )
        if 0.3 < v < 8.5:  # sternum
            canvas.paint(
                canvas.ellipse(0.0, g["top"] - 4.0 * s, 13.0 * s, 6.0 * s), 0.5 * (p.bone_hu + 900.0), T.BACKGROUND
            )

    def _abdomen(self, canvas: Canvas, v: float, g: dict, fat: np.ndarray, muscle: np.ndarray) -> None:
        p, cav = self.p, g["cavity"]
        ca, cb, cy, s = g["cav_a"], g["cav_b"], g["cav_y"], g["scale"]
        y_vb, a_vb, b_vb = g["y_vb"], g["a_vb"], g["b_vb"]
        o, d = p.organ_shift, p.diaphragm_shift
        organ = p.organ_hu + 5.0 * self.organ_texture
        blood = 190.0 if p.contrast else 42.0
        # Collapsed bowel and mesenteric vessels packed between the visceral fat: the leaner the series
        # (vat), the more of the cavity they fill (VAT at L3 is a fraction of the cavity on real CT).
        # Only below the diaphragm, over fat (never over the lung bases), and in front of the retroperitoneum,
        # which keeps its fat around the psoas and kidneys.
        if g["chest"] < 0.5 and p.anatomy == "realistic":
            fat_share = 0.26 + 0.3 * p.vat
            peritoneal = cav & (self.y < y_vb - 0.5 * b_vb) & (canvas.label == T.VISCERAL_FAT)
            packed = peritoneal & (self._blend(self.bowel_fields, g["z_mm"]) > np.float32(norm.ppf(fat_share)))
            canvas.paint_mask(packed, 30.0 + 5.0 * self.organ_texture, T.BACKGROUND)
        for loop in self.loops:
            if loop.v0 < v < loop.v1:
                lx = loop.ux * ca + loop.drift * (v - loop.v0)
                ly = cy + loop.uy * cb
                canvas.paint(canvas.ellipse(lx, ly, loop.radius * s, loop.radius * s), 35.0, T.BACKGROUND, within=cav)
                inner = (loop.radius - 2.5) * s
                canvas.paint(canvas.ellipse(lx, ly, inner, inner), loop.content, T.BACKGROUND, within=cav)
        for x, y, v0, v1, r in (
            (RIGHT * 0.7 * ca, cy + 0.05 * cb, 12.3 + o, 17.0, 16.0),
            (LEFT * 0.74 * ca, cy + 0.15 * cb, 10.8 + o, 17.3, 14.0),
        ):
            if v0 < v < v1:  # ascending and descending colon, with gas
                canvas.paint(canvas.ellipse(x, y, r * s, r * s), 35.0, T.BACKGROUND, within=cav)
                canvas.paint(canvas.ellipse(x, y, (r - 3) * s, (r - 3) * s), T.GAS_HU, T.BACKGROUND, within=cav)
        if 12.3 + o < v < 13.6 + o:  # transverse colon
            canvas.paint(canvas.ellipse(0.0, cy - 0.55 * cb, 0.6 * ca, 13.0 * s), 35.0, T.BACKGROUND, within=cav)
            canvas.paint(
                canvas.ellipse(0.0, cy - 0.55 * cb, 0.6 * ca - 3, 10.0 * s), T.GAS_HU, T.BACKGROUND, within=cav
            )
        liver = bell(v, 8.4 + o + d, 9.6 + o, 11.0 + o, 14.3 + o)
        if liver > 0:
            lateral = 0.25 * (1.0 - liver) * (v > 11.0)  # the inferior tip lies laterally
            canvas.paint(
                canvas.ellipse(
                    RIGHT * ca * (0.33 + lateral), cy - 0.05 * cb, 0.6 * ca * liver**0.5, 0.75 * cb * liver**0.5, -15
                ),
                organ,
                T.BACKGROUND,
                within=cav,
            )
        spleen = bell(v, 9.4 + o, 10.3 + o, 11.3 + o, 12.4 + o)
        if spleen > 0:
            canvas.paint(
                canvas.ellipse(LEFT * 0.62 * ca, cy + 0.3 * cb, 0.2 * ca * spleen**0.5, 0.3 * cb * spleen**0.5, -30),
                organ - 8.0,
                T.BACKGROUND,
                within=cav,
            )
        stomach = bell(v, 9.2 + o, 10.0 + o, 11.0 + o, 12.2 + o)
        if stomach > 0:
            sx, sy = LEFT * 0.3 * ca, cy - 0.3 * cb
            canvas.paint(
                canvas.ellipse(sx, sy, 0.3 * ca * stomach**0.5, 0.28 * cb * stomach**0.5),
                35.0,
                T.BACKGROUND,
                within=cav,
            )
            canvas.paint(
                canvas.ellipse(sx, sy - 0.08 * cb, 0.2 * ca * stomach**0.5, 0.14 * cb * stomach**0.5),
                T.GAS_HU,
                T.BACKGROUND,
                within=cav,
            )
        pancreas = bell(v, 11.5 + o, 12.0 + o, 12.8 + o, 13.3 + o)
        if pancreas > 0:
            canvas.paint(
                canvas.ellipse(LEFT * 0.1 * ca, y_vb - b_vb - 28.0 * s, 0.35 * ca * pancreas, 9.0 * s, -10),
                organ - 15.0,
                T.BACKGROUND,
                within=cav,
            )
        for side, shift in ((RIGHT, 0.3), (LEFT, 0.0)):
            start, end = 11.1 + o + shift, 14.4 + o + shift
            k = bell(v, start, start + 0.8, end - 0.9, end)
            if k > 0:
                kx, ky = side * (a_vb + 42.0 * s), y_vb + 2.0
                canvas.paint(
                    canvas.ellipse(kx, ky, 40.0 * s * k**0.5, 31.0 * s * k**0.5, side * 35),
                    fat,
                    T.VISCERAL_FAT,
                    within=cav,
                )  # perirenal fat
                canvas.paint(
                    canvas.ellipse(kx, ky, 28.0 * s * k**0.5, 21.0 * s * k**0.5, side * 35),
                    150.0 if p.contrast else 33.0,
                    T.BACKGROUND,
                    within=cav,
                )
        if 3.0 < v < 16.2:  # descending and abdominal aorta, inferior vena cava
            canvas.paint(
                canvas.ellipse(g["x0"] + LEFT * 0.8 * a_vb, y_vb - b_vb - 8.0 * s, 11.0 * s, 11.0 * s),
                blood,
                T.BACKGROUND,
            )
        if 9.5 < v < 16.2:
            canvas.paint(
                canvas.ellipse(g["x0"] + RIGHT * 0.9 * a_vb, y_vb - b_vb - 10.0 * s, 11.0 * s, 9.0 * s),
                blood,
                T.BACKGROUND,
                within=cav,
            )
        # Psoas: from L1 down, largest at L4-L5; beside the vertebral body at L3, about 9 cm2 each at bulk 1
        # (psoas index at L3 of healthy men 6.3 cm2/m2 for both: Druckmann I et al., kidney donors, 2024).
        realistic = p.anatomy == "realistic"
        knots = (0.0, 14.0, 22.0, 23.0, 20.0, 15.0) if realistic else (0.0, 9.0, 15.0, 19.0, 18.0, 14.0)
        psoas = profile(v, (11.8, 13.0, 15.0, 16.5, 17.5, 18.5), knots) * s * g["bulk"]
        if psoas > 2.0:
            pel = g["pelvis"]
            for side in (RIGHT, LEFT):
                canvas.paint(
                    canvas.ellipse(
                        g["x0"] + side * (a_vb + (0.9 if realistic else 0.85) * psoas + 22.0 * pel),
                        y_vb + (-0.1 if realistic else 0.15) * b_vb - 28.0 * pel,
                        psoas,
                        0.9 * psoas,
                    ),
                    muscle,
                    T.MUSCLE,
                )

    def _pelvis(self, canvas: Canvas, v: float, g: dict, muscle: np.ndarray) -> None:
        p, cav = self.p, g["cavity"]
        s, y_vb, cb, cy = g["scale"], g["y_vb"], g["cav_b"], g["cav_y"]
        bladder = bell(v, 18.6, 19.6, 22.0, 23.0)
        if bladder > 0:
            canvas.paint(
                canvas.ellipse(0.0, cy - 0.25 * cb, 45.0 * s * bladder**0.5, 35.0 * s * bladder**0.5),
                T.FLUID_HU,
                T.BACKGROUND,
                within=cav,
            )
        if v > 17.3:  # rectum
            canvas.paint(canvas.ellipse(0.0, y_vb - 20.0 * s, 15.0 * s, 13.0 * s), 35.0, T.BACKGROUND, within=cav)
            canvas.paint(canvas.ellipse(0.0, y_vb - 20.0 * s, 11.0 * s, 9.0 * s), T.GAS_HU, T.BACKGROUND, within=cav)
        # Iliac wings: from the crest just below L5 they run from the sacroiliac joint (medial, posterior)
        # forward and outward, with the iliacus muscle on their inner face.
        vb = v - self._sacral_shift  # the pelvic bones sit on the sacrum, wherever it starts
        length = profile(vb, (16.25, 17.0, 18.0, 19.5, 21.0), (0.0, 55.0, 65.0, 50.0, 30.0)) * s
        if length <= 4.0:
            return
        width = profile(vb, (16.25, 18.0), (4.0, 7.0)) * s
        sacrum_half = self._sacrum_half_width(v, g)
        for side in (RIGHT, LEFT):
            angle = np.deg2rad(38.0)
            mx, my = side * (sacrum_half + 6.0 * s), y_vb + 10.0 * s
            cx, cy_w = mx + side * 0.5 * length * np.cos(angle), my - 0.5 * length * np.sin(angle)
            rot = -side * 38.0
            nx, ny = -side * np.sin(angle), -np.cos(angle)  # inner (anteromedial) normal of the wing
            canvas.paint(
                canvas.ellipse(cx + nx * (width + 9.0), cy_w + ny * (width + 9.0), 0.45 * length, 10.0 * s, rot),
                muscle,
                T.MUSCLE,
            )  # iliacus
            canvas.paint(canvas.ellipse(cx, cy_w, 0.5 * length, width + 1.5, rot), 900.0, T.BACKGROUND)
            canvas.paint(canvas.ellipse(cx, cy_w, 0.5 * length - 2.5, width - 1.0, rot), p.bone_hu, T.BACKGROUND)

    @property
    def _sacral_shift(self) -> int:
        """Segments by which the sacrum starts lower (lumbarised S1: +1) or higher (sacralised L5: -1)."""
        return self.p.variants.sacrum_index - vertebra_index("S1")

    def _sacrum_half_width(self, v: float, g: dict) -> float:
        return g["a_vb"] * 1.5 + 12.0 * max(0.0, min(v - self._sacral_shift - 16.6, 1.5)) * g["scale"]

    def _spine(self, canvas: Canvas, v: float, g: dict) -> None:
        p = self.p
        s, y_vb, a, b, x0 = g["scale"], g["y_vb"], g["a_vb"], g["b_vb"], g["x0"]
        index = int(np.floor(v + 0.5))
        frac = v - index  # -0.5 (upper end plate) ... +0.5 (lower end plate) of the nearest vertebra
        lumbar = v > p.variants.rib_pairs - 0.5  # rib-free vertebrae have lumbar shape
        sacrum_top = p.variants.sacrum_index - 0.25
        disc_half = 0.5 * profile(v, (0.0, 11.0, 16.0), (0.16, 0.2, 0.24))
        in_disc = abs(frac) > 0.5 - disc_half
        canal_r = (7.0 + 2.0 * lumbar) * s
        if v > sacrum_top:  # sacrum, tilted backward as it descends
            sy = y_vb + 6.0 + 10.0 * min(v - sacrum_top, 2.5) * s
            half = self._sacrum_half_width(v, g)
            canvas.paint(canvas.ellipse(x0, sy, half, b * 0.9), 900.0, T.BACKGROUND)
            canvas.paint(canvas.ellipse(x0, sy, half - 2.5, b * 0.9 - 2.5), p.bone_hu, T.BACKGROUND)
            canvas.paint(canvas.ellipse(x0, sy + 0.45 * b, 10.0 * s, 5.0 * s), T.FLUID_HU, T.BACKGROUND)
            for side in (RIGHT, LEFT):  # sacral foramina
                canvas.paint(canvas.ellipse(x0 + side * 0.45 * half, sy, 4.0 * s, 4.0 * s), T.FLUID_HU, T.BACKGROUND)
            return
        if in_disc:
            canvas.paint(canvas.ellipse(x0, y_vb, a * 1.05, b * 1.05), T.DISC_HU, T.BACKGROUND)
        else:
            canvas.paint(canvas.ellipse(x0, y_vb, a, b), T.CORTICAL_BONE_HU * 0.85, T.BACKGROUND)
            canvas.paint(canvas.ellipse(x0, y_vb, a - 2.0, b - 2.0), p.bone_hu, T.BACKGROUND)
        canal_y = y_vb + b + canal_r + 2.0
        bone = 0.5 * (p.bone_hu + T.CORTICAL_BONE_HU)
        if -0.35 < frac < 0.15:  # pedicles and laminae: a closed bony ring around the canal
            canvas.paint(canvas.ellipse(x0, canal_y, canal_r + 5.0, canal_r + 4.0), bone, T.BACKGROUND)
        elif not in_disc:  # laminae only
            canvas.paint(canvas.ellipse(x0, canal_y + canal_r + 2.0, canal_r + 4.0, 4.0), bone, T.BACKGROUND)
        else:  # facet joints beside the disc
            for side in (RIGHT, LEFT):
                canvas.paint(
                    canvas.ellipse(x0 + side * (canal_r + 3.0), canal_y + 3.0, 5.0 * s, 5.0 * s), bone, T.BACKGROUND
                )
        canvas.paint(canvas.ellipse(x0, canal_y, canal_r, canal_r * 0.9), T.FLUID_HU, T.BACKGROUND)
        if lumbar and -0.25 < frac < 0.3:  # short, horizontal, broad spinous process
            canvas.paint(canvas.ellipse(x0, canal_y + canal_r + 18.0 * s, 4.0 * s, 15.0 * s), bone, T.BACKGROUND)
        elif not lumbar and frac > -0.2:  # long and sloping down: its tip is seen further back, lower down
            canvas.paint(
                canvas.ellipse(x0, canal_y + canal_r + (10.0 + 14.0 * (frac + 0.2)) * s, 4.0 * s, 10.0 * s),
                bone,
                T.BACKGROUND,
            )
        if lumbar and -0.15 < frac < 0.15:  # transverse processes, longest at L3
            length = profile(v, (12.0, 13.0, 14.0, 15.0, 16.0), (17.0, 23.0, 30.0, 25.0, 21.0)) * s
            for side in (RIGHT, LEFT):
                canvas.paint(
                    canvas.ellipse(
                        x0 + side * (a * 0.5 + 0.5 * length + 6.0), y_vb + b + 3.0, 0.5 * length + 6.0, 4.5 * s
                    ),
                    bone,
                    T.BACKGROUND,
                )
        elif not lumbar and -0.35 < frac < 0.05:  # thoracic ones point back and out, toward the ribs
            for side in (RIGHT, LEFT):
                canvas.paint(
                    canvas.ellipse(x0 + side * (canal_r + 13.0 * s), canal_y - 1.0, 13.0 * s, 5.0 * s, -side * 30),
                    bone,
                    T.BACKGROUND,
                )

    def _ribs(self, canvas: Canvas, v: float, g: dict) -> None:
        """Cross-sections of the ribs: rib k leaves vertebra k and drops while it curves forward, so a slice
        cuts the ribs of the few vertebrae above it at points that move along the cage with z."""
        ca, cb, cy, s = g["cav_a"], g["cav_b"], g["cav_y"], g["scale"]
        bone = 0.5 * (self.p.bone_hu + T.CORTICAL_BONE_HU)
        for k in range(self.p.variants.rib_pairs):  # rib k on vertebra k (0 = T1); 13 pairs: L1 bears one
            drop = profile(k, (0, 6, 9, 10, 11), (3.8, 4.2, 3.5, 1.5, 0.9))
            dv = v - k
            if not 0.0 <= dv <= drop:
                continue
            u = (dv / drop) ** 0.8
            span = profile(k, (0, 6, 8, 9, 10, 11), (150.0, 150.0, 145.0, 130.0, 100.0, 70.0))
            for side in (RIGHT, LEFT):
                phi = np.deg2rad(90.0 - side * (20.0 + u * span))
                rx, ry = (ca + 4.0) * np.cos(phi), cy + (cb + 4.0) * np.sin(phi)
                canvas.paint(canvas.ellipse(rx, ry, 5.5 * s, 4.5 * s, np.rad2deg(phi)), bone, T.BACKGROUND)
