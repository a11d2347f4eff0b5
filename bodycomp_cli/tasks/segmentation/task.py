"""Segmentation of muscle, subcutaneous fat and visceral fat: smp model, Dice + CE loss, per-tissue Dice."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bodycomp_cli.core.dataset import resolve_window
from bodycomp_cli.core.metrics import dice_summary, segmentation_counts
from bodycomp_cli.core.runconfig import RunConfig
from bodycomp_cli.data.augment import AffineRanges
from bodycomp_cli.data.segmentation import PREWINDOWED_AS_WINDOW, SegmentationDataset, validate_segmentation_data
from bodycomp_cli.engine.config import EngineConfig
from bodycomp_cli.engine.models import check_choice
from bodycomp_cli.engine.run import run_training
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.nets import SEGMENTATION_NETS
from bodycomp_cli.nets.bridge_unet import DEFAULT_COMPRESSION, unet_size_multiple
from bodycomp_cli.tasks.segmentation.model import build_segmentation_model, segmentation_arch_names

SLICE_COUNTS = "rows:slice_counts"  # per validation slice: its index, then (tp, fp, fn) per tissue

CLASSES = ("background", "muscle", "subcutaneous_fat", "visceral_fat")
THORACIC_CLASSES = CLASSES[:3]  # thoracic models have no visceral fat


@dataclass
class SegmentationSettings:
    arch: str = "unet"  # any smp architecture, or one of nets.SEGMENTATION_NETS
    encoder: str = "resnet34"  # any smp encoder, randomly initialised (no weight download)
    thoracic: bool = False  # labels 0-2, no visceral fat
    image_size: int = 512  # slices are resized to this on the fly
    # HU window applied to the raw HU input, recorded for inference; None: the data's dataset.json, else Window()
    window_level: float | None = None
    window_width: float | None = None
    rotation_deg: float = 5.0  # training augmentation half-ranges
    shift: float = 0.05
    scale: float = 0.05
    intensity: float = 0.03
    arch_options: dict[str, Any] = field(default_factory=dict)  # a nets.SEGMENTATION_NETS model's options
    input_windowed: bool = False  # the arrays are already windowed to 0-255 with the window above (no -p)

    @property
    def classes(self) -> tuple[str, ...]:
        return THORACIC_CLASSES if self.thoracic else CLASSES


def check_segmentation_settings(settings: SegmentationSettings) -> None:
    import segmentation_models_pytorch as smp

    if settings.arch in SEGMENTATION_NETS:
        multiple = unet_size_multiple(settings.arch_options.get("compression_channels", DEFAULT_COMPRESSION))
    else:
        check_choice("--arch", settings.arch, segmentation_arch_names())
        check_choice("smp encoder (--encoder)", settings.encoder, list(smp.encoders.get_encoder_names()))
        multiple = 32
    if settings.image_size < multiple or settings.image_size % multiple:
        raise BodycompError(f"--image-size {settings.image_size}: must be a positive multiple of {multiple}")
    if settings.window_width is not None and not settings.window_width > 0:
        raise BodycompError(f"--window-width {settings.window_width}: must be positive")


class SegmentationTask:
    name = "segmentation"
    best_metric = "val_dice_mean"
    higher_is_better = True

    def __init__(self, settings: SegmentationSettings, data_dir: Path | None = None) -> None:
        from segmentation_models_pytorch.losses import DiceLoss

        self.settings, self.data_dir = settings, data_dir
        self.classes = settings.classes
        self.foreground = list(range(1, len(self.classes)))
        self.dice_loss = DiceLoss(mode="multiclass", classes=self.foreground, from_logits=True)
        self.ce_loss = torch.nn.CrossEntropyLoss()
        self._splits = None
        self.notes: list[str] = []
        if data_dir is not None:
            self._splits = validate_segmentation_data(
                Path(data_dir), len(self.classes), settings.thoracic, settings.input_windowed
            )
        # The arrays hold raw HU: the window is applied here, so an explicit option may override the data's.
        level, width = settings.window_level, settings.window_width
        self.window, note = resolve_window(data_dir, level, width, images_windowed=False)
        if data_dir is not None:
            self.notes.append(note)

    @classmethod
    def from_run_config(cls, config: RunConfig) -> SegmentationTask:
        """The task (model settings only, no data) a run was trained as."""
        return cls(
            SegmentationSettings(
                arch=config.arch,
                encoder=config.encoder,
                thoracic=bool(config.thoracic),
                image_size=config.image_size,
                window_level=config.window.level,
                window_width=config.window.width,
                arch_options=dict(config.arch_options or {}),
                input_windowed=bool(config.input_windowed),
            )
        )

    def run_config(self) -> RunConfig:
        """The model's part of config.json: architecture, classes, HU window, image size, augmentation."""
        s = self.settings
        return RunConfig(
            task=self.name,
            arch=s.arch,
            image_size=s.image_size,
            window=self.window,
            encoder=None if s.arch in SEGMENTATION_NETS else s.encoder,
            arch_options=dict(s.arch_options) or None,  # None for smp models, as before it existed
            classes=list(self.classes),
            thoracic=s.thoracic,
            input_windowed=s.input_windowed,
            augmentation={k: v for k, v in asdict(s).items() if k in ("rotation_deg", "shift", "scale", "intensity")},
        )

    def build_model(self) -> torch.nn.Module:
        return build_segmentation_model(self.run_config())

    def datasets(self):
        if self._splits is None:
            raise RuntimeError("SegmentationTask was built without a data folder")
        s = self.settings
        window = PREWINDOWED_AS_WINDOW if s.input_windowed else (self.window.level, self.window.width)
        ranges = AffineRanges(s.rotation_deg, s.shift, s.scale, s.intensity)
        return (
            SegmentationDataset(self._splits["train"], s.image_size, window, ranges),
            SegmentationDataset(self._splits["val"], s.image_size, window, None),
        )

    def loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        outputs = outputs.float()
        return self.dice_loss(outputs, batch["mask"]) + self.ce_loss(outputs, batch["mask"])

    def validation_stats(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        masks = batch["mask"]
        counts = segmentation_counts(outputs.argmax(dim=1), masks, len(self.classes)).reshape(len(masks), -1)
        return {
            "loss_sum": self.loss(outputs, batch).detach() * len(masks),
            "count": torch.tensor(len(masks), device=masks.device),  # on the batch's device, as all_reduce needs
            # counted on the batch's device; the per-slice table goes to the CPU, where the trainer gathers rows
            SLICE_COUNTS: torch.cat([batch["index"][:, None], counts], dim=1).double().cpu(),
        }

    def finalize_metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        """val_loss, then Dice per tissue as evaluate computes it: the mean over the slices holding the tissue."""
        metrics = {"val_loss": float(totals["loss_sum"]) / max(1, int(totals["count"]))}
        rows = totals[SLICE_COUNTS].numpy()
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        dice = dice_summary(rows[:, 1:].astype(np.int64).reshape(len(rows), len(self.foreground), 3)).mean
        for label, value in zip(self.foreground, dice, strict=True):
            metrics[f"val_dice_{self.classes[label]}"] = float(value)
        finite = dice[np.isfinite(dice)]
        metrics["val_dice_mean"] = float(finite.mean()) if len(finite) else float("nan")
        return metrics


def train_segmentation(
    data_dir: Path,
    models_dir: Path,
    settings: SegmentationSettings | None = None,
    engine: Any = None,
    name: str | None = None,
    start: Any = None,
) -> Path:
    """Train the segmentation model on DATA_DIR's .npy arrays into MODELS_DIR/NAME; returns the run folder.

    START (an engine WarmStart) begins from other weights or a later epoch number (--init-weights, -i).

    Example: train_segmentation(Path("data"), Path("models"), SegmentationSettings(encoder="resnet18",
    image_size=128), EngineConfig(epochs=5, batch_size=8), name="seg")
    """
    settings = settings or SegmentationSettings()

    def make_task() -> SegmentationTask:
        check_segmentation_settings(settings)
        return SegmentationTask(settings, Path(data_dir))

    return run_training(make_task, Path(models_dir), name, engine or EngineConfig(), Path(data_dir), start=start)
