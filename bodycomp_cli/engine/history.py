"""Per-epoch records: history.csv, curves.png and (when installed) TensorBoard events."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bodycomp_cli.io.atomic import atomic_path, atomic_write_text

HISTORY = "history.csv"
CURVES = "curves.png"


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole CSV atomically: epoch, train_loss, val_loss, the task's metrics, lr, seconds."""
    if not rows:
        return
    columns = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def draw_curves(path: Path, rows: list[dict[str, Any]]) -> None:
    """curves.png: losses on the left, the validation metrics on the right."""
    figure = curves_figure(rows)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def curves_figure(rows: list[dict[str, Any]]) -> Figure:
    """The figure of draw_curves, on an off-screen canvas."""
    epochs = [row["epoch"] for row in rows]
    figure = Figure(figsize=(10, 4), dpi=80)
    FigureCanvasAgg(figure)  # an explicit off-screen canvas: no pyplot, no process-wide backend choice
    losses, metrics = figure.subplots(1, 2)
    for name in ("train_loss", "val_loss"):
        losses.plot(epochs, [row[name] for row in rows], marker="o", label=name)
    skip = {"epoch", "train_loss", "val_loss", "lr", "seconds"}
    for name in (k for k in rows[0] if k not in skip):
        values = [row[name] for row in rows]
        if any(isinstance(v, float) and math.isfinite(v) for v in values):
            metrics.plot(epochs, values, marker="o", label=name)
    for axes, title in ((losses, "loss"), (metrics, "validation metrics")):
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=7)
    # Fixed margins rather than tight_layout(), which lays the figure out by drawing it once more: half the
    # cost of each epoch's curves.png, drawn in the writer thread while the next epoch trains.
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.91, wspace=0.2)
    return figure


class TensorBoardLog:
    """Scalars per epoch in RUN/tensorboard/ (tensorboard is a dependency; without it, nothing is logged)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.log_dir = run_dir / "tensorboard"
        self.writer = None
        self.enabled = enabled
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError:
                self.enabled = False

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # Opened at the first epoch written, which is also where a resumed run takes over: purge_step
            # hides the events a killed run wrote after its last checkpoint, so no epoch shows twice.
            self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=row["epoch"])
        for name, value in row.items():
            if name != "epoch" and isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(name, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
