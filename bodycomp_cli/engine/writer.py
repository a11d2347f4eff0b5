"""Writes each epoch's run files in a background thread, so the next epoch trains meanwhile."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bodycomp_cli.engine.checkpoint import BEST, LAST, link_as, save_checkpoint
from bodycomp_cli.engine.history import CURVES, HISTORY, TensorBoardLog, draw_curves, write_history
from bodycomp_cli.io.atomic import pause_at


class EpochWriter:
    """One epoch's files at a time, in order: checkpoint_last (+ best), history.csv, curves.png, TensorBoard.

    The caller hands over snapshots (cloned tensors, copied rows), never live state; no checkpoint (None) on
    epochs that --save-every skips. Every file is atomic, so
    a SIGKILL at any moment leaves each file whole (this epoch's or the previous one's) and at most temp files
    of a dead owner, which the next run removes. A resume starts from checkpoint_last and rewrites history.csv
    from it; TensorBoard's purge_step drops events past it.
    """

    def __init__(self, run_dir: Path, tensorboard: TensorBoardLog, saved_epoch: int = 0) -> None:
        self.run_dir, self.tensorboard = run_dir, tensorboard
        self.saved_epoch = saved_epoch  # the epoch checkpoint_last.pt holds (a resume starts after it)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bodycomp-writer")
        self._pending: Future | None = None

    def submit(self, epoch: int, checkpoint: dict[str, Any] | None, rows: list[dict], best: bool) -> None:
        self.wait()
        self._pending = self._executor.submit(self._write, epoch, checkpoint, rows, best)

    def _write(self, epoch: int, checkpoint: dict[str, Any] | None, rows: list[dict], best: bool) -> None:
        if checkpoint is not None:
            save_checkpoint(self.run_dir / LAST, checkpoint)
            if best:
                link_as(self.run_dir / LAST, self.run_dir / BEST)
        write_history(self.run_dir / HISTORY, rows)
        draw_curves(self.run_dir / CURVES, rows)
        pause_at("before:tensorboard")
        self.tensorboard.log(rows[-1])
        pause_at("after:tensorboard")
        if checkpoint is not None:
            self.saved_epoch = epoch

    def wait(self) -> None:
        """Block until the files handed over so far are written (re-raising a write error)."""
        if self._pending is not None:
            self._pending.result()  # kept pending until done, so a Ctrl-C here can wait again
            self._pending = None

    def raise_if_failed(self) -> None:
        """Re-raise a write that has already failed, without waiting for one still running (called every step)."""
        if self._pending is not None and self._pending.done() and self._pending.exception() is not None:
            self.wait()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._executor.shutdown(wait=True)
            self.tensorboard.close()
