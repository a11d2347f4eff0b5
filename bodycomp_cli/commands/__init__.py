"""Thin Typer command modules. None of them may import torch at module level: `bodycomp --help` and the
prepare commands must start fast. Each module exposes `register(app)`."""
