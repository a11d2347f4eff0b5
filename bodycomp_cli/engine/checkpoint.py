"""Checkpoints: one self-describing dict per file, written atomically (temp file, then rename)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.atomic import atomic_path

LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
FORMAT = "bodycomp-checkpoint/1"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **checkpoint}, tmp)


def link_as(source: Path, target: Path) -> None:
    """Publish an already written checkpoint under a second name atomically (hard link, else copy)."""
    tmp = target.with_name(f".{target.name}.link.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise BodycompError(f"{path}: no checkpoint")
    try:
        # Our own files hold numpy/python RNG states as well as tensors, hence weights_only=False.
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises several types for a damaged file
        raise BodycompError(f"{path}: unreadable checkpoint ({error})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise BodycompError(f"{path}: not a bodycomp checkpoint")
    return checkpoint
