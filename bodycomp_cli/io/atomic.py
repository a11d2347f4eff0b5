"""Write-then-rename helpers, so that no command ever leaves half-written output behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bodycomp_cli.errors import BodycompError

TEMP_PREFIX = ".bodycomp-tmp-"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _give_normal_permissions(path: Path, is_dir: bool) -> None:
    # mkstemp/mkdtemp create 0600/0700 whatever the umask; results must be readable like any file the user
    # writes (shared cluster folders), so apply the permissions a plain open()/mkdir() would have given.
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_current_umask())


def refuse_existing_output(output_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty existing output folder unless overwrite is set."""
    if output_dir.exists() and not output_dir.is_dir():
        raise BodycompError(f"{output_dir}: exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise BodycompError(f"{output_dir}: output folder exists and is not empty (use --overwrite to replace it)")


@contextlib.contextmanager
def atomic_output_dir(output_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces output_dir, on any error it is removed.

    Stale temp folders left by a killed earlier run of the same output are cleaned first, so a re-run
    works without --overwrite.
    """
    output_dir = Path(output_dir)
    refuse_existing_output(output_dir, overwrite)
    parent = output_dir.parent if str(output_dir.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f"{TEMP_PREFIX}{output_dir.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{output_dir.name}-", dir=parent))
    _give_normal_permissions(tmp, is_dir=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if output_dir.exists():
        trash = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{output_dir.name}-old-", dir=parent))
        os.replace(output_dir, trash / "old")
        os.replace(tmp, output_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, output_dir)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to a temp file beside path, fsync, then rename over path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path` for a writer that wants a filename (torch.save, savefig, to_csv)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _give_normal_permissions(Path(tmp), is_dir=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
