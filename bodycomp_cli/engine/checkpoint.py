"""Checkpoints: one self-describing dict per file, written atomically and read back with a safe load.

Everything in a checkpoint is a tensor or a plain Python value (the RNG states included), so it is read
with `torch.load(weights_only=True)`: a run folder received from someone else cannot run code on load.
Files from bodycomp before format 2 held numpy objects; `python -m bodycomp_cli.engine.checkpoint FILE`
converts one in place, for files whose source is trusted.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.atomic import atomic_path, pause_at

LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
FORMAT = "bodycomp-checkpoint/2"
OLD_FORMATS = ("bodycomp-checkpoint/1",)
CONVERT = "python -m bodycomp_cli.engine.checkpoint"


def _python_rng(state: tuple) -> dict[str, Any]:
    version, values, gauss = state
    return {"version": version, "state": torch.tensor(values, dtype=torch.int64), "gauss": gauss}


def _numpy_rng(state: tuple) -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = state
    keys = torch.from_numpy(np.asarray(keys).astype(np.int64))
    return {"kind": kind, "keys": keys, "position": int(position), "has_gauss": int(has_gauss), "cached": float(cached)}


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch and CUDA generator states, as tensors and plain values."""
    state = {
        "python": _python_rng(random.getstate()),
        "numpy": _numpy_rng(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    python, numpy_state = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        restore_cuda_rng(state["cuda"])


def restore_cuda_rng(states: list[torch.Tensor]) -> None:
    """Restore each visible GPU's generator; a run resumed on fewer GPUs than it saved gets a warning."""
    visible = torch.cuda.device_count()
    if len(states) > visible:
        warnings.warn(
            f"the checkpoint holds the random state of {len(states)} GPUs but {visible} are visible: "
            f"restoring the first {visible}; the run may not repeat an uninterrupted one exactly",
            RuntimeWarning,
            stacklevel=3,
        )
    for device, device_state in enumerate(states[:visible]):
        torch.cuda.set_rng_state(device_state, device)


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Save atomically; numpy values become Python numbers and tensors, so the safe load can read them."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **_plain(checkpoint)}, tmp)
        pause_at(f"written:{path.name}")


def link_as(source: Path, target: Path) -> None:
    """Publish an already written checkpoint under a second name atomically (hard link, else a copy)."""
    with atomic_path(target) as tmp:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(source, tmp)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint onto the CPU with a safe (weights-only) load; map_location then moves the weights."""
    path = Path(path)
    if not path.is_file():
        raise BodycompError(f"{path}: no checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "unsupported global" not in str(error).lower():  # a damaged pickle, not a refused object
            raise BodycompError(f"{path}: unreadable checkpoint (its pickle is damaged)") from None
        raise BodycompError(
            f"{path}: holds objects a safe load refuses (saved by an older bodycomp, or not by bodycomp); "
            f"if you trust its source, convert it once with: {CONVERT} {path}"
        ) from None
    except Exception as error:  # torch raises several types for a damaged file
        raise BodycompError(f"{path}: unreadable checkpoint ({error})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise BodycompError(f"{path}: not a bodycomp checkpoint")
    weights = checkpoint.get("model")
    if torch.device(map_location).type != "cpu" and isinstance(weights, dict):
        for key, tensor in weights.items():  # in place: the state_dict keeps its _metadata
            weights[key] = tensor.to(map_location)
    return checkpoint


def convert_old_checkpoint(path: Path) -> None:
    """Rewrite a format-1 checkpoint (numpy RNG states, pickled) as format 2. Runs its pickle: trusted files only."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") not in OLD_FORMATS:
        raise BodycompError(f"{path}: not an old-format bodycomp checkpoint")
    rng = checkpoint.get("rng")
    if rng is not None:
        rng.update(python=_python_rng(rng["python"]), numpy=_numpy_rng(rng["numpy"]))
    checkpoint.pop("format")
    save_checkpoint(path, checkpoint)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (in history rows, say) as Python numbers and tensors.

    Containers with nothing to change are returned as they are (a state_dict keeps its _metadata).
    """
    if isinstance(value, dict):
        items = {k: _plain(v) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if isinstance(value, list) or type(value) is tuple:
        items = [_plain(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else type(value)(items)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


if __name__ == "__main__":  # python -m bodycomp_cli.engine.checkpoint FILE_OR_RUN_DIR ...
    for argument in sys.argv[1:]:
        target = Path(argument)
        for file in [target / LAST, target / BEST] if target.is_dir() else [target]:
            if file.is_file():
                try:
                    convert_old_checkpoint(file)
                except BodycompError as error:
                    sys.exit(f"error: {error}")
                print(f"converted {file}")
