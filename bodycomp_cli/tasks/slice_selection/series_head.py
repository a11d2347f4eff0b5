"""The series-level head of slice selection: which vertebra a slice belongs to is told by anatomy along z.

A per-slice CNN sees one axial slice, and lumbar slices look alike. Its pooled features do tell what is in
each slice (the last ribs, kidneys, iliac crests, sacrum), so a light dilated 1-D convolution over those
features along the whole series, resampled to a fixed mm grid, can read where each level lies. It regresses
each level's offset in mm (z - z_level) at every grid point; the offsets are interpolated back to the slices
and given to the slice-choice rule as sigmoid(offset / threshold), exactly the form the CNN's outputs have.

It is trained after the CNN, on the CNN's features of whole training series (prepare-slices writes `series`
and `z_mm`), as a small ensemble whose offsets are averaged. It lives in the run folder as series_head.pt.
When the CNN also outputs the vertebral phase, each level the head finds is snapped to the nearest place
with the phase that level shows in the training series (core/vertebrae.snap_to_phase): the head tells the
vertebra, the phase tells where in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bodycomp_cli.core.metrics import level_z_mm
from bodycomp_cli.core.vertebrae import (
    agree_on_vertebra_count,
    circular_mean,
    level_phase,
    snap_to_phase,
    spine_index,
)
from bodycomp_cli.engine.checkpoint import load_checkpoint, save_checkpoint
from bodycomp_cli.errors import BodycompError

HEAD_FILE = "series_head.pt"
NEAR_LEVEL_MM = 30.0  # the head's offsets within this distance say where the level lies (farther ones are clipped)
CROPS_PER_SERIES = 200  # training crops per training series, up to HeadSettings.steps batches


@dataclass(frozen=True)
class HeadSettings:
    """Stored in config.json as `series_head` (with the CNN's output levels); the defaults are the measured ones."""

    feature_levels: list[str] = field(default_factory=list)  # the CNN's outputs: the asked levels, then the rest
    grid_mm: float = 4.0  # features are resampled to this z spacing, so the head sees mm, not slices
    width: int = 64
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # receptive field 127 grid points: about 500 mm
    scale_mm: float = 50.0  # offsets are regressed as offset / scale_mm ...
    clip_mm: float = 200.0  # ... clipped here: far from a level, the exact distance matters little
    members: int = 3  # an ensemble: the offsets of separately seeded heads are averaged
    steps: int = 600  # at most; fewer with few series (CROPS_PER_SERIES)
    batch_series: int = 8
    min_crop_mm: float = 160.0  # training crops: scans cover anything from a short abdomen to a whole trunk
    learning_rate: float = 3e-3
    feature_noise: float = 0.3  # Gaussian noise on the standardised features, as the test slices differ
    # The CNN's outputs after its levels: cos/sin of the vertebral phase (core/vertebrae.py), 2 when the data
    # has a vertebral level to read it from, else 0 (and 0 for runs made before it existed).
    phase_outputs: int = 0

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["dilations"] = list(self.dilations)
        return values

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadSettings:
        known = {name: value for name, value in data.items() if name in cls.__dataclass_fields__}
        if "dilations" in known:
            known["dilations"] = tuple(int(d) for d in known["dilations"])
        return cls(**known)


class SeriesHead(nn.Module):
    """Features (B x C x L, standardised) plus a data mask (B x 1 x L) -> offsets / scale_mm (B x levels x L)."""

    def __init__(self, features: int, levels: int, settings: HeadSettings) -> None:
        super().__init__()
        self.scale_mm, self.grid_mm = settings.scale_mm, settings.grid_mm
        width, dilations = settings.width, settings.dilations
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))
        # Per level, the vertebral phase its labelled slices show (phase_outputs runs): where the snap aims.
        self.register_buffer("level_phase", torch.zeros(levels, dtype=torch.float64))
        # Per level, its vertebra count from C1 (NaN: not a vertebra), so that levels can check each other;
        # derived from the level names, so not saved.
        names = settings.feature_levels if len(settings.feature_levels) == levels else [""] * levels
        spine = [np.nan if spine_index(name) is None else spine_index(name) for name in names]
        self.register_buffer("level_spine", torch.tensor(spine, dtype=torch.float64), persistent=False)
        self.inp = nn.Sequential(nn.Dropout(0.2), nn.Conv1d(features + 1, width, 1))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.GELU(),
                nn.Conv1d(width, width, 3, padding=d, dilation=d),
                nn.GroupNorm(8, width),
                nn.GELU(),
                nn.Conv1d(width, width, 1),
            )
            for d in dilations
        )
        self.out = nn.Conv1d(width, levels, 1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = (features - self.mean[:, None]) / self.std[:, None] * mask  # padding reads as "no data", not as mean
        h = self.inp(torch.cat([x, mask], dim=1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


@dataclass(frozen=True)
class SeriesFeatures:
    """One series: its slices' z (ascending) and CNN features, and the true level positions (NaN: not in it)."""

    z_mm: np.ndarray  # N
    features: np.ndarray  # N x C float32
    level_z_mm: np.ndarray | None = None  # levels, for training
    phase: np.ndarray | None = None  # N x 2: the CNN's (cos, sin) phase outputs, in runs that have them


def to_grid(z_mm: np.ndarray, values: np.ndarray, grid_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample per-slice values (N x C, z ascending) linearly onto a grid from the lowest z in grid_mm steps."""
    z_mm, values = np.asarray(z_mm, dtype=np.float64), np.asarray(values, dtype=np.float32)
    grid = z_mm[0] + grid_mm * np.arange(int(np.floor((z_mm[-1] - z_mm[0]) / grid_mm + 1e-9)) + 1)
    if len(z_mm) == 1:
        return grid, values[:1]
    right = np.searchsorted(z_mm, grid, side="right").clip(1, len(z_mm) - 1)
    left = right - 1
    gap = z_mm[right] - z_mm[left]
    weight = np.where(gap > 0, (grid - z_mm[left]) / np.where(gap > 0, gap, 1.0), 0.0).clip(0.0, 1.0)[:, None]
    return grid, (values[left] * (1.0 - weight) + values[right] * weight).astype(np.float32)


def classifier_features(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs and the pooled features its final linear layer reads (B x C)."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None  # timm's own accessor
    if not isinstance(classifier, nn.Linear):
        linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
        if not linears:
            raise BodycompError(f"{type(model).__name__}: has no final linear layer to read features from")
        classifier = linears[-1]
    seen: list[torch.Tensor] = []
    handle = classifier.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        outputs = model(images)
    finally:
        handle.remove()
    return outputs, seen[-1].flatten(1)


def _training_crops(
    series: list[SeriesFeatures],
    on_grid: list[tuple[np.ndarray, np.ndarray]],
    settings: HeadSettings,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of random z-crops of random series, padded to one length: features, mask, targets, target mask."""
    picks = rng.integers(0, len(series), settings.batch_series)
    gridded = [on_grid[i] for i in picks]
    longest = max(len(grid) for grid, _ in gridded)
    length = int(rng.integers(min(longest, max(2, round(settings.min_crop_mm / settings.grid_mm))), longest + 1))
    n_features, n_levels = gridded[0][1].shape[1], len(series[0].level_z_mm)
    features = np.zeros((len(picks), n_features, length), np.float32)
    mask = np.zeros((len(picks), 1, length), np.float32)
    targets = np.zeros((len(picks), n_levels, length), np.float32)
    known = np.zeros((len(picks), n_levels, length), bool)
    for row, (i, (grid, values)) in enumerate(zip(picks, gridded, strict=True)):
        start = int(rng.integers(0, max(1, len(grid) - length) + 1))
        grid, values = grid[start : start + length], values[start : start + length]
        features[row, :, : len(grid)], mask[row, :, : len(grid)] = values.T, 1.0
        offsets = grid[None, :] - series[i].level_z_mm[:, None]
        targets[row, :, : len(grid)] = np.clip(np.nan_to_num(offsets), -settings.clip_mm, settings.clip_mm)
        known[row, :, : len(grid)] = np.isfinite(offsets)
    scale = settings.scale_mm
    return (
        torch.from_numpy(features),
        torch.from_numpy(mask),
        torch.from_numpy(targets / scale),
        torch.from_numpy(known),
    )


def train_heads(
    series: list[SeriesFeatures],
    settings: HeadSettings,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[SeriesHead]:
    """Train settings.members heads on whole training series (their level_z_mm set), on the CPU: seconds on an
    idle machine, minutes on a loaded one. PROGRESS(done, total) is called after every step of every member."""
    if not series:
        raise BodycompError("the series head needs training series with `series` and `z_mm` columns")
    all_features = np.concatenate([s.features for s in series])
    on_grid = [to_grid(s.z_mm, s.features, settings.grid_mm) for s in series]
    steps = min(settings.steps, -(-CROPS_PER_SERIES * len(series) // settings.batch_series))
    mean, std = all_features.mean(0), all_features.std(0) + 1e-3
    heads = []
    for member in range(settings.members):
        generator = torch.Generator().manual_seed(seed * 1000 + member)
        rng = np.random.default_rng([seed, member])
        head = SeriesHead(all_features.shape[1], len(series[0].level_z_mm), settings)
        with torch.no_grad():  # initial weights from this member's own generator, so members differ reproducibly
            for parameter in head.parameters():
                if parameter.dim() > 1:
                    nn.init.kaiming_uniform_(parameter, a=5**0.5, generator=generator)
            head.mean.copy_(torch.from_numpy(mean))
            head.std.copy_(torch.from_numpy(std))
        optimizer = torch.optim.AdamW(head.parameters(), settings.learning_rate, weight_decay=1e-2)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.learning_rate, total_steps=steps)
        head.train()
        for step in range(steps):
            if progress is not None:
                progress(member * steps + step, settings.members * steps)
            features, mask, targets, known = _training_crops(series, on_grid, settings, rng)
            noise = torch.randn(features.shape, generator=generator) * settings.feature_noise
            predicted = head(features + noise * head.std[:, None] * mask, mask)
            loss = nn.functional.smooth_l1_loss(predicted[known], targets[known], beta=0.1) if known.any() else None
            if loss is None:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        heads.append(head.eval())
    if progress is not None:
        progress(settings.members * steps, settings.members * steps)
    if all(s.phase is not None for s in series):
        phases = torch.from_numpy(_level_phases(series))
        for head in heads:
            head.level_phase.copy_(phases)
    return heads


def _level_phases(series: list[SeriesFeatures]) -> np.ndarray:
    """Per level, the circular mean of the phase at the labelled level over the training series."""
    result = []
    for k in range(len(series[0].level_z_mm)):
        seen = [level_phase(s.z_mm, s.phase, s.level_z_mm[k]) for s in series if np.isfinite(s.level_z_mm[k])]
        result.append(circular_mean(np.array(seen)) if seen else 0.0)
    return np.array(result, dtype=np.float64)


@torch.no_grad()
def predict_offsets_mm(
    heads: list[SeriesHead], z_mm: np.ndarray, features: np.ndarray, phase: np.ndarray | None = None
) -> np.ndarray:
    """Per slice (any z order) the ensemble's offset of every level in mm: N x levels.

    With `phase` (the CNN's cos/sin outputs, N x 2) each level found in the series is snapped to the nearest
    place with its own vertebral phase (core/vertebrae.snap_to_phase) and the offsets are counted from there.
    """
    z_mm = np.asarray(z_mm, dtype=np.float64)
    order = np.argsort(z_mm, kind="stable")
    grid, values = to_grid(z_mm[order], np.asarray(features)[order], heads[0].grid_mm)
    x = torch.from_numpy(values.T.copy())[None]
    mask = torch.ones(1, 1, x.shape[-1])
    on_grid = torch.stack([head(x, mask)[0] * head.scale_mm for head in heads]).mean(0).double().numpy()
    offsets = np.empty((len(z_mm), on_grid.shape[0]))
    for k, row in enumerate(on_grid):
        offsets[order, k] = np.interp(z_mm[order], grid, row) if len(grid) > 1 else row[0]
    if phase is not None:
        targets = heads[0].level_phase.numpy()
        positions = np.full(len(targets), np.nan)
        for k, target in enumerate(targets):
            near = np.abs(offsets[:, k]) < NEAR_LEVEL_MM
            if near.any():
                positions[k] = snap_to_phase(z_mm, phase, level_z_mm(z_mm[near], offsets[near, k]), target)
        positions = agree_on_vertebra_count(z_mm, phase, positions, heads[0].level_spine.numpy(), targets)
        for k in np.flatnonzero(np.isfinite(positions)):
            offsets[:, k] = z_mm - positions[k]
    return offsets


def save_heads(path: Path, heads: list[SeriesHead], settings: HeadSettings) -> None:
    """series_head.pt: plain tensors and a dict, so it loads with weights_only=True."""
    save_checkpoint(
        path,
        {
            "settings": settings.to_dict(),
            "features": int(heads[0].mean.numel()),
            "members": [h.state_dict() for h in heads],
        },
    )


def load_heads(path: Path) -> list[SeriesHead]:
    if not path.is_file():
        raise BodycompError(
            f"{path.parent}: has no {path.name}; its series head was never trained "
            "(finish it with train-select --resume)"
        )
    saved = load_checkpoint(path)
    settings = HeadSettings.from_dict(saved["settings"])
    heads = []
    for state in saved["members"]:
        head = SeriesHead(int(saved["features"]), len(settings.feature_levels), settings)
        state.setdefault("level_phase", head.level_phase)  # series_head.pt written before the phase snap
        state.pop("level_spine", None)  # saved by the count check's first version; derived from the names now
        head.load_state_dict(state)
        heads.append(head.eval())
    return heads
