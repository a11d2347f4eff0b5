"""Slice selection: a timm CNN regressing sigmoid(offset / threshold) per level, masked L1 loss.

With the series head (series_head.py) the CNN also learns every other level the data has and, given a
vertebral level, the vertebral phase (core/vertebrae.py), from the slice and its neighbours 10 mm away.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bodycomp_cli.core.dataset import resolve_window
from bodycomp_cli.core.metacsv import csv_columns, offset_levels
from bodycomp_cli.core.metrics import near_level_mae, series_selection_errors, summarise_errors
from bodycomp_cli.core.runconfig import RunConfig
from bodycomp_cli.core.vertebrae import spine_levels
from bodycomp_cli.data.augment import AffineRanges
from bodycomp_cli.data.slices import SliceSelectionDataset, split_context_rows, validate_slice_data
from bodycomp_cli.engine.config import EngineConfig
from bodycomp_cli.engine.models import check_choice
from bodycomp_cli.engine.run import run_training
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.tasks.slice_selection.head_fit import fit_series_head, is_main_process
from bodycomp_cli.tasks.slice_selection.model import build_selection_model, selection_arch_names
from bodycomp_cli.tasks.slice_selection.series_head import HeadSettings

# The vertebral phase's share of the loss (head mode, with a vertebral level in the data): the organs tell the
# vertebra, the phase places the slice inside it, and the series head reads both from the CNN's features.
PHASE_WEIGHT = 0.5
# With the series head the CNN also sees the slices 10 mm below and above: a disc or an end plate next to the
# slice tells its vertebral phase far better than the slice alone (phase error 0.03 vs 0.07 vertebrae on the
# demo's phantoms, see docs/slice-selection.md).
HEAD_CONTEXT_MM = 10.0
PREDICTIONS = "rows:predictions"  # per validation slice: its index, the sigmoid outputs, the true offsets (NaN: blank)


@dataclass
class SliceSelectionSettings:
    levels: list[str] = field(default_factory=lambda: ["L3"])
    arch: str = "densenet121"  # any timm model, in_chans=1 (3 with context), pretrained=False, or a SELECTION_NETS
    threshold_mm: float = 10.0  # target = sigmoid(offset_mm / threshold_mm), as in the original
    image_size: int = 256
    rotation_deg: float = 5.0
    shift: float = 0.05
    # > 0: the slices nearest z -+ context_mm join the slice as channels 1 and 3. None: HEAD_CONTEXT_MM with the
    # series head, else 0 (the slice alone, as the original).
    context_mm: float | None = None
    arch_options: dict[str, Any] = field(default_factory=dict)  # a nets.SELECTION_NETS model's options
    # The series-level head (series_head.py): None = on when the meta CSVs have series and z_mm
    # (prepare-slices writes them), True = required, False = the original per-slice model alone.
    series_head: bool | None = None
    head: HeadSettings = field(default_factory=HeadSettings)  # its settings; feature_levels are filled in
    # The PNGs' HU window (they are windowed already): None reads it from the data's dataset.json, and without one
    # assumes Window() (the original toolkit's L40/W400); a value that contradicts dataset.json is refused.
    window_level: float | None = None
    window_width: float | None = None


def check_slice_selection_settings(settings: SliceSelectionSettings) -> None:
    check_choice("--arch", settings.arch, selection_arch_names(), show_all=False)
    if settings.threshold_mm <= 0:
        raise BodycompError(f"--threshold {settings.threshold_mm}: must be positive (mm)")
    if settings.image_size < 32:
        raise BodycompError(f"--image-size {settings.image_size}: must be at least 32")
    if settings.context_mm is not None and not (settings.context_mm >= 0 and np.isfinite(settings.context_mm)):
        raise BodycompError(f"--context-mm {settings.context_mm}: must be 0 (no context) or a positive distance in mm")
    if not settings.levels or len(set(settings.levels)) != len(settings.levels):
        raise BodycompError(f"levels {settings.levels}: give each level once (-L T5 T8 T10 L3)")


class SliceSelectionTask:
    name = "slice_selection"
    higher_is_better = False

    def __init__(self, settings: SliceSelectionSettings, data_dir: Path | None = None) -> None:
        self.settings, self.data_dir = settings, data_dir
        self.levels = list(settings.levels)
        self.head: HeadSettings | None = settings.head if settings.series_head else None
        self._splits = None
        self._neighbours: dict[str, np.ndarray | None] = {"train": None, "val": None}  # context_rows per split
        self.notes: list[str] = []
        self.window, note = resolve_window(data_dir, settings.window_level, settings.window_width, images_windowed=True)
        if data_dir is not None:
            self.notes.append(note)
            self.head = self._head_for(Path(data_dir))
            self._splits = validate_slice_data(Path(data_dir), self.output_levels)
        default_context = HEAD_CONTEXT_MM if self.head is not None else 0.0  # known once the head is
        self.context_mm = default_context if settings.context_mm is None else settings.context_mm
        for split in ("train", "val") if self._splits is not None and self.context_mm > 0 else ():
            self._neighbours[split] = split_context_rows(self._splits[split].meta, self.context_mm)

    @property
    def output_levels(self) -> list[str]:
        """The CNN's outputs: the asked levels, then (with a series head) every other level the data has."""
        return list(self.head.feature_levels) if self.head is not None else list(self.levels)

    @property
    def best_metric(self) -> str:
        # With a series head the CNN is a feature extractor: its checkpoint is chosen on its loss over every
        # val slice (levels and phase), not on the slice choice in a handful of val series. The offset error
        # near the levels alone was tried first: it rose while the features improved, and chose epoch 1.
        return "val_loss" if self.head is not None else "val_error_mm"

    def _head_for(self, data_dir: Path) -> HeadSettings | None:
        """The series head's settings for this data, or None (per-slice mode); refuses --series-head without series."""
        wanted = self.settings.series_head
        if wanted is False:
            return None
        paths = [data_dir / "meta" / f"{split}.csv" for split in ("train", "val")]
        if not all(path.is_file() for path in paths):
            return None  # validate_slice_data, next, names the missing file
        columns = [csv_columns(path) for path in paths]
        lacking = [path for path, names in zip(paths, columns, strict=True) if not {"series", "z_mm"} <= set(names)]
        if lacking:
            if wanted:
                raise BodycompError(
                    f"{lacking[0]}: --series-head needs series and z_mm columns (prepare-slices writes them)"
                )
            return None
        present = [offset_levels(names) for names in columns]
        extra = [level for level in present[0] if level in present[1] and level not in self.levels]
        feature_levels = [*self.levels, *extra]
        phase = 2 if spine_levels(feature_levels) else 0  # one vertebral level will do (nominal_step_mm)
        return replace(self.settings.head, feature_levels=feature_levels, phase_outputs=phase)

    @property
    def phase_levels(self) -> list[str] | None:
        """The levels the CNN's phase targets are read from (None: it has no phase outputs)."""
        return self.output_levels if self.head is not None and self.head.phase_outputs else None

    @classmethod
    def from_run_config(cls, config: RunConfig) -> SliceSelectionTask:
        """The task (model settings only, no data) a run was trained as."""
        return cls(
            SliceSelectionSettings(
                levels=list(config.levels),
                arch=config.arch,
                threshold_mm=config.threshold,
                image_size=config.image_size,
                context_mm=config.context_mm,
                window_level=config.window.level,
                window_width=config.window.width,
                arch_options=dict(config.arch_options or {}),
                series_head=bool(config.series_head),
                head=HeadSettings.from_dict(config.series_head or {}),
            )
        )

    def run_config(self) -> RunConfig:
        """The model's part of config.json: architecture, levels, threshold, context, image size, augmentation."""
        s = self.settings
        return RunConfig(
            task=self.name,
            arch=s.arch,
            image_size=s.image_size,
            window=self.window,
            arch_options=dict(s.arch_options) or None,  # None for timm models, as before it existed
            levels=self.levels,
            threshold=s.threshold_mm,
            context_mm=self.context_mm,
            series_head=self.head.to_dict() if self.head is not None else None,
            augmentation={"rotation_deg": s.rotation_deg, "shift": s.shift},
        )

    def build_model(self) -> torch.nn.Module:
        return build_selection_model(self.run_config())

    def datasets(self):
        if self._splits is None:
            raise RuntimeError("SliceSelectionTask was built without a data folder")
        s = self.settings
        ranges = AffineRanges(rotation_deg=s.rotation_deg, shift=s.shift, scale=0.0, intensity=0.0)
        return tuple(
            SliceSelectionDataset(
                self._splits[split], s.image_size, s.threshold_mm, augment, self._neighbours[split], self.phase_levels
            )
            for split, augment in (("train", ranges), ("val", None))
        )

    def datasets_for_features(self) -> dict[str, tuple[SliceSelectionDataset, Any]]:
        """Per split, the un-augmented dataset and its meta CSV: what the series head reads features from."""
        if self._splits is None:
            raise RuntimeError("SliceSelectionTask was built without a data folder")
        s = self.settings
        return {
            split: (
                SliceSelectionDataset(self._splits[split], s.image_size, s.threshold_mm, None, self._neighbours[split]),
                self._splits[split].meta,
            )
            for split in ("train", "val")
        }

    def _l1(self, outputs: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        # The original's MAE on sigmoid outputs; blank offsets (level not in the scan) are masked out.
        levels = outputs[:, : len(self.output_levels)]
        errors = (torch.sigmoid(levels.float()) - batch["target"]).abs() * batch["valid"]
        return errors.sum(), batch["valid"].sum()

    def _phase_l1(self, outputs: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed |cos, sin error| over slices with a phase, and their count x 2 (0, 0 without phase outputs)."""
        if "phase" not in batch:
            return outputs.new_zeros((), dtype=torch.float32), outputs.new_zeros((), dtype=torch.float32)
        phase = outputs[:, len(self.output_levels) :].float()
        errors = (phase - batch["phase"]).abs().sum(dim=1) * batch["phase_valid"]
        return errors.sum(), 2.0 * batch["phase_valid"].sum()

    def loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        total, count = self._l1(outputs, batch)
        phase_total, phase_count = self._phase_l1(outputs, batch)
        return total / count.clamp(min=1.0) + PHASE_WEIGHT * phase_total / phase_count.clamp(min=1.0)

    def validation_stats(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        total, count = self._l1(outputs, batch)
        phase_total, phase_count = self._phase_l1(outputs, batch)
        probabilities = torch.sigmoid(outputs[:, : len(self.output_levels)].float()).double()
        offsets = torch.where(batch["valid"] > 0, batch["offset_mm"].double(), torch.nan)
        rows = torch.cat([batch["index"][:, None].double(), probabilities, offsets], dim=1)
        return {
            "l1_sum": total.double(),
            "l1_count": count.double(),
            "phase_sum": phase_total.double(),
            "phase_count": phase_count.double(),
            PREDICTIONS: rows.cpu(),  # rows: gathered on CPU
        }

    def finalize_metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        """val_loss, the offset MAE near each level and, with series and z_mm, the selection error, as evaluate."""
        metrics = {"val_loss": float(totals["l1_sum"] / totals["l1_count"].clamp(min=1.0))}
        if self.phase_levels is not None:
            metrics["val_phase_mae"] = float(totals["phase_sum"] / totals["phase_count"].clamp(min=1.0))
            metrics["val_loss"] += PHASE_WEIGHT * metrics["val_phase_mae"]
        rows = totals[PREDICTIONS].numpy()
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        n = len(self.output_levels)
        indices, probabilities, offsets = rows[:, 0].astype(np.int64), rows[:, 1 : 1 + n], rows[:, 1 + n :]
        threshold = self.settings.threshold_mm
        for k, level in enumerate(self.output_levels):
            mae, _ = near_level_mae(probabilities[:, k], offsets[:, k], threshold)
            metrics[f"val_mae_mm_{level}"] = float("nan") if mae is None else mae
        maes = [metrics[f"val_mae_mm_{level}"] for level in self.output_levels]
        finite_maes = [v for v in maes if np.isfinite(v)]
        if self.head is not None:
            metrics["val_mae_mm"] = float(np.mean(finite_maes)) if finite_maes else float("nan")
        best = [metrics[f"val_mae_mm_{level}"] for level in self.levels]
        meta = self._splits["val"].meta if self._splits is not None else None
        if meta is not None and meta.has_series:
            best = []
            for k, level in enumerate(self.levels):
                errors = series_selection_errors(
                    meta.series[indices], meta.z_mm[indices], probabilities[:, k], offsets[:, k], threshold
                )
                summary = summarise_errors(errors)
                best.append(summary["median_mm"] if summary else float("nan"))
                metrics[f"val_selection_error_mm_{level}"] = best[-1]
        finite = [v for v in best if np.isfinite(v)]
        metrics["val_error_mm"] = float(np.mean(finite)) if finite else float("nan")
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
    settings = settings or SliceSelectionSettings()

    made: list[SliceSelectionTask] = []

    def make_task() -> SliceSelectionTask:
        check_slice_selection_settings(settings)
        made.append(SliceSelectionTask(settings, Path(data_dir)))
        return made[-1]

    engine = engine or EngineConfig(learning_rate=1e-4)
    run_dir = run_training(make_task, Path(models_dir), name, engine, Path(data_dir), start=start)
    task = made[-1]
    if task.head is not None and is_main_process():  # tiny and on the CPU: one process trains it
        fit_series_head(run_dir, task.head, task.datasets_for_features(), engine.seed, quiet=engine.quiet)
    return run_dir
