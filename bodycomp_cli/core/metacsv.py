"""The one reader of slice-selection meta CSVs (meta/<split>.csv), for training and `evaluate` alike.

prepare-slices writes pandas' unnamed index column first; a CSV made by hand may leave it out. Both read the
same: the unnamed column is dropped, never taken for data, and no data column is ever taken for the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bodycomp_cli.errors import BodycompError, reason


@dataclass(frozen=True)
class SliceMeta:
    path: Path
    frame: pd.DataFrame  # the CSV's data columns, rows 0..N-1 (row i is image NNNNNN.png with NNNNNN = i)
    offset_columns: list[str]  # per level: ZOffset_<LEVEL>, or the original's plain ZOffset (single level)
    offsets_mm: np.ndarray  # N x n_levels float64: z_slice - z_level, NaN where the level is not in the scan
    series: np.ndarray | None  # N str, when the CSV has both series and z_mm (the selection error needs them)
    z_mm: np.ndarray | None  # N float64, likewise

    @property
    def count(self) -> int:
        return len(self.frame)

    @property
    def has_series(self) -> bool:
        return self.series is not None


def offset_columns(frame: pd.DataFrame, levels: list[str], csv_path: Path) -> list[str]:
    """The ZOffset_<LEVEL> column of each level; with a single level a plain `ZOffset` column comes first,
    as the original read it whatever other columns the CSV had."""
    columns = []
    for level in levels:
        name = f"ZOffset_{level}"
        if len(levels) == 1 and "ZOffset" in frame.columns:
            name = "ZOffset"
        if name not in frame.columns:
            raise BodycompError(f"{csv_path}: missing column {name} (level {level}; found: {', '.join(frame.columns)})")
        columns.append(name)
    return columns


def numeric_column(frame: pd.DataFrame, column: str, csv_path: Path, blank_ok: bool) -> np.ndarray:
    """A column as float64, refusing a non-numeric (or, unless blank_ok, blank) value or an infinity with its row."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    blank = raw.isna() | (raw.astype(str).str.strip() == "")
    bad = values.isna() & ~blank if blank_ok else values.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise BodycompError(f"{csv_path}: column {column}, row {row}: {raw.iloc[row]!r} is not a number")
    array = values.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isinf(array).any():
        row = int(np.flatnonzero(np.isinf(array))[0])
        raise BodycompError(f"{csv_path}: column {column}, row {row}: an infinite value")
    return array


def read_meta_csv(csv_path: Path, levels: list[str]) -> SliceMeta:
    """Read and check one meta CSV: the levels' offset columns, and series/z_mm when both are there."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise BodycompError(f"{csv_path}: file not found (slice-selection data from prepare-slices)")
    try:
        frame = pd.read_csv(csv_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise BodycompError(f"{csv_path}: not a readable CSV ({reason(error)})") from None
    if len(frame.columns) and str(frame.columns[0]).startswith("Unnamed: 0"):
        frame = frame.drop(columns=frame.columns[0])  # pandas' index column, as prepare-slices writes it
    columns = offset_columns(frame, levels, csv_path)
    offsets = np.stack([numeric_column(frame, column, csv_path, blank_ok=True) for column in columns], axis=1)
    series = z_mm = None
    if {"series", "z_mm"} <= set(frame.columns):  # the selection error and context channels need both, every row
        blank = frame["series"].isna() | (frame["series"].astype(str).str.strip() == "")
        if blank.any():
            raise BodycompError(f"{csv_path}: column series, row {int(np.flatnonzero(blank.to_numpy())[0])}: blank")
        series = frame["series"].astype(str).to_numpy()
        z_mm = numeric_column(frame, "z_mm", csv_path, blank_ok=False)
    return SliceMeta(csv_path, frame, columns, offsets, series, z_mm)


def csv_columns(csv_path: Path) -> list[str]:
    """A CSV's column names (its header only is read)."""
    try:
        return [str(name) for name in pd.read_csv(csv_path, nrows=0).columns]
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise BodycompError(f"{csv_path}: not a readable CSV ({reason(error)})") from None


def offset_levels(columns: list[str]) -> list[str]:
    """The levels a meta CSV's columns (csv_columns) hold ZOffset_<LEVEL> for, in column order."""
    return [name[len("ZOffset_") :] for name in columns if name.startswith("ZOffset_")]
