"""--low-memory: trade compute for memory, so 512 px slices train within a small RAM (or GPU memory) budget.

Two measures, both opt-in because they cost speed:
- activation checkpointing: a network's blocks keep only their inputs for the backward pass and recompute
  the rest there (timm's own set_grad_checkpointing where the model has it; smp models have none, so
  their residual and decoder blocks are switched over here);
- glibc's malloc is told to give freed activation buffers back to the operating system at once.
"""

from __future__ import annotations

import ctypes
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from bodycomp_cli.errors import BodycompError

M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20
_RECOMPUTED_CLASSES: dict[type, type] = {}


def enable_low_memory(model: nn.Module) -> None:
    """Switch the model to activation checkpointing and pin malloc's mmap threshold."""
    _return_freed_buffers_to_os()
    if hasattr(model, "set_grad_checkpointing"):  # every timm model
        model.set_grad_checkpointing(True)
    elif _recompute_blocks(model) == 0:
        raise BodycompError(f"--low-memory: {type(model).__name__} has no blocks that activation checkpointing can use")


def _return_freed_buffers_to_os() -> None:
    # glibc raises its mmap threshold each time a large block is freed, so after the first step the
    # activation buffers come from the heap, and freed heap memory stays resident. A fixed threshold
    # (which also switches that adjustment off) keeps every buffer of 1 MiB or more in its own mapping,
    # returned to the OS by free(); the price is a page fault per page on the next allocation.
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def _recompute_blocks(module: nn.Module) -> int:
    """Checkpoint each composite block held in an nn.Sequential or nn.ModuleList (residual blocks, decoder
    blocks), without descending into a block already switched. Returns how many were switched."""
    switched = 0
    in_container = isinstance(module, (nn.Sequential, nn.ModuleList))
    for child in module.children():
        composite = any(True for _ in child.children()) and any(True for _ in child.parameters())
        if in_container and composite:
            _switch_to_recompute(child)
            switched += 1
        else:
            switched += _recompute_blocks(child)
    return switched


def _switch_to_recompute(block: nn.Module) -> None:
    # Swapping the instance's class (instead of wrapping it in another module) keeps the state_dict keys, so
    # checkpoints load into a plain model, and DataParallel replicas (made with type(module)) inherit it.
    original = type(block)
    if original not in _RECOMPUTED_CLASSES:
        _RECOMPUTED_CLASSES[original] = type(f"Recomputed{original.__name__}", (original,), {"forward": _forward})
    block.__class__ = _RECOMPUTED_CLASSES[original]


def _forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    plain_forward = super(type(self), self).forward
    if not (self.training and torch.is_grad_enabled()):
        return plain_forward(*args, **kwargs)
    calls = 0

    def run(*inner_args: Any, **inner_kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            return plain_forward(*inner_args, **inner_kwargs)
        with _batchnorm_stats_kept(self):  # the recomputation must not count the batch in the running stats twice
            return plain_forward(*inner_args, **inner_kwargs)

    return checkpoint(run, *args, use_reentrant=False, **kwargs)


@contextmanager
def _batchnorm_stats_kept(block: nn.Module):
    saved = [
        (buffer, buffer.clone())
        for layer in block.modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm)
        for buffer in layer.buffers()
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
