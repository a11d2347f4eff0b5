"""Write-then-rename helpers, so that no command ever leaves half-written output behind.

Every temp file or folder is named after its owner: `.bodycomp-tmp-<host>-<pid>-<start>-<random>-<name>`
(`.bodycomp-old-...` for a folder moved aside by --overwrite). `<start>` is the process start time, so a
recycled pid does not make a dead owner look alive. `remove_dead_temps` clears what dead owners left; every
command that writes into a folder calls it first. The sequences are described in docs/architecture.md
("Crash safety").
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bodycomp_cli.errors import BodycompError

TEMP_PREFIX = ".bodycomp-tmp-"
BACKUP_PREFIX = ".bodycomp-old-"
_OWNED = re.compile(r"^\.bodycomp-(tmp|old)-([0-9a-f]{8})-(\d+)-(\d+)-[0-9a-f]{8}-(.+)$")
# Test-only hook: BODYCOMP_TEST_PAUSE_AT=<point>[#<n>] makes the n-th arrival (default 1st) at that point
# create the file BODYCOMP_TEST_PAUSE_MARKER and block, so a test can SIGKILL the process exactly there.
PAUSE_AT, PAUSE_MARKER = "BODYCOMP_TEST_PAUSE_AT", "BODYCOMP_TEST_PAUSE_MARKER"
_arrivals: dict[str, int] = {}


def pause_at(point: str) -> None:
    """Block forever at `point` when the test hook names it; a no-op otherwise (one dict lookup)."""
    wanted = os.environ.get(PAUSE_AT)
    if not wanted:
        return
    name, _, nth = wanted.partition("#")
    if name != point:
        return
    _arrivals[point] = _arrivals.get(point, 0) + 1
    if _arrivals[point] == int(nth or 1):
        # Published by rename: a test that sees the marker must also see its content (write_text creates the
        # file empty first, and a kill right then left an empty marker).
        marker = Path(os.environ[PAUSE_MARKER])
        part = marker.with_name(marker.name + ".part")
        with open(part, "w") as handle:
            handle.write(point)
        os.replace(part, marker)
        threading.Event().wait()  # until the test kills the process


# ----- owners -----------------------------------------------------------------------------------------------
def _host_tag() -> str:
    # A short digest: host names may hold dashes and dots, which the temp name uses as separators.
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _start_time(pid: int) -> int | None:
    """The process start time in clock ticks after boot (Linux /proc); None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22; the name in (...) may hold spaces


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: int  # 0 where unknown (no /proc)

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()  # read each time: forked workers are owners of their own
        return cls(_host_tag(), pid, _start_time(pid) or 0)

    def is_alive(self) -> bool:
        if self.host != _host_tag():
            return True  # another machine's process (shared file system): we cannot tell, so leave it
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, another user's
        start = _start_time(self.pid)
        return not self.start or start is None or start == self.start

    def temp_name(self, name: str, prefix: str = TEMP_PREFIX) -> str:
        return f"{prefix}{self.host}-{self.pid}-{self.start}-{secrets.token_hex(4)}-{name}"


def temp_name(name: str) -> str:
    """A sibling name for a temp copy of `name`, owned by this process."""
    return Owner.current().temp_name(name)


def _parse(entry: str) -> tuple[str, Owner, str] | None:
    """(kind, owner, target name) of a temp entry, or None for anything else."""
    match = _OWNED.match(entry)
    if match is None:
        return None
    kind, host, pid, start, name = match.groups()
    return kind, Owner(host, int(pid), int(start)), name


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_dead_temps(folder: Path, name: str | None = None, recursive: bool = False) -> list[Path]:
    """Remove the temp files and folders in `folder` whose owner process is dead; returns what was removed.

    name: only those for this exact target name. A dead owner's `.bodycomp-old-` backup is moved back to
    its name when that name is missing (a kill between --overwrite's two renames), removed otherwise.
    recursive: also look in the subfolders (a folder that bodycomp alone writes into, such as a run folder).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        parsed = _parse(entry.name)
        if parsed is None:
            if recursive and entry.is_dir() and not entry.is_symlink():
                removed += remove_dead_temps(entry, name, recursive)
            continue
        kind, owner, target = parsed
        if (name is not None and target != name) or owner.is_alive():
            continue
        if kind == "old" and not (folder / target).exists():
            os.replace(entry, folder / target)
            fsync_folder(folder)
            continue
        _remove(entry)
        removed.append(entry)
    return removed


# ----- durability -------------------------------------------------------------------------------------------
def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(path: Path) -> None:
    """Make a rename in `path` durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; nothing more can be done there
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file, then every folder (deepest first), under root."""
    for here, _, files in os.walk(root, topdown=False):
        for file in files:
            if not os.path.islink(os.path.join(here, file)):
                fsync_file(Path(here, file))
        fsync_folder(Path(here))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _give_normal_permissions(path: Path, is_dir: bool) -> None:
    # Temp files are created private; results must be readable like any file the user writes (shared
    # cluster folders), so apply the permissions a plain open()/mkdir() would have given.
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_current_umask())


# ----- renames ----------------------------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if os.name == "posix" else None


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where the system or file system can't."""
    if _renameat2 is None:
        return False
    at_cwd = -100
    if _renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(first))


def _replace_folder(new: Path, output_dir: Path) -> None:
    """Put the finished folder `new` in place of output_dir; at no moment is there neither of the two."""
    parent = output_dir.parent
    if not output_dir.exists():
        os.replace(new, output_dir)
    elif exchange(new, output_dir):  # `new` now holds the old output, under a temp name
        pause_at(f"swapped:{output_dir.name}")
        fsync_folder(parent)
        shutil.rmtree(new, ignore_errors=True)
        return
    else:  # no atomic swap here: the old output waits under a backup name that a later start restores
        backup = parent / Owner.current().temp_name(output_dir.name, BACKUP_PREFIX)
        os.replace(output_dir, backup)
        fsync_folder(parent)
        pause_at(f"backed-up:{output_dir.name}")
        os.replace(new, output_dir)
        fsync_folder(parent)
        shutil.rmtree(backup, ignore_errors=True)
    fsync_folder(parent)


def refuse_existing_output(output_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty existing output folder unless overwrite is set."""
    if output_dir.exists() and not output_dir.is_dir():
        raise BodycompError(f"{output_dir}: exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise BodycompError(f"{output_dir}: output folder exists and is not empty (use --overwrite to replace it)")


@contextlib.contextmanager
def atomic_output_dir(output_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces output_dir, on any error it is removed.

    What dead owners left for this output name is cleaned first (a backup of a killed --overwrite is put
    back), so a re-run works without --overwrite and never meets a half-finished folder.
    """
    output_dir = Path(output_dir)
    parent = output_dir.parent if str(output_dir.parent) else Path(".")
    remove_dead_temps(parent, name=output_dir.name)
    refuse_existing_output(output_dir, overwrite)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / temp_name(output_dir.name)
    tmp.mkdir()
    _give_normal_permissions(tmp, is_dir=True)
    try:
        yield tmp
        fsync_tree(tmp)
        pause_at(f"before-rename:{output_dir.name}")
        _replace_folder(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to a temp file beside path, then rename it over path (fsynced before and after)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path` for a writer that wants a filename (torch.save, savefig, to_csv).

    Once the writer is done: fsync the file, rename it over `path`, fsync the folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # ours alone until the rename
    try:
        yield tmp
        fsync_file(tmp)
        _give_normal_permissions(tmp, is_dir=False)
        pause_at(f"before-rename:{path.name}")
        os.replace(tmp, path)
        fsync_folder(path.parent)
        pause_at(f"after-rename:{path.name}")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
