"""Append-only CSV files that a crash cannot corrupt: whole records appended and fsynced, torn tails dropped.

A cohort run adds one row per series. Rewriting the whole file after each series costs time quadratic in
the cohort size; appending costs the row alone. Each record is appended with one write() on an O_APPEND
descriptor and fsynced before the run goes on, so a crash can leave at most the last record torn (a power
cut in the middle of the write). `complete_records` drops such a tail, so `--resume` never reads half a row.
"""

from __future__ import annotations

import os
from pathlib import Path

from bodycomp_cli.io.atomic import pause_at


def append_text(path: Path, text: str) -> None:
    """Append `text` (whole CSV records, each ending in a newline) to path and fsync it."""
    data = memoryview(text.encode("utf-8"))
    pause_at(f"before-append:{path.name}")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        while data:  # write() may take less than all of it (signals, full pipes): go on with the rest
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    pause_at(f"appended:{path.name}")


def complete_records(data: bytes) -> bytes:
    """`data` up to the end of its last complete CSV record.

    A record is complete at a newline outside quotes: a tail without its newline, or cut inside a quoted
    field that holds a newline (the quote count so far is odd there), is left out.
    """
    end = position = quotes = 0
    for piece in data.split(b"\n")[:-1]:  # the pieces that a newline follows
        position += len(piece) + 1
        quotes += piece.count(b'"')  # CSV doubles a quote inside a quoted field, so parity tells inside/outside
        if quotes % 2 == 0:
            end = position
    return data[:end]


def read_complete_text(path: Path) -> str:
    """The text of a journal file without a torn last record."""
    return complete_records(Path(path).read_bytes()).decode("utf-8")
