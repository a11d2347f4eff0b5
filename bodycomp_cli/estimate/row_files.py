"""Where each series' row goes as soon as it is done, and how an earlier run's rows are taken up by --resume.

One process appends every finished series to results.csv (a QC failure to qc.csv): one whole record per
series, appended and fsynced, never a rewrite of the file (bodycomp_cli/io/journal.py). Under torchrun each
rank appends to its own pair, `.ranks/rank-<K>/results.csv` and `qc.csv`, so no two processes write one file;
rank 0 writes the merged outputs at the end and removes `.ranks`. --resume first folds what a killed run left
(results.csv, qc.csv and every rank's pair, whatever the number of ranks was) back into results.csv and qc.csv.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from bodycomp_cli.estimate.report import (
    QC_COLUMNS,
    Layout,
    csv_text,
    read_qc,
    read_results,
    result_columns,
    write_qc,
)
from bodycomp_cli.io.atomic import atomic_write_text, fsync_folder
from bodycomp_cli.io.journal import append_text

RANKS_FOLDER = ".ranks"  # each rank's own results.csv and qc.csv while a torchrun launch runs


@dataclass
class EarlierRows:
    """What earlier runs left in the output folder: their results rows, and the QC failures kept."""

    rows: list[dict[str, object]] = field(default_factory=list)
    qc_rows: list[dict[str, str]] = field(default_factory=list)


def _rank_folders(folder: Path) -> list[Path]:
    found = [path for path in (folder / RANKS_FOLDER).glob("rank-*") if path.name[5:].isdigit()]
    return sorted(found, key=lambda path: int(path.name[5:]))


def _result_rows(sources: list[Path], layout: Layout) -> dict[str, dict[str, object]]:
    rows: dict[str, dict[str, object]] = {}
    for source in sources:
        for row in read_results(source / "results.csv", layout):
            rows.setdefault(str(row["series"]), row)
    return rows


def rows_done_so_far(folder: Path, layout: Layout) -> list[dict[str, object]]:
    """The rows in results.csv and every rank's results.csv, read only (for a --shard task)."""
    return list(_result_rows([folder, *_rank_folders(folder)], layout).values())


def take_up_earlier_rows(folder: Path, layout: Layout, retried: Collection[str]) -> EarlierRows:
    """Fold results.csv, qc.csv and every rank's pair into results.csv and qc.csv, and return their rows.

    QC failures of the series in `retried` (this run's inputs) are dropped: they are tried again. A series
    listed twice (a kill between writing the merged file and removing `.ranks`) keeps its first row.
    """
    sources = [folder, *_rank_folders(folder)]
    rows = _result_rows(sources, layout)
    qc_rows: dict[str, dict[str, str]] = {}
    for source in sources:
        for row in read_qc(source / "qc.csv"):
            if row["series"] not in retried and row["series"] not in rows:
                qc_rows.setdefault(row["series"], row)
    earlier = EarlierRows(list(rows.values()), list(qc_rows.values()))
    atomic_write_text(folder / "results.csv", csv_text(earlier.rows, result_columns(layout)))
    write_qc(folder, earlier.qc_rows)
    remove_rank_files(folder)  # only now: every row they held is in results.csv and qc.csv
    return earlier


def remove_rank_files(folder: Path) -> None:
    if (folder / RANKS_FOLDER).exists():
        shutil.rmtree(folder / RANKS_FOLDER)
        fsync_folder(folder)


class RowFiles:
    """This process's results.csv and qc.csv, a row appended to one as each series is done."""

    def __init__(self, folder: Path, layout: Layout, rank: int | None = None) -> None:
        """rank: under torchrun, this rank's own pair in `.ranks/rank-<rank>/`; None: the output folder's."""
        self.folder = folder if rank is None else folder / RANKS_FOLDER / f"rank-{rank}"
        self.layout, self.result_columns = layout, result_columns(layout)
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, columns in (("results.csv", self.result_columns), ("qc.csv", QC_COLUMNS)):
            if not (self.folder / name).is_file():
                atomic_write_text(self.folder / name, csv_text([], columns))

    def add_result(self, row: dict[str, object]) -> None:
        append_text(self.folder / "results.csv", csv_text([row], self.result_columns, header=False))

    def add_qc_failure(self, row: dict[str, str]) -> None:
        append_text(self.folder / "qc.csv", csv_text([row], QC_COLUMNS, header=False))
