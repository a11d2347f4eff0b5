"""Memory against speed: --low-memory, and the opposite allocator setting that every other CLI run gets.

--low-memory trades compute for memory, so 512 px slices train within a small RAM (or GPU memory) budget.
Two measures, both opt-in because they cost speed:
- activation checkpointing: a network's blocks keep only their inputs for the backward pass and recompute
  the rest there (timm's own set_grad_checkpointing where the model has it; smp models have none, so
  their residual and decoder blocks are switched over here);
- glibc's malloc is told to give freed activation buffers back to the operating system at once.
Without it, the CLI tells glibc to keep freed memory for reuse instead (keep_freed_memory). Both are
process-wide settings, so the CLI entry makes them, not the library.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from bodycomp_cli.errors import BodycompError

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # mallopt parameter numbers, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20
NEVER_TRIM = 2**31 - 1  # glibc keeps the trim threshold in an int
_RECOMPUTED_CLASSES: dict[type, type] = {}


def enable_low_memory(model: nn.Module) -> None:
    """Switch the model to activation checkpointing (malloc's setting is the CLI's: return_freed_buffers_to_os)."""
    if hasattr(model, "set_grad_checkpointing"):  # every timm model
        model.set_grad_checkpointing(True)
    elif _recompute_blocks(model) == 0:
        raise BodycompError(f"--low-memory: {type(model).__name__} has no blocks that activation checkpointing can use")
    keep_batchnorm_stats_in_recomputation(model)


def return_freed_buffers_to_os() -> None:
    """Process-wide and irreversible (glibc has no getter to restore from), so only `train-* --low-memory` calls
    it, at the CLI entry; a library caller decides for its own process."""
    # glibc raises its mmap threshold each time a large block is freed, so after the first step the
    # activation buffers come from the heap, and freed heap memory stays resident. A fixed threshold
    # (which also switches that adjustment off) keeps every buffer of 1 MiB or more in its own mapping,
    # returned to the OS by free(); the price is a page fault per page on the next allocation.
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks in the heap for reuse; True when set. Process-wide and irreversible, so only
    the CLI entries call it (not with --low-memory), and not when the user chose malloc's settings."""
    # glibc serves blocks above its mmap threshold (which it raises to 32 MB at most) with a fresh mmap and
    # unmaps them on free. A CNN's activations are such blocks (densenet121, batch 32 at 256 px: up to 134 MB),
    # so every batch faults their pages in again: 3.5 million page faults in two such forward passes here
    # (getrusage). From the heap, never trimmed (M_MMAP_MAX=0, M_TRIM_THRESHOLD=max), they are reused: 0.17
    # million faults. The price: the process keeps its peak size. PyTorch's CPU tuning guide gets the same
    # effect by preloading jemalloc or tcmalloc.
    if "GLIBC_TUNABLES" in os.environ or "LD_PRELOAD" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


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
    return checkpoint(plain_forward, *args, use_reentrant=False, **kwargs)


def keep_batchnorm_stats_in_recomputation(model: nn.Module) -> None:
    """Make every BatchNorm layer (SyncBatchNorm and timm's norm-act layers included) leave its running stats
    alone when its forward is a recomputation in the backward pass, so each batch counts once, as without
    --low-memory. Call it again after layers are replaced (SyncBatchNorm conversion); it skips guarded layers.
    """
    for layer in model.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and not hasattr(layer, "_stats_before_recompute"):
            layer._stats_before_recompute = None
            layer.register_forward_pre_hook(_save_stats_if_recomputing)
            layer.register_forward_hook(_restore_stats)


def _in_backward() -> bool:
    # Activation checkpointing (ours for smp, timm's checkpoint_seq) reruns forwards inside the backward pass,
    # the only time autograd has a graph task running.
    return torch._C._current_graph_task_id() != -1


def _save_stats_if_recomputing(layer: nn.Module, args: Any) -> None:
    if layer.training and _in_backward():
        layer._stats_before_recompute = [buffer.clone() for buffer in layer.buffers()]


def _restore_stats(layer: nn.Module, args: Any, output: Any) -> None:
    saved, layer._stats_before_recompute = layer._stats_before_recompute, None
    if saved is not None:
        with torch.no_grad():
            for buffer, value in zip(layer.buffers(), saved, strict=True):
                buffer.copy_(value)
