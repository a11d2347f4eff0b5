"""Shared test helpers. Every test makes its own tiny data in tmp_path."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from click.testing import CliRunner, Result

from bodycomp_cli.cli import build_command


def invoke(args: Sequence[str]) -> Result:
    """Run `bodycomp ARGS` in-process, with stderr kept apart from stdout."""
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 always keeps them apart
        runner = CliRunner()
    return runner.invoke(build_command(), [str(a) for a in args], catch_exceptions=True)


@pytest.fixture
def cli():
    return invoke


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit 2, no traceback, and a message that contains every fragment."""
    text = (result.stderr or "") + (result.output or "")
    assert result.exit_code == 2, f"exit {result.exit_code}: {text}\n{result.exception!r}"
    assert "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
