"""prepare-slices: the level columns of a series manifest (z_<LEVEL>, slice_<LEVEL>, vertebrae) -> LevelRequests.

Only the form of the cells is checked here, for the whole manifest before any image is read; the vertebra files
are read beside each series' volume (bodycomp_cli.io.vertebrae.resolve_levels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.manifests import parse_float, resolve_path, row_label
from bodycomp_cli.io.vertebrae import SLICE_NUMBERINGS, LevelRequest, parse_vertebra_labels, source_kind
from bodycomp_cli.io.vertebrae.numbering import VERSE

VERTEBRAE_COLUMN = "vertebrae"


def _column_levels(table: pd.DataFrame, prefix: str) -> list[str]:
    return [
        column[len(prefix) :] for column in table.columns if column.startswith(prefix) and len(column) > len(prefix)
    ]


def choose_levels(manifest: Path, table: pd.DataFrame, levels: Sequence[str] | None) -> list[str]:
    """-L's levels (each needs a column or a vertebrae column), else every z_/slice_ column's level."""
    named = list(dict.fromkeys(_column_levels(table, "z_") + _column_levels(table, "slice_")))
    has_vertebrae = VERTEBRAE_COLUMN in table.columns
    if levels:
        levels = list(dict.fromkeys(levels))
        for level in levels:
            if level not in named and not has_vertebrae:
                found = ", ".join(named) or "none"
                raise BodycompError(
                    f"{manifest}: -L {level} has no column 'z_{level}', 'slice_{level}' or 'vertebrae' "
                    f"(levels in manifest: {found})"
                )
        return levels
    if not named:
        if has_vertebrae:
            raise BodycompError(f"{manifest}: the vertebrae column names no levels; give them with -L (e.g. -L L3)")
        raise BodycompError(f"{manifest}: no z_<LEVEL> columns (e.g. z_L3) giving the z (mm) of each level")
    return named


def _slice_number(manifest: Path, index: int, column: str, value: str) -> int | None:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BodycompError(
            f"{row_label(manifest, index)}: column '{column}' is not a whole slice number: {value!r}"
        ) from None


def level_requests(
    manifest: Path,
    table: pd.DataFrame,
    levels: Sequence[str] | None,
    vertebra_labels: str | None = None,
    slice_numbering: str = "index",
) -> tuple[list[LevelRequest], list[str]]:
    """One LevelRequest per row and the levels used; refuses a malformed cell naming its row and column."""
    if slice_numbering not in SLICE_NUMBERINGS:
        raise BodycompError(f"--slice-numbers must be one of {', '.join(SLICE_NUMBERINGS)}, got {slice_numbering!r}")
    numbering = parse_vertebra_labels(vertebra_labels) if vertebra_labels is not None else None
    levels = choose_levels(manifest, table, levels)
    requests = []
    for index, row in table.iterrows():
        where = row_label(manifest, index)
        z_mm, slices = {}, {}
        for level in levels:
            z = parse_float(manifest, index, f"z_{level}", row[f"z_{level}"]) if f"z_{level}" in row else None
            number = _slice_number(manifest, index, f"slice_{level}", row.get(f"slice_{level}", ""))
            if z is not None and number is not None:
                raise BodycompError(f"{where}: gives both z_{level} and slice_{level}; give one")
            if z is not None:
                z_mm[level] = z
            if number is not None:
                slices[level] = number
        cell = row.get(VERTEBRAE_COLUMN, "")
        vertebrae = resolve_path(manifest, index, VERTEBRAE_COLUMN, cell) if cell else None
        request = LevelRequest(where, tuple(levels), z_mm, slices, vertebrae, numbering, slice_numbering)
        requests.append(_with_numbering(request, where))
    return requests, levels


def _with_numbering(request: LevelRequest, where: str) -> LevelRequest:
    """The request with the numbering its vertebrae cell needs (a JSON is VerSe's unless told otherwise)."""
    wanted = request.from_vertebrae()
    if not wanted:
        return request
    try:
        kind = source_kind(request.vertebrae)
    except BodycompError as error:
        raise BodycompError(f"{where}: {error}") from None
    if kind == "folder":
        return request
    numbering = request.numbering
    if numbering is None and kind == "json":
        numbering = dict(VERSE)
    if numbering is None:
        raise BodycompError(
            f"{where}: vertebrae {request.vertebrae.name} is a label volume: say how it is numbered with "
            "--vertebra-labels (totalsegmentator, verse, or pairs such as 'L3=29,L4=28')"
        )
    missing = [level for level in wanted if level.upper() not in numbering]
    if missing:
        raise BodycompError(f"{where}: --vertebra-labels gives no label for {', '.join(missing)}")
    return replace(request, numbering=numbering)
