"""Where training runs: the CPU, one GPU, DataParallel over N GPUs, or DDP when started by torchrun."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

from bodycomp_cli.errors import BodycompError

MODULE_PREFIX = "module."  # what DataParallel and DDP put in front of every state-dict key


@dataclass(frozen=True)
class DeviceSetup:
    device: torch.device
    n_gpus: int  # DataParallel over cuda:0..n-1 when > 1 (single process)
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """Only this process logs, draws progress and writes run files."""
        return self.rank == 0

    def describe(self) -> str:
        if self.distributed:
            return f"DDP over {self.world_size} processes ({torch.distributed.get_backend()}), {self.device} on rank 0"
        if self.n_gpus > 1:
            return f"DataParallel over {self.n_gpus} GPUs (cuda:0..{self.n_gpus - 1})"
        return "1 GPU (cuda:0)" if self.device.type == "cuda" else "the CPU"


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_devices(gpus: int | None, visible: int | None = None) -> DeviceSetup:
    """Check -g against what is visible (or refuse it under torchrun) and choose devices; no side effects."""
    visible = torch.cuda.device_count() if visible is None else visible
    if under_torchrun():
        if gpus is not None:
            raise BodycompError(
                "-g/--gpus cannot be used under torchrun: torchrun decides the devices (--nproc_per_node)"
            )
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        device = torch.device("cuda", local) if visible else torch.device("cpu")
        return DeviceSetup(device, int(bool(visible)), rank, world, local, distributed=True)
    if gpus is None:
        gpus = 1 if visible else 0
    if gpus < 0:
        raise BodycompError(f"-g/--gpus {gpus}: must be 0 (CPU) or more")
    if gpus > visible:
        raise BodycompError(f"-g/--gpus {gpus}: only {visible} GPU(s) visible")
    return DeviceSetup(torch.device("cuda", 0) if gpus else torch.device("cpu"), gpus)


def init_distributed(setup: DeviceSetup) -> None:
    """Join torchrun's process group: nccl on GPUs, gloo on the CPU."""
    if setup.distributed and not torch.distributed.is_initialized():
        if setup.device.type == "cuda":
            torch.cuda.set_device(setup.device)
        torch.distributed.init_process_group("nccl" if setup.device.type == "cuda" else "gloo")


def wrap_model(model: torch.nn.Module, setup: DeviceSetup) -> torch.nn.Module:
    """Move the model to its device and wrap it for DataParallel / DDP as the setup says."""
    model = model.to(setup.device)
    if setup.distributed:
        if setup.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # SyncBN needs GPUs
            return torch.nn.parallel.DistributedDataParallel(model, device_ids=[setup.device.index])
        # Depthwise convolutions (ConvNeXt, MobileNet) make DDP warn about grad strides: a speed hint only.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return torch.nn.parallel.DistributedDataParallel(model)
    if setup.n_gpus > 1:
        return torch.nn.DataParallel(model, device_ids=list(range(setup.n_gpus)))
    return model


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    wrapped = isinstance(model, torch.nn.DataParallel | torch.nn.parallel.DistributedDataParallel)
    return model.module if wrapped else model


def strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights saved from a wrapped model load into a bare one (and old checkpoints stay readable)."""
    if state_dict and all(key.startswith(MODULE_PREFIX) for key in state_dict):
        return {key[len(MODULE_PREFIX) :]: value for key, value in state_dict.items()}
    return state_dict
