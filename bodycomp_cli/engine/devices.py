"""Where training runs: the CPU, one GPU, DataParallel over N GPUs, or DDP when started by torchrun."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from bodycomp_cli.core.amp import AmpPolicy
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


def resolve_devices(gpus: int | None, visible: int | None = None, single_process: bool = False) -> DeviceSetup:
    """Check -g against what is visible (or refuse it under torchrun) and choose devices; no side effects.

    single_process (estimate, evaluate): RANK/WORLD_SIZE of a one-process job are ignored; those of a larger
    one are refused, since every process would do all the work and write the same outputs.
    """
    visible = torch.cuda.device_count() if visible is None else visible
    if under_torchrun() and single_process:
        world = os.environ["WORLD_SIZE"]
        if world.strip() != "1":
            raise BodycompError(
                f"RANK/WORLD_SIZE say this is one of {world} processes (torchrun?), but estimate and evaluate run "
                "as one process: start them without torchrun (-g N spreads the batches over N GPUs)"
            )
    elif under_torchrun():
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


def wrap_model(model: torch.nn.Module, setup: DeviceSetup, amp: AmpPolicy | None = None) -> torch.nn.Module:
    """Move the model to its device and wrap it for DataParallel / DDP as the setup says.

    `amp` is the autocast the trainer runs the forward pass under; DataParallel's replica threads need it again.
    """
    model = model.to(setup.device)
    if setup.distributed:
        if setup.device.type == "cuda":
            model = convert_sync_batchnorm(model)  # SyncBN needs GPUs
            return torch.nn.parallel.DistributedDataParallel(model, device_ids=[setup.device.index])
        return torch.nn.parallel.DistributedDataParallel(model)
    if setup.n_gpus > 1:
        return AutocastDataParallel(model, device_ids=list(range(setup.n_gpus)), amp=amp)
    return model


def convert_sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Every BatchNorm layer synchronised over DDP ranks, keeping what timm fuses into its norm layers.

    torch's own converter turns timm's BatchNormAct2d (norm + activation + dropout in one module, used by
    densenet121 and smp's tu- encoders) into a bare SyncBatchNorm: the activation would be lost in training
    but present again when inference rebuilds the model. timm's converter maps it to SyncBatchNormAct instead
    (and plain BatchNorm layers to SyncBatchNorm, as torch's does).
    """
    from timm.layers import convert_sync_batchnorm as timm_convert  # here: only DDP on GPUs pays timm's import

    return timm_convert(model)


class AutocastDataParallel(torch.nn.DataParallel):
    """DataParallel whose replicas run under the trainer's autocast dtype.

    Autocast settings are thread-local: DataParallel runs each replica in a new thread and re-enters autocast
    there with the default dtype (fp16 on CUDA), so a bf16 run would compute its replicas in fp16, without
    the GradScaler that fp16 needs. Each replica's forward is wrapped in the chosen autocast instead.
    """

    def __init__(self, module: torch.nn.Module, device_ids: list[int], amp: AmpPolicy | None = None) -> None:
        super().__init__(module, device_ids=device_ids)
        self.amp = amp

    def parallel_apply(self, replicas, inputs, kwargs):
        if self.amp is not None and self.amp.enabled:
            replicas = [_UnderAutocast(replica, self.amp) for replica in replicas]
        return super().parallel_apply(replicas, inputs, kwargs)


class _UnderAutocast(torch.nn.Module):
    """One replica's forward under a given autocast (built per step: replicas themselves are rebuilt per step)."""

    def __init__(self, replica: torch.nn.Module, amp: AmpPolicy) -> None:
        super().__init__()
        self.replica, self.amp = replica, amp

    def forward(self, *args, **kwargs):
        with self.amp.autocast():
            return self.replica(*args, **kwargs)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    wrapped = isinstance(model, torch.nn.DataParallel | torch.nn.parallel.DistributedDataParallel)
    return model.module if wrapped else model


def strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights saved from a wrapped model load into a bare one (and old checkpoints stay readable)."""
    if state_dict and all(key.startswith(MODULE_PREFIX) for key in state_dict):
        return {key[len(MODULE_PREFIX) :]: value for key, value in state_dict.items()}
    return state_dict
