"""Layers import downwards only, and no module imports itself back through others.

Every import of every module counts, including those inside functions and under TYPE_CHECKING: an import
hidden in a function to dodge a cycle is a cycle all the same. The order (docs/architecture.md):
cli -> commands -> demo -> estimate -> (tasks | prepare | phantoms) -> inference -> engine -> data -> (io | nets)
-> core -> errors.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bodycomp_cli"

# Top-level part of bodycomp_cli -> its layer. A part imports only from lower layers and from itself;
# parts sharing a layer (e.g. tasks and prepare) do not import each other.
LAYERS = {
    "__init__": 0,  # the package root (its version): anyone may read it
    "errors": 0,
    "core": 1,
    "io": 2,
    "nets": 2,  # bodycomp's own architectures (the original toolkit's, rebuilt), beside smp's and timm's
    "data": 3,  # training datasets, which read their files through io
    "engine": 4,  # the one trainer; owns the Task protocol and never names a task
    "inference": 5,  # load_run, the placement and its AMP policy; never names a task either
    "prepare": 6,
    "tasks": 6,  # each task's training, model, predictor and scoring
    "phantoms": 6,
    "estimate": 7,  # the cohort pipeline and evaluate, which apply the tasks' predictors
    "demo": 8,  # the demo pipeline: every stage above, on phantoms
    "commands": 9,
    "cli": 10,
    "__main__": 11,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (imports for annotations only, never run)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            inside |= {id(child) for statement in node.body for child in ast.walk(statement)}
    return inside


def imported_modules(path: Path, known: dict[str, Path], annotations: bool = True) -> set[str]:
    """Every bodycomp_cli module `path` imports anywhere in its body (functions included), as module names.

    annotations=False leaves out imports under `if TYPE_CHECKING:`, which never run.
    """
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    skipped = set() if annotations else _type_checking_blocks(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("bodycomp_cli")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module_name(path).split(".")
                package = package if path.name == "__init__.py" else package[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if not base.startswith("bodycomp_cli"):
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def test_every_part_of_the_package_has_a_layer():
    parts = {part(name) for name in modules()}
    missing = sorted(parts - set(LAYERS))
    assert not missing, f"add {missing} to LAYERS in tests/test_layers.py and to docs/architecture.md's diagram"


def test_imports_go_downwards_only():
    known = modules()
    wrong = []
    for name, path in known.items():
        mine = part(name)
        for target in sorted(imported_modules(path, known)):
            theirs = part(target)
            if theirs != mine and LAYERS.get(theirs, -1) >= LAYERS.get(mine, -1):
                wrong.append(f"{name} ({mine}, layer {LAYERS.get(mine)}) imports {target} (layer {LAYERS.get(theirs)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    # Imports under TYPE_CHECKING count too: a type that two modules need both ways belongs in a third, lower one.
    known = modules()
    graph = {name: imported_modules(path, known, annotations=True) & set(known) for name, path in known.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(trail[trail.index(target) :] + [target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_no_module_imports_another_modules_private_names():
    # What two modules share is public where it lives (e.g. core/seeds.py's SEED_MIX), not borrowed by its _name.
    borrowed = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bodycomp_cli"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                borrowed += [f"{name} imports {node.module}.{item}" for item in private]
    assert not borrowed, "\n".join(borrowed)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("def late():\n    from bodycomp_cli.tasks import base\n    import bodycomp_cli.estimate.run\n")
    known = {"bodycomp_cli.tasks.base": Path(), "bodycomp_cli.estimate.run": Path()}
    assert imported_modules(source, known) == {"bodycomp_cli.tasks.base", "bodycomp_cli.estimate.run"}
