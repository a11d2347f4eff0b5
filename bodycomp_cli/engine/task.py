"""What the engine needs from a task. The engine types against this and never asks which task it runs."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from bodycomp_cli.core.runconfig import RunConfig


class Task(Protocol):
    """A training task. Batches are dicts whose "image" entry is the model input."""

    name: str  # recorded in config.json and checkpoints
    best_metric: str  # the history column that decides checkpoint_best.pt
    higher_is_better: bool
    notes: list[str]  # lines the engine prints as training starts (e.g. which HU window the data gave)

    def run_config(self) -> RunConfig:
        """The task's part of config.json (windowing, classes or levels, image size, architecture)."""
        ...

    def build_model(self) -> torch.nn.Module:
        """A fresh, randomly initialised module returning raw outputs (logits)."""
        ...

    def datasets(self) -> tuple[Any, Any]:
        """(train, val) datasets; train items accept (index, seed) pairs for reproducible augmentation."""
        ...

    def loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        """Scalar training loss (a mean over the batch)."""
        ...

    def validation_stats(self, outputs: torch.Tensor, batch: dict) -> dict[str, Any]:
        """Tensors summed over batches and ranks; keys starting with "rows:" are concatenated instead
        (per-sample values, so finalize_metrics can compute exactly what evaluate does)."""
        ...

    def finalize_metrics(self, totals: dict[str, Any]) -> dict[str, float]:
        """History columns (val_loss first) from the reduced totals."""
        ...
