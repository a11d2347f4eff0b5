"""Random affine augmentation with torch ops (one grid_sample per tensor, no per-pixel Python)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AffineRanges:
    """Half-widths of the uniform ranges drawn per sample (0 switches a component off)."""

    rotation_deg: float = 5.0
    shift: float = 0.05  # fraction of the image size
    scale: float = 0.05  # relative zoom
    intensity: float = 0.0  # relative contrast / additive brightness jitter on the [0, 1] image


def random_affine(ranges: AffineRanges, generator: torch.Generator) -> torch.Tensor:
    """A 1 x 2 x 3 theta for F.affine_grid (output -> input, normalised coordinates)."""
    u = torch.rand(4, generator=generator, dtype=torch.float64) * 2.0 - 1.0
    angle = math.radians(ranges.rotation_deg) * float(u[0])
    zoom = 1.0 + ranges.scale * float(u[1])
    # A shift of f of the image is 2f in the [-1, 1] coordinates of affine_grid.
    tx, ty = 2.0 * ranges.shift * float(u[2]), 2.0 * ranges.shift * float(u[3])
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    return torch.tensor([[[cos, -sin, tx], [sin, cos, ty]]], dtype=torch.float32)


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """F.affine_grid(theta, [1, C, H, W], align_corners=False) built from two broadcasts.

    torch's CPU affine_grid goes through a batched matmul and costs ~9 ms at 512^2; this is ~10x cheaper.
    """
    xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1  # pixel centres in [-1, 1]
    ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
    t = theta[0]
    grid = torch.empty(1, height, width, 2)
    torch.add((t[0, 0] * xs)[None, :], (t[0, 1] * ys + t[0, 2])[:, None], out=grid[0, :, :, 0])
    torch.add((t[1, 0] * xs)[None, :], (t[1, 1] * ys + t[1, 2])[:, None], out=grid[0, :, :, 1])
    return grid


def warp(image: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """Apply theta to a C x H x W float tensor; outside the image is 0 (air after windowing, background)."""
    grid = affine_grid(theta, *image.shape[-2:])
    return F.grid_sample(image[None], grid, mode=mode, padding_mode="zeros", align_corners=False)[0]


def jitter_intensity(image: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Small random contrast and brightness change, kept in [0, 1]."""
    if amount <= 0:
        return image
    u = torch.rand(2, generator=generator) * 2.0 - 1.0
    return (image * (1.0 + amount * float(u[0])) + amount * float(u[1])).clamp_(0.0, 1.0)


def augment_pair(
    image: torch.Tensor, labels: torch.Tensor, ranges: AffineRanges, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Jointly warp an image (bilinear) and its label map (nearest), then jitter the image's intensity."""
    grid = affine_grid(random_affine(ranges, generator), *image.shape[-2:])  # one grid for both
    warped = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    as_float = labels[None, None].to(torch.float32)
    nearest = F.grid_sample(as_float, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    warped_labels = nearest[0, 0].to(labels.dtype)
    return jitter_intensity(warped, ranges.intensity, generator), warped_labels


def augment_image(image: torch.Tensor, ranges: AffineRanges, generator: torch.Generator) -> torch.Tensor:
    """Warp an image alone (slice selection: the target does not move with the pixels)."""
    warped = warp(image, random_affine(ranges, generator), "bilinear")
    return jitter_intensity(warped, ranges.intensity, generator)
