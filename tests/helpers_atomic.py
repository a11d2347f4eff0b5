"""Temp names of a dead owner, as a SIGKILLed bodycomp process leaves them."""

from __future__ import annotations

import multiprocessing
import subprocess
import time
from pathlib import Path

from bodycomp_cli.io.atomic import BACKUP_PREFIX, TEMP_PREFIX, Owner


def dead_owner() -> Owner:
    """An owner whose process has exited: a reaped child's pid (start time 1, so a reused pid stays dead)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return Owner(Owner.current().host, child.pid, 1)


def dead_temp_name(name: str, backup: bool = False) -> str:
    return dead_owner().temp_name(name, BACKUP_PREFIX if backup else TEMP_PREFIX)


def wait_for_marker(marker: Path, process: subprocess.Popen | multiprocessing.Process, timeout: float = 120.0) -> None:
    """Wait until `process` reaches its pause point (BODYCOMP_TEST_PAUSE_AT) and says so in `marker`."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        ended = process.poll() if isinstance(process, subprocess.Popen) else process.exitcode
        assert ended is None, f"exited {ended} before reaching the pause point"
        assert time.monotonic() < deadline, f"{marker} never appeared"
        time.sleep(0.01)  # polling for the event, not a timed guess
