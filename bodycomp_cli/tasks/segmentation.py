"""Segmentation of muscle, subcutaneous fat and visceral fat: smp model, Dice + CE loss, per-tissue Dice."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bodycomp_cli.data.augment import AffineRanges
from bodycomp_cli.data.segmentation import PREWINDOWED_AS_WINDOW
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.nets import SEGMENTATION_NETS
from bodycomp_cli.nets.bridge_unet import DEFAULT_COMPRESSION, unet_size_multiple
from bodycomp_cli.tasks.base import check_choice

CLASSES = ("background", "muscle", "subcutaneous_fat", "visceral_fat")
THORACIC_CLASSES = CLASSES[:3]  # thoracic models have no visceral fat


@dataclass
class SegmentationSettings:
    arch: str = "unet"  # any smp architecture, or one of nets.SEGMENTATION_NETS
    encoder: str = "resnet34"  # any smp encoder, randomly initialised (no weight download)
    thoracic: bool = False  # labels 0-2, no visceral fat
    image_size: int = 512  # slices are resized to this on the fly
    window_level: float = 40.0  # HU window applied to the raw HU input, recorded for inference
    window_width: float = 400.0
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
        check_choice("--arch", settings.arch, [*SEGMENTATION_NETS, *smp.MODEL_ARCHITECTURES_MAPPING])
        check_choice("smp encoder (--encoder)", settings.encoder, list(smp.encoders.get_encoder_names()))
        multiple = 32
    if settings.image_size < multiple or settings.image_size % multiple:
        raise BodycompError(f"--image-size {settings.image_size}: must be a positive multiple of {multiple}")
    if settings.window_width <= 0:
        raise BodycompError(f"window width {settings.window_width}: must be positive")


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
        if data_dir is not None:
            from bodycomp_cli.data.segmentation import validate_segmentation_data

            self._splits = validate_segmentation_data(
                Path(data_dir), len(self.classes), settings.thoracic, settings.input_windowed
            )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SegmentationTask:
        return cls(
            SegmentationSettings(
                arch=config["arch"],
                encoder=config["encoder"],
                thoracic=bool(config["thoracic"]),
                image_size=int(config["image_size"]),
                window_level=float(config["window"]["level"]),
                window_width=float(config["window"]["width"]),
                arch_options=dict(config.get("arch_options") or {}),
            )
        )

    def config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "task": self.name,
            "window": {"level": s.window_level, "width": s.window_width},
            "image_size": s.image_size,
            "arch": s.arch,
            "encoder": None if s.arch in SEGMENTATION_NETS else s.encoder,
            "arch_options": dict(s.arch_options) or None,  # None for smp/timm models, as before it existed
            "classes": list(self.classes),
            "thoracic": s.thoracic,
            "input_windowed": s.input_windowed,
            "augmentation": {
                k: v for k, v in asdict(s).items() if k in ("rotation_deg", "shift", "scale", "intensity")
            },
        }

    def build_model(self) -> torch.nn.Module:
        import segmentation_models_pytorch as smp

        s = self.settings
        if s.arch in SEGMENTATION_NETS:
            return SEGMENTATION_NETS[s.arch](len(self.classes), 1, **s.arch_options)
        return smp.create_model(
            s.arch, encoder_name=s.encoder, encoder_weights=None, in_channels=1, classes=len(self.classes)
        )

    def datasets(self):
        from bodycomp_cli.data.segmentation import SegmentationDataset

        if self._splits is None:
            raise RuntimeError("SegmentationTask was built without a data folder")
        s = self.settings
        window = PREWINDOWED_AS_WINDOW if s.input_windowed else (s.window_level, s.window_width)
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
        predicted = outputs.argmax(dim=1)
        stats = {
            "loss_sum": self.loss(outputs, batch).detach() * len(masks),
            "count": torch.tensor(len(masks), device=masks.device),  # on the batch's device, as all_reduce needs
        }
        for label in self.foreground:
            truth, guess = masks == label, predicted == label
            overlap = (truth & guess).sum(dim=(1, 2))
            size = truth.sum(dim=(1, 2)) + guess.sum(dim=(1, 2))
            # A tissue absent from both truth and prediction in a slice is skipped, not scored 0 or 1.
            # (torch.where rather than boolean indexing: no host sync, and the stats stay on the batch's device)
            present = size > 0
            dice = torch.where(present, 2.0 * overlap.double() / size.clamp(min=1).double(), 0.0)
            stats[f"dice_sum_{label}"] = dice.sum()
            stats[f"dice_count_{label}"] = present.sum()
        return stats

    def finalize_metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        metrics = {"val_loss": float(totals["loss_sum"]) / max(1, int(totals["count"]))}
        dices = []
        for label in self.foreground:
            count = int(totals[f"dice_count_{label}"])
            value = float(totals[f"dice_sum_{label}"]) / count if count else float("nan")
            metrics[f"val_dice_{self.classes[label]}"] = value
            if count:
                dices.append(value)
        metrics["val_dice_mean"] = sum(dices) / len(dices) if dices else float("nan")
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
    from bodycomp_cli.engine.config import EngineConfig
    from bodycomp_cli.engine.run import run_training

    settings = settings or SegmentationSettings()

    def make_task() -> SegmentationTask:
        check_segmentation_settings(settings)
        return SegmentationTask(settings, Path(data_dir))

    return run_training(make_task, Path(models_dir), name, engine or EngineConfig(), Path(data_dir), start=start)
