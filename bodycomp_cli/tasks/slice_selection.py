"""Slice selection: a timm CNN regressing sigmoid(offset / threshold) per level, masked L1 loss."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bodycomp_cli.data.augment import AffineRanges
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.nets import SELECTION_NETS
from bodycomp_cli.tasks.base import check_choice

NEAR_LEVEL_THRESHOLDS = 3.0  # MAE only within +-3 thresholds of the level, where the sigmoid still inverts
SELECTION_WINDOW = {"level": 40.0, "width": 400.0}  # the PNGs are windowed L40/W400 (the original layout)


@dataclass
class SliceSelectionSettings:
    levels: list[str] = field(default_factory=lambda: ["L3"])
    arch: str = "densenet121"  # any timm model, in_chans=1 (3 with context), pretrained=False, or a SELECTION_NETS
    threshold_mm: float = 10.0  # target = sigmoid(offset_mm / threshold_mm), as in the original
    image_size: int = 256
    rotation_deg: float = 5.0
    shift: float = 0.05
    context_mm: float = 0.0  # > 0: the slices nearest z -+ context_mm join the slice as channels 1 and 3
    arch_options: dict[str, Any] = field(default_factory=dict)  # a nets.SELECTION_NETS model's options

    @property
    def channels(self) -> int:
        return 3 if self.context_mm > 0 else 1


def check_slice_selection_settings(settings: SliceSelectionSettings) -> None:
    import timm

    if settings.arch not in SELECTION_NETS:
        check_choice("--arch", settings.arch, [*SELECTION_NETS, *timm.list_models()], show_all=False)
    if settings.threshold_mm <= 0:
        raise BodycompError(f"--threshold {settings.threshold_mm}: must be positive (mm)")
    if settings.image_size < 32:
        raise BodycompError(f"--image-size {settings.image_size}: must be at least 32")
    if not (settings.context_mm >= 0 and np.isfinite(settings.context_mm)):
        raise BodycompError(f"--context-mm {settings.context_mm}: must be 0 (no context) or a positive distance in mm")
    if not settings.levels or len(set(settings.levels)) != len(settings.levels):
        raise BodycompError(f"levels {settings.levels}: give each level once (-L T5 T8 T10 L3)")


def inverse_sigmoid_mm(probabilities: torch.Tensor, threshold_mm: float) -> torch.Tensor:
    """offset = threshold * logit(p), with p kept off 0 and 1 where the logit is infinite."""
    p = probabilities.double().clamp(1e-7, 1 - 1e-7)
    return threshold_mm * torch.log(p / (1 - p))


class SliceSelectionTask:
    name = "slice_selection"
    best_metric = "val_error_mm"
    higher_is_better = False

    def __init__(self, settings: SliceSelectionSettings, data_dir: Path | None = None) -> None:
        self.settings, self.data_dir = settings, data_dir
        self.levels = list(settings.levels)
        self._splits = None
        self._neighbours: dict[str, np.ndarray | None] = {"train": None, "val": None}  # context_rows per split
        self._series: list[tuple[np.ndarray, np.ndarray]] | None = None  # (val indices, z_mm) per series
        if data_dir is not None:
            from bodycomp_cli.data.slices import numeric_z_mm, series_groups, split_context_rows, validate_slice_data

            self._splits = validate_slice_data(Path(data_dir), self.levels)
            for split in ("train", "val") if settings.context_mm > 0 else ():
                csv_path = Path(data_dir) / "meta" / f"{split}.csv"
                self._neighbours[split] = split_context_rows(self._splits[split], settings.context_mm, csv_path)
            meta = self._splits["val"].meta
            if {"series", "z_mm"} <= set(meta.columns):
                z = numeric_z_mm(meta, Path(data_dir) / "meta" / "val.csv")
                self._series = [
                    (rows[np.argsort(z[rows])], z[rows][np.argsort(z[rows])])
                    for rows in series_groups(meta["series"].to_numpy())
                ]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SliceSelectionTask:
        return cls(
            SliceSelectionSettings(
                levels=list(config["levels"]),
                arch=config["arch"],
                threshold_mm=float(config["threshold"]),
                image_size=int(config["image_size"]),
                context_mm=float(config.get("context_mm") or 0.0),
                arch_options=dict(config.get("arch_options") or {}),
            )
        )

    def config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "task": self.name,
            "window": dict(SELECTION_WINDOW),
            "image_size": s.image_size,
            "arch": s.arch,
            "encoder": None,
            "arch_options": dict(s.arch_options) or None,  # None for smp/timm models, as before it existed
            "levels": self.levels,
            "threshold": s.threshold_mm,
            "context_mm": s.context_mm,
            "thoracic": None,
            "augmentation": {"rotation_deg": s.rotation_deg, "shift": s.shift},
        }

    def build_model(self) -> torch.nn.Module:
        import timm

        s = self.settings
        if s.arch in SELECTION_NETS:
            return SELECTION_NETS[s.arch](len(self.levels), s.channels, **s.arch_options)
        return timm.create_model(s.arch, pretrained=False, in_chans=s.channels, num_classes=len(self.levels))

    def datasets(self):
        from bodycomp_cli.data.slices import SliceSelectionDataset

        if self._splits is None:
            raise RuntimeError("SliceSelectionTask was built without a data folder")
        s = self.settings
        ranges = AffineRanges(rotation_deg=s.rotation_deg, shift=s.shift, scale=0.0, intensity=0.0)
        return tuple(
            SliceSelectionDataset(self._splits[split], s.image_size, s.threshold_mm, augment, self._neighbours[split])
            for split, augment in (("train", ranges), ("val", None))
        )

    @staticmethod
    def _l1(outputs: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        # The original's MAE on sigmoid outputs; blank offsets (level not in the scan) are masked out.
        errors = (torch.sigmoid(outputs.float()) - batch["target"]).abs() * batch["valid"]
        return errors.sum(), batch["valid"].sum()

    def loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        total, count = self._l1(outputs, batch)
        return total / count.clamp(min=1.0)

    def validation_stats(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        total, count = self._l1(outputs, batch)
        probabilities = torch.sigmoid(outputs.float())
        predicted_mm = inverse_sigmoid_mm(probabilities, self.settings.threshold_mm)
        offsets = batch["offset_mm"].double()
        near = (batch["valid"] > 0) & (offsets.abs() <= NEAR_LEVEL_THRESHOLDS * self.settings.threshold_mm)
        stats = {
            "l1_sum": total.double(),
            "l1_count": count.double(),
            "mae_sum": ((predicted_mm - offsets).abs() * near).sum(dim=0),
            "mae_count": near.sum(dim=0).double(),
        }
        if self._series is not None:
            stats["rows:predictions"] = torch.cat([batch["index"][:, None].double(), probabilities.double()], dim=1)
        return stats

    def _selection_errors(self, rows: torch.Tensor) -> list[float]:
        """Median over val series of |z chosen by the estimate rule - z of the level| per level, in mm."""
        from bodycomp_cli.estimate.selection import select_level_slice

        probabilities = np.full((self._splits["val"].count, len(self.levels)), np.nan)
        probabilities[rows[:, 0].long().numpy()] = rows[:, 1:].numpy()
        offsets = self._splits["val"].offsets_mm
        medians = []
        for level in range(len(self.levels)):
            errors = []
            for indices, z in self._series:
                known = ~np.isnan(offsets[indices, level])
                if not known.any():
                    continue
                # Every slice of the series places the level at z_slice - offset; their median is robust.
                z_level = float(np.median(z[known] - offsets[indices, level][known]))
                choice = select_level_slice(probabilities[indices, level], z, self.settings.threshold_mm)
                errors.append(abs(float(z[choice.index]) - z_level))
            medians.append(float(np.median(errors)) if errors else float("nan"))
        return medians

    def finalize_metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        metrics = {"val_loss": float(totals["l1_sum"] / totals["l1_count"].clamp(min=1.0))}
        mae = (totals["mae_sum"] / totals["mae_count"].clamp(min=1.0)).tolist()
        for level, value, count in zip(self.levels, mae, totals["mae_count"].tolist(), strict=True):
            metrics[f"val_mae_mm_{level}"] = value if count else float("nan")
        best = [metrics[f"val_mae_mm_{level}"] for level in self.levels]
        if self._series is not None:
            selection = self._selection_errors(totals["rows:predictions"])
            for level, value in zip(self.levels, selection, strict=True):
                metrics[f"val_selection_error_mm_{level}"] = value
            best = selection
        finite = [v for v in best if np.isfinite(v)]
        metrics[self.best_metric] = float(np.mean(finite)) if finite else float("nan")
        return metrics


def train_slice_selection(
    data_dir: Path,
    models_dir: Path,
    settings: SliceSelectionSettings | None = None,
    engine: Any = None,
    name: str | None = None,
    start: Any = None,
) -> Path:
    """Train the slice-selection model on DATA_DIR's PNGs and CSVs into MODELS_DIR/NAME; returns the run folder.

    START (an engine WarmStart) begins from other weights or a later epoch number (--init-weights, -i).

    Example: train_slice_selection(Path("slices"), Path("models"), SliceSelectionSettings(levels=["L3"],
    arch="resnet18", image_size=128), EngineConfig(epochs=5, learning_rate=1e-4), name="select")
    """
    from bodycomp_cli.engine.config import EngineConfig
    from bodycomp_cli.engine.run import run_training

    settings = settings or SliceSelectionSettings()

    def make_task() -> SliceSelectionTask:
        check_slice_selection_settings(settings)
        return SliceSelectionTask(settings, Path(data_dir))

    return run_training(
        make_task, Path(models_dir), name, engine or EngineConfig(learning_rate=1e-4), Path(data_dir), start=start
    )
