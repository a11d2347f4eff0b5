"""The vertebral column along z: where each vertebra lies in a phantom series.

Every structure of the phantom is placed by the *vertebral coordinate* v of a slice: v = 0 at the centre
of T1, 11 at T12, 12 at L1, 16 at L5, 17 at S1, fractional in between, growing toward the feet. Organs
start and end at fixed v (with a little variation per series), so the anatomy seen in a slice tells
where the slice is, exactly as the vertebral level is read off real CT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VERTEBRAE = tuple([f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)] + ["S1"])
LEVELS = ("T5", "T8", "T10", "T12", "L1", "L3", "L5")
THORACIC_LEVELS = ("T5", "T8", "T10")

# Centre-to-centre distance (mm) from each vertebra to the next one down, for an average adult:
# thoracic vertebrae grow from about 19 mm (T1) to 28 mm (T12), lumbar ones are 33-37 mm.
_STEP_MM = np.array([19.0 + 0.8 * i for i in range(12)] + [33.0, 35.0, 36.0, 37.0, 37.0], dtype=np.float64)
_CERVICAL_STEP_MM = 18.0  # above T1 (lung apices)
_SACRAL_STEP_MM = 35.0  # below S1 (pelvis)


def vertebra_index(name: str) -> int:
    return VERTEBRAE.index(name)


@dataclass(frozen=True)
class Spine:
    """Vertebral centres of one series. z in mm grows toward the head (DICOM +z)."""

    z_t1: float  # z of the centre of T1
    scale: float  # body height factor (0.88-1.12)

    @property
    def centres_z(self) -> np.ndarray:
        steps = _STEP_MM * self.scale
        return self.z_t1 - np.concatenate([[0.0], np.cumsum(steps)])

    def z_of(self, name: str) -> float:
        return float(self.centres_z[vertebra_index(name)])

    def z_at(self, v: float | np.ndarray) -> np.ndarray:
        """z (mm) of vertebral coordinate v, extrapolated above T1 and below S1."""
        v = np.asarray(v, dtype=np.float64)
        centres = self.centres_z
        last = len(centres) - 1
        z = np.interp(v, np.arange(len(centres)), centres)
        z = np.where(v < 0, self.z_t1 - v * _CERVICAL_STEP_MM * self.scale, z)
        return np.where(v > last, centres[-1] - (v - last) * _SACRAL_STEP_MM * self.scale, z)

    def v_at(self, z: float | np.ndarray) -> np.ndarray:
        """Vertebral coordinate of z (mm): the inverse of z_at."""
        z = np.asarray(z, dtype=np.float64)
        centres = self.centres_z
        last = len(centres) - 1
        # np.interp needs ascending x: centres fall with v, so interpolate on the reversed arrays.
        v = np.interp(z, centres[::-1], np.arange(len(centres))[::-1].astype(np.float64))
        v = np.where(z > self.z_t1, -(z - self.z_t1) / (_CERVICAL_STEP_MM * self.scale), v)
        return np.where(z < centres[-1], last + (centres[-1] - z) / (_SACRAL_STEP_MM * self.scale), v)


def bell(v: float, start: float, peak_from: float, peak_to: float, end: float) -> float:
    """0 outside [start, end], 1 on [peak_from, peak_to], smooth (cosine) ramps in between."""
    if v <= start or v >= end:
        return 0.0
    if v < peak_from:
        return 0.5 - 0.5 * np.cos(np.pi * (v - start) / (peak_from - start))
    if v > peak_to:
        return 0.5 - 0.5 * np.cos(np.pi * (end - v) / (end - peak_to))
    return 1.0


def profile(v: float, knots: tuple[float, ...], values: tuple[float, ...]) -> float:
    """Piecewise-linear value along v (held constant beyond the ends)."""
    return float(np.interp(v, knots, values))
