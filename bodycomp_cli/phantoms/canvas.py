"""A slice being drawn: HU and label arrays on a mm grid, with ellipses painted in a bounding box only
(so that a 512 x 512 slice with dozens of small structures stays cheap)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Region = tuple[tuple[slice, slice], np.ndarray]  # (bounding window, mask inside the window)


@dataclass
class Canvas:
    xs: np.ndarray  # (W,) mm of each column centre: patient's right (negative) -> left
    ys: np.ndarray  # (H,) mm of each row centre: anterior (negative) -> posterior
    hu: np.ndarray  # H x W float32, HU without noise
    label: np.ndarray  # H x W uint8

    @classmethod
    def blank(cls, xs: np.ndarray, ys: np.ndarray, hu: float) -> Canvas:
        return cls(xs, ys, np.full((len(ys), len(xs)), hu, np.float32), np.zeros((len(ys), len(xs)), np.uint8))

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, angle_deg: float = 0.0) -> Region | None:
        """Pixels whose centres lie inside the ellipse (semi-axes ax, ay mm, rotated by angle_deg)."""
        if ax <= 0 or ay <= 0:
            return None
        reach = max(ax, ay)
        c0, c1 = np.searchsorted(self.xs, [cx - reach, cx + reach])
        r0, r1 = np.searchsorted(self.ys, [cy - reach, cy + reach])
        if c0 >= c1 or r0 >= r1:
            return None
        dx = self.xs[c0:c1][None, :] - cx
        dy = self.ys[r0:r1][:, None] - cy
        if angle_deg:
            t = np.deg2rad(angle_deg)
            dx, dy = dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)
        mask = (dx / ax) ** 2 + (dy / ay) ** 2 <= 1.0
        return (slice(r0, r1), slice(c0, c1)), mask

    def paint(
        self, region: Region | None, hu: float | np.ndarray, label: int, within: np.ndarray | None = None
    ) -> None:
        """Set HU (a number, or a full-size field sampled under the region) and label inside region."""
        if region is None:
            return
        window, mask = region
        if within is not None:
            mask = mask & within[window]
        self.hu[window][mask] = hu if np.isscalar(hu) else hu[window][mask]
        self.label[window][mask] = label

    def paint_mask(self, mask: np.ndarray, hu: float | np.ndarray, label: int) -> None:
        """Paint a full-size boolean mask."""
        self.hu[mask] = hu if np.isscalar(hu) else hu[mask]
        self.label[mask] = label
