import os
import stat

import pytest

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.atomic import atomic_output_dir, atomic_path, atomic_write_text


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
