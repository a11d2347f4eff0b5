"""The suite's own footprint: CI once ran out of disk because every test folder was kept to the end."""

from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_passed_tests_leave_no_folders_behind(pytestconfig):
    # the settings come from the project's pyproject.toml, not from a stray ini file elsewhere
    assert Path(pytestconfig.inipath) == PYPROJECT
    # "failed" removes a passed test's tmp_path as it ends, and the whole base folder after a green run
    assert pytestconfig.getini("tmp_path_retention_policy") == "failed"
    # a red run keeps its folders for a look, but only the newest run's
    assert int(pytestconfig.getini("tmp_path_retention_count")) == 1


def test_no_test_imports_the_tests_package_by_name():
    """rt-utils' wheel installs a top-level package named `tests` into site-packages, and a regular package wins
    over this folder (a namespace package) wherever it sits on sys.path: `from tests.conftest import` then finds
    rt-utils' tests. Test modules import each other by module name (pytest puts this folder on sys.path)."""
    import re

    folder = Path(__file__).parent
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(folder.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.match(r"\s*(from tests\.|import tests\b)", line)
    ]
    assert offenders == []
