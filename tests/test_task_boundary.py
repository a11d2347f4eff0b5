"""The engine and the inference layer never name a task: they type against engine.task.Task and take a task's
model builder, so a new task is a new package under tasks/ with no edit below it (issue 21)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bodycomp_cli"
TASK_FREE = ("engine", "inference")
TASK_NAMES = re.compile(r"segmentation|slice[ _-]?selection|series[ _-]head", re.IGNORECASE)


def _task_free_modules() -> list[Path]:
    return sorted(path for layer in TASK_FREE for path in (PACKAGE / layer).rglob("*.py"))


def test_the_checked_layers_exist():
    assert len(_task_free_modules()) >= 10
    assert (PACKAGE / "engine" / "task.py").is_file() and (PACKAGE / "inference" / "run.py").is_file()


def test_engine_and_inference_never_import_tasks():
    offenders = []
    for path in _task_free_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [
                f"{path.relative_to(PACKAGE)}: {name}" for name in names if name.startswith("bodycomp_cli.tasks")
            ]
    assert not offenders, offenders


def test_engine_and_inference_never_spell_a_task_name():
    # Code, strings, comments and docstrings alike: a branch on a task's name hides in any of them.
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in _task_free_modules()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if TASK_NAMES.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_check_catches_a_task_name(tmp_path):
    assert TASK_NAMES.search('if config.task == "slice_selection":')
    assert TASK_NAMES.search("from bodycomp_cli.tasks.segmentation import X")
    assert not TASK_NAMES.search("def run_training(make_task, models_dir):")
