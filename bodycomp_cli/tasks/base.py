"""What the engine needs from a task. The engine never asks which task it runs."""

from __future__ import annotations

import difflib
from typing import Any, Protocol

from bodycomp_cli.errors import BodycompError


class Task(Protocol):
    """A training task. Batches are dicts whose "image" entry is the model input."""

    name: str  # recorded in config.json and checkpoints ("segmentation", "slice_selection")
    best_metric: str  # the history column that decides checkpoint_best.pt
    higher_is_better: bool

    def config(self) -> dict[str, Any]:
        """The task's part of config.json (windowing, classes or levels, image size, architecture)."""

    def build_model(self) -> Any:
        """A fresh torch module returning raw outputs (logits)."""

    def datasets(self) -> tuple[Any, Any]:
        """(train, val) datasets; train items accept (index, seed) pairs for reproducible augmentation."""

    def loss(self, outputs: Any, batch: dict) -> Any:
        """Scalar training loss (a mean over the batch)."""

    def validation_stats(self, outputs: Any, batch: dict) -> dict[str, Any]:
        """Tensors summed over batches and ranks; keys starting with "rows:" are concatenated instead."""

    def finalize_metrics(self, totals: dict[str, Any]) -> dict[str, float]:
        """History columns (val_loss first) from the reduced totals."""


def check_choice(kind: str, name: str, choices: list[str], show_all: bool = True) -> None:
    """Refuse an unknown registry name, listing the valid ones (or the closest ones when there are many)."""
    if name in choices:
        return
    if show_all:
        raise BodycompError(f"unknown {kind} {name!r}; valid choices: {', '.join(choices)}")
    close = difflib.get_close_matches(name, choices, n=8, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else f"e.g. {', '.join(choices[:8])}"
    raise BodycompError(f"unknown {kind} {name!r}; {hint} ({len(choices)} valid choices)")
