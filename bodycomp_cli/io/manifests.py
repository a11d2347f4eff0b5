"""CSV manifests: reading, validation with messages that name the row and column, split assignment.

Rows are numbered from 1 (the first row under the header) in every message.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bodycomp_cli.errors import BodycompError


def read_manifest(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """Read a CSV manifest as strings (blank cells are ""), refusing a missing file, column or empty table.

    Example: `read_manifest(Path("series.csv"), ["series", "path"])`
    """
    path = Path(path)
    if not path.is_file():
        raise BodycompError(f"{path}: manifest not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise BodycompError(f"{path}: manifest is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise BodycompError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise BodycompError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} "
            f"(found: {', '.join(table.columns)})"
        )
    if table.empty:
        raise BodycompError(f"{path}: manifest is empty (no rows under the header)")
    return table.apply(lambda column: column.str.strip()).reset_index(drop=True)


def row_label(manifest: Path, index: int) -> str:
    """How messages name a row: `series.csv row 3` (rows counted from 1 under the header)."""
    return f"{Path(manifest).name} row {index + 1}"


def resolve_path(manifest: Path, index: int, column: str, value: str) -> Path:
    """A path cell, relative to the manifest's folder or absolute; it must exist."""
    if not value:
        raise BodycompError(f"{row_label(manifest, index)}: column '{column}' is blank")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(manifest).parent / path
    if not path.exists():
        raise BodycompError(f"{row_label(manifest, index)}: {column} file not found: {path}")
    return path


def refuse_blank_or_duplicate(manifest: Path, values: Sequence[str], column: str) -> None:
    """Refuse an id column with a blank cell or a repeated value, naming the rows."""
    first_row: dict[str, int] = {}
    for index, value in enumerate(values):
        if not value:
            raise BodycompError(f"{row_label(manifest, index)}: column '{column}' is blank")
        if value in first_row:
            raise BodycompError(
                f"{row_label(manifest, index)}: duplicate {column} {value!r} (also in row {first_row[value] + 1})"
            )
        first_row[value] = index


def parse_float(manifest: Path, index: int, column: str, value: str) -> float | None:
    """A numeric cell; blank is None, anything else that is not a finite number is refused."""
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise BodycompError(f"{row_label(manifest, index)}: column '{column}' is not a number: {value!r}") from None
    if not np.isfinite(number):
        raise BodycompError(f"{row_label(manifest, index)}: column '{column}' is not finite: {value!r}")
    return number


def splits_for_rows(
    manifest: Path,
    table: pd.DataFrame,
    allowed: Sequence[str],
    groups: Sequence[str],
    fractions: dict[str, float],
    seed: int,
) -> list[str]:
    """The manifest's own `split` column when it has one, else a seeded split by group (see assign_splits)."""
    if "split" in table.columns:
        return parse_splits(manifest, list(table["split"]), allowed)
    return assign_splits(groups, fractions, seed)


def parse_splits(manifest: Path, values: Sequence[str], allowed: Sequence[str]) -> list[str]:
    """A given split column: every cell must be one of `allowed` (case-insensitive); blanks are refused."""
    splits = []
    for index, value in enumerate(values):
        split = value.lower()
        if split not in allowed:
            shown = repr(value) if value else "blank"
            raise BodycompError(
                f"{row_label(manifest, index)}: column 'split' is {shown}; use one of {', '.join(allowed)}"
            )
        splits.append(split)
    return splits


def assign_splits(groups: Sequence[str], fractions: dict[str, float], seed: int) -> list[str]:
    """Assign each row to a split so that rows of one group never straddle two splits.

    `fractions` maps split names other than train to the fraction of *groups* they get, rounded to the
    nearest whole group, but at least one group each while enough groups exist to leave one for
    train. The group order is shuffled with `seed`, so the result depends only on the groups and seed.
    Example: `assign_splits(["a", "a", "b", "c"], {"val": 0.3}, seed=0)`
    """
    for name, fraction in fractions.items():
        if not 0.0 <= fraction < 1.0:
            raise BodycompError(f"--{name}-frac must be in [0, 1), got {fraction}")
    if sum(fractions.values()) >= 1.0:
        raise BodycompError(f"split fractions {fractions} leave nothing for train")
    unique = list(dict.fromkeys(groups))
    shuffled = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    wanted = {name: fraction for name, fraction in fractions.items() if fraction > 0}
    counts = {name: int(round(fraction * len(unique))) for name, fraction in wanted.items()}
    for name in wanted:
        # A tiny data set still gets a validation group, as long as train keeps one.
        if counts[name] == 0 and len(unique) - sum(counts.values()) > 1:
            counts[name] = 1
    split_of: dict[str, str] = {}
    position = 0
    for name, count in counts.items():
        for group in shuffled[position : position + count]:
            split_of[group] = name
        position += count
    for group in shuffled[position:]:
        split_of[group] = "train"
    return [split_of[group] for group in groups]
