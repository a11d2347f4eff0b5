import builtins
import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_atomic import dead_temp_name, wait_for_marker
from test_estimate_cli import FakeModels, write_series

from bodycomp_cli.engine.checkpoint import save_checkpoint
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate
from bodycomp_cli.io import atomic
from bodycomp_cli.io.atomic import (
    BACKUP_PREFIX,
    PAUSE_AT,
    PAUSE_MARKER,
    TEMP_PREFIX,
    Owner,
    atomic_output_dir,
    atomic_path,
    atomic_write_text,
    remove_dead_temps,
)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_and_folders_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "hello")
        with atomic_path(tmp_path / "b.csv") as tmp:
            tmp.write_text("x")
        with atomic_output_dir(tmp_path / "out") as out:
            (out / "f").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert _mode(tmp_path / "a.txt") == 0o644
    assert _mode(tmp_path / "b.csv") == 0o644
    assert _mode(tmp_path / "out") == 0o755
    assert (tmp_path / "out" / "f").read_text() == "y"


def test_failed_output_leaves_nothing_and_existing_is_kept(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_output_dir(out):
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    out.mkdir()
    (out / "keep").write_text("user data")
    with pytest.raises(BodycompError, match="--overwrite"), atomic_output_dir(out):
        pass
    with pytest.raises(RuntimeError), atomic_output_dir(out, overwrite=True):
        raise RuntimeError("boom")
    assert (out / "keep").read_text() == "user data"
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["new"]


# ----- owners and dead temps ---------------------------------------------------------------------------------
def test_temp_names_tell_their_owner_and_keep_the_suffix(tmp_path):
    with atomic_path(tmp_path / "curves.png") as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(TEMP_PREFIX) and tmp.name.endswith("-curves.png")
        assert f"-{os.getpid()}-" in tmp.name
        assert Owner.current().is_alive()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_only_dead_owners_temps_are_removed(tmp_path):
    dead_file, dead_dir = tmp_path / dead_temp_name("a.pt"), tmp_path / dead_temp_name("out")
    live_file = tmp_path / Owner.current().temp_name("b.pt")
    elsewhere = tmp_path / Owner("00000000", 1, 1).temp_name("c.pt")  # another host's: cannot be checked
    nested = tmp_path / "tensorboard" / dead_temp_name("events")
    nested.parent.mkdir()
    dead_dir.mkdir()
    for path in (dead_file, live_file, elsewhere, nested, tmp_path / ".user-file", tmp_path / "out"):
        path.write_text("x") if path != tmp_path / "out" else path.mkdir()
    assert remove_dead_temps(tmp_path) == sorted([dead_file, dead_dir])
    assert nested.exists()
    assert remove_dead_temps(tmp_path, recursive=True) == [nested]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([live_file.name, elsewhere.name, ".user-file", "out", "tensorboard"])


def test_stale_temp_folders_are_matched_by_exact_name(tmp_path):
    # A run writing `slices` must leave alone the temp folders of `slices-v2` (live or not: not its own).
    live_v2, dead_v2 = tmp_path / Owner.current().temp_name("slices-v2"), tmp_path / dead_temp_name("slices-v2")
    dead_slices = tmp_path / dead_temp_name("slices")
    for folder in (live_v2, dead_v2, dead_slices):
        folder.mkdir()
    with atomic_output_dir(tmp_path / "slices") as out:
        (out / "a").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live_v2.name, dead_v2.name, "slices"])


def test_atomic_path_fsyncs_the_file_renames_then_fsyncs_the_folder(tmp_path, monkeypatch):
    events = []
    real_replace = os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    save_checkpoint(tmp_path / "checkpoint_last.pt", {"epoch": 1})
    tmp_name = [name for kind, name in events if kind == "fsync"][0]
    assert Path(tmp_name).name.startswith(TEMP_PREFIX)
    target = str(tmp_path / "checkpoint_last.pt")
    assert events == [("fsync", tmp_name), ("replace", target), ("fsync", str(tmp_path))]


def test_atomic_output_dir_fsyncs_every_file_and_folder_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_replace = os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(os.readlink(f"/proc/self/fd/{fd}")))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(f"replace {Path(b).name}"), real_replace(a, b)))
    with atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f").write_text("1")
    assert events == [str(tmp / "sub" / "f"), str(tmp / "sub"), str(tmp), "replace out", str(tmp_path)]


# ----- --overwrite: killed at each step ------------------------------------------------------------------
OVERWRITE_SCRIPT = """
import sys
from pathlib import Path
from bodycomp_cli.io import atomic
if sys.argv[2] == "no-exchange":
    atomic.exchange = lambda first, second: False  # a file system without renameat2's RENAME_EXCHANGE
with atomic.atomic_output_dir(Path(sys.argv[1]), overwrite=True) as tmp:
    (tmp / "new").write_text("new output")
"""


def _kill_overwrite_at(point: str, out: Path, exchange: bool) -> None:
    marker = out.parent / "paused"
    env = {**os.environ, PAUSE_AT: point, PAUSE_MARKER: str(marker)}
    argv = [sys.executable, "-c", OVERWRITE_SCRIPT, str(out), "exchange" if exchange else "no-exchange"]
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    wait_for_marker(marker, process)
    process.kill()
    process.communicate()
    marker.unlink()


@pytest.mark.parametrize(
    ("point", "exchange", "after_kill"),
    [
        ("before-rename:out", True, "old"),
        ("swapped:out", True, "new"),
        ("before-rename:out", False, "old"),
        ("backed-up:out", False, None),  # the old output waits under its backup name
    ],
)
def test_overwrite_killed_at_any_step_leaves_old_or_new_and_a_restart_cleans_up(tmp_path, point, exchange, after_kill):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("old output")
    _kill_overwrite_at(point, out, exchange)
    shown = sorted(p.name for p in out.iterdir()) if out.exists() else None
    assert shown == ([after_kill] if after_kill else None)
    assert any(p.name.startswith((TEMP_PREFIX, BACKUP_PREFIX)) for p in tmp_path.iterdir())
    remove_dead_temps(tmp_path, name="out")  # what every bodycomp command does first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == [after_kill or "old"]


def test_estimate_resume_removes_what_a_killed_run_left_in_its_output(tmp_path):
    write_series(tmp_path / "a.npz")
    out = tmp_path / "out"
    run_estimate(collect_inputs([tmp_path / "a.npz"]), FakeModels(), out, EstimateOptions(show_progress=False))
    dead = [out / dead_temp_name("results.csv"), out / "previews" / dead_temp_name("a_L3.png")]
    live = out / Owner.current().temp_name("results.json")  # a concurrent writer's: not ours to remove
    for path in (*dead, live):
        path.write_text("half written")
    options = EstimateOptions(resume=True, show_progress=False)
    assert run_estimate(collect_inputs([tmp_path / "a.npz"]), FakeModels(), out, options).already_done == ["a"]
    assert [p for p in dead if p.exists()] == [] and live.exists()


def test_a_recycled_pid_does_not_keep_a_dead_owners_temps(tmp_path):
    me = Owner.current()
    assert me.start > 0  # Linux: the start time is read from /proc
    recycled = tmp_path / Owner(me.host, me.pid, me.start + 1).temp_name("a.pt")  # same pid, another process
    recycled.write_text("x")
    assert remove_dead_temps(tmp_path) == [recycled]


def test_a_dead_owners_backup_is_removed_once_the_new_output_is_in_place(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "new").write_text("new")
    backup = tmp_path / dead_temp_name("out", backup=True)
    backup.mkdir()
    remove_dead_temps(tmp_path, name="out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["new"]


def test_pause_marker_appears_whole_never_empty(tmp_path, monkeypatch):
    # The crash tests read the marker as soon as it exists; it must never be opened in place (created empty).
    marker = tmp_path / "paused"
    real_open = io.open

    def guarded_open(file, *args, **kwargs):
        assert Path(file) != marker, "marker opened in place: a reader can see it empty"
        return real_open(file, *args, **kwargs)

    class NoWait:
        def wait(self):
            return True

    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(atomic.threading, "Event", NoWait)
    monkeypatch.setenv(atomic.PAUSE_AT, "written:x.pt")
    monkeypatch.setenv(atomic.PAUSE_MARKER, str(marker))
    atomic.pause_at("written:x.pt")
    monkeypatch.undo()
    assert marker.read_text() == "written:x.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paused"]
