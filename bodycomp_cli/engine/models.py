"""What every task's model registry shares: refusing an unknown name with the valid ones.

Each task builds its own models (tasks/*/model.py, from smp, timm or bodycomp_cli.nets), all randomly
initialised (no weight download).
"""

from __future__ import annotations

import difflib

from bodycomp_cli.errors import BodycompError


def check_choice(kind: str, name: str, choices: list[str], show_all: bool = True) -> None:
    """Refuse an unknown registry name, listing the valid ones (or the closest ones when there are many)."""
    if name in choices:
        return
    if show_all:
        raise BodycompError(f"unknown {kind} {name!r}; valid choices: {', '.join(choices)}")
    close = difflib.get_close_matches(name, choices, n=8, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else f"e.g. {', '.join(choices[:8])}"
    raise BodycompError(f"unknown {kind} {name!r}; {hint} ({len(choices)} valid choices)")
