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
    """curves.png: losses in the first panel, then one panel per unit of the validation metrics."""
    figure = curves_figure(rows)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


# Each validation metric goes to the panel of its unit, so millimetres and unitless numbers never share an axis.
# (panel title, y label, test on the history column's name), first match wins.
METRIC_PANELS: tuple[tuple[str, str, Any], ...] = (
    ("validation error", "millimetres", lambda name: "_mm" in name),
    ("validation Dice", "Dice (0 to 1)", lambda name: "dice" in name),
    ("validation phase error", "mean |cos, sin error| (no unit)", lambda name: "phase" in name),
    ("validation metrics", "value", lambda name: True),
)
# The summary of a panel (the mean over levels or tissues) is drawn thicker.
SUMMARY_METRICS = {"val_error_mm", "val_mae_mm", "val_dice_mean"}


def _metric_panels(rows: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    """(title, y label, the columns it draws) for the panels that have a finite value to draw, in order."""
    skip = {"epoch", "train_loss", "val_loss", "lr", "seconds"}
    panels: dict[int, list[str]] = {}
    for name in (k for k in rows[0] if k not in skip):
        if any(isinstance(row[name], float) and math.isfinite(row[name]) for row in rows):
            index = next(i for i, (_, _, matches) in enumerate(METRIC_PANELS) if matches(name))
            panels.setdefault(index, []).append(name)
    return [(METRIC_PANELS[i][0], METRIC_PANELS[i][1], panels[i]) for i in sorted(panels)]


def curves_figure(rows: list[dict[str, Any]]) -> Figure:
    """The figure of draw_curves, on an off-screen canvas: one colour per line within a panel, whole epochs."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in rows]
    panels = [("loss", "loss", ["train_loss", "val_loss"]), *_metric_panels(rows)]
    figure = Figure(figsize=(4.6 * len(panels), 4.2), dpi=80)
    FigureCanvasAgg(figure)  # an explicit off-screen canvas: no pyplot, no process-wide backend choice
    for axes, (title, unit, names) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
        for index, name in enumerate(names):
            values = [row[name] for row in rows]
            width = 2.6 if name in SUMMARY_METRICS else 1.3
            label = name.removeprefix("val_") if title != "loss" else name
            axes.plot(epochs, values, marker="o", markersize=3, color=palette(index), linewidth=width, label=label)
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.set_ylabel(unit)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, ncol=2 if len(names) > 6 else 1)
    # Fixed margins rather than tight_layout(), which lays the figure out by drawing it once more: half the
    # cost of each epoch's curves.png, drawn in the writer thread while the next epoch trains.
    figure.subplots_adjust(left=0.25 / len(panels), right=0.99, bottom=0.13, top=0.91, wspace=0.3)
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
