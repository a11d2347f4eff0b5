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
