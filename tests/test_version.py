"""`bodycomp --version`: the package version, without importing torch, the same as run folders record."""

from __future__ import annotations

import subprocess
import sys

from bodycomp_cli import __version__
from bodycomp_cli.core.versions import versions


def test_version_is_printed_without_torch_and_agrees_with_run_folders():
    probe = "import sys; from bodycomp_cli.cli import main; sys.argv = ['bodycomp', '--version']\ntry:\n main()\n"
    probe += "except SystemExit:\n pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["bodycomp", __version__, "False"]
    assert versions()["bodycomp"] == __version__  # what config.json's "versions" records


def test_results_json_records_the_same_versions(tmp_path):
    import json

    from bodycomp_cli.estimate.report import write_results

    write_results(tmp_path, [], [("L3", ["muscle"])])
    assert json.loads((tmp_path / "results.json").read_text())["versions"] == versions()
