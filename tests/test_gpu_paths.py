"""GPU and multi-process code paths, caught on the CPU: devices other than the CPU (`meta`), SyncBatchNorm
conversion, DataParallel's replica threads under autocast, host snapshots, a failing writer, RANK/WORLD_SIZE
for estimate and evaluate, and the process-wide settings a run must leave as it found them."""

from __future__ import annotations

import concurrent.futures
import copy
import ctypes
import importlib
import os
import re
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from conftest import assert_user_error, invoke
from helpers_train import make_seg_data

from bodycomp_cli.core.amp import AmpPolicy
from bodycomp_cli.engine import devices, memory, trainer
from bodycomp_cli.engine.config import EngineConfig
from bodycomp_cli.engine.devices import AutocastDataParallel, DeviceSetup, convert_sync_batchnorm, unwrap_model
from bodycomp_cli.engine.seeding import deterministic_algorithms, seed_epoch
from bodycomp_cli.engine.trainer import Trainer, host_copy
from bodycomp_cli.engine.writer import EpochWriter
from bodycomp_cli.inference.placement import choose_placement
from bodycomp_cli.tasks.segmentation import SegmentationSettings, SegmentationTask, train_segmentation
from bodycomp_cli.tasks.slice_selection import SliceSelectionSettings, SliceSelectionTask

torch.set_num_threads(1)
META = torch.device("meta")
ROOT = Path(__file__).resolve().parent.parent


# ----- device consistency (issue 12 #1) ---------------------------------------------------------------------
def _tensors(value):
    return [value] if torch.is_tensor(value) else [t for v in value.values() for t in _tensors(v)]


def test_every_task_keeps_loss_and_validation_sums_on_the_batch_device(monkeypatch):
    """Trainer._reduce concatenates the sums for one all_reduce: a CPU tensor among CUDA ones crashes DDP.

    "rows:" entries are per-slice tables that the trainer gathers as objects on the CPU; the tasks move them
    there themselves. meta tensors have no data to move, so .cpu() of one gives zeros of its shape here.
    """
    to_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda t: torch.zeros(t.shape, dtype=t.dtype) if t.is_meta else to_cpu(t))
    seg = SegmentationTask(SegmentationSettings())
    seg_batch = {
        "image": torch.empty(3, 1, 8, 8, device=META),
        "mask": torch.zeros(3, 8, 8, dtype=torch.long, device=META),
        "index": torch.arange(3, device=META),
    }
    select = SliceSelectionTask(SliceSelectionSettings(levels=["L3", "T5"]))
    select_batch = {
        "image": torch.empty(3, 1, 8, 8, device=META),
        "target": torch.empty(3, 2, device=META),
        "valid": torch.ones(3, 2, device=META),
        "offset_mm": torch.empty(3, 2, device=META, dtype=torch.float64),
        "index": torch.arange(3, device=META),
    }
    for task, outputs, batch in (
        (seg, torch.empty(3, 4, 8, 8, device=META), seg_batch),
        (select, torch.empty(3, 2, device=META), select_batch),
    ):
        assert task.loss(outputs, batch).device == META
        stats = task.validation_stats(outputs, batch)
        sums = {key: value for key, value in stats.items() if not key.startswith(trainer.ROWS)}
        assert sums and all(t.device == META for t in _tensors(sums)), {k: v.device for k, v in stats.items()}
        assert all(value.device.type == "cpu" and len(value) == 3 for k, value in stats.items() if k not in sums)


# ----- SyncBatchNorm conversion (issue 12 #2) ---------------------------------------------------------------
def _activations(model: torch.nn.Module) -> dict[str, str]:
    kinds = (torch.nn.ReLU, torch.nn.SiLU, torch.nn.GELU, torch.nn.LeakyReLU, torch.nn.Hardswish, torch.nn.Dropout)
    return {name: type(m).__name__ for name, m in model.named_modules() if isinstance(m, kinds)}


@pytest.mark.parametrize(
    "build",
    [
        lambda: smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=4),  # train-seg's default
        lambda: timm.create_model("densenet121", pretrained=False, in_chans=1, num_classes=1),  # train-select's
        lambda: smp.Unet("tu-efficientnet_b0", encoder_weights=None, in_channels=1, classes=4),  # BatchNormAct2d
    ],
    ids=["smp-unet-resnet34", "timm-densenet121", "smp-unet-tu-efficientnet_b0"],
)
def test_sync_batchnorm_conversion_keeps_every_activation_and_the_output(build):
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():  # running statistics that are not the defaults, so a lost copy would show
        for layer in model.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.running_mean.uniform_(-0.1, 0.1)
                layer.running_var.uniform_(0.5, 1.5)
    before = _activations(model)
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        expected = model(images)
    converted = convert_sync_batchnorm(copy.deepcopy(model)).eval()
    assert not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(m, torch.nn.SyncBatchNorm)
        for m in converted.modules()
    )
    assert before and _activations(converted) == before
    assert set(converted.state_dict()) == set(model.state_dict())  # checkpoints load into the plain model
    with torch.no_grad():
        torch.testing.assert_close(converted(images), expected, rtol=0, atol=0)


@pytest.mark.parametrize("build", [lambda: timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=1),
                                   lambda: smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=2)],
                         ids=["timm-resnet18", "smp-unet-resnet18"])  # fmt: skip
def test_low_memory_recomputation_counts_each_batch_once_in_sync_batchnorm(build):
    """--low-memory then DDP's SyncBatchNorm conversion: the running statistics of one step match a plain model."""
    torch.manual_seed(0)
    plain = build()
    low = copy.deepcopy(plain)
    memory.enable_low_memory(low)
    low = convert_sync_batchnorm(low)
    memory.keep_batchnorm_stats_in_recomputation(low)  # what the Trainer does after wrapping
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in low.modules())
    images = torch.rand(2, 1, 64, 64)
    for model in (plain, low):
        model.train()
        model(images).square().mean().backward()
    low_buffers = dict(low.named_buffers())
    for name, value in plain.named_buffers():
        torch.testing.assert_close(low_buffers[name], value, rtol=0, atol=1e-6, msg=name)


# ----- DataParallel under autocast ---------------------------------------------------------------------------
def test_dataparallel_replicas_run_under_the_chosen_autocast_dtype(monkeypatch):
    """torch's parallel_apply runs each replica in a new thread and re-enters autocast with the default dtype."""

    def threaded_apply(modules, inputs, kwargs_tup=None, devices=None):  # what torch does, on the CPU
        enabled, results = torch.is_autocast_enabled("cpu"), [None] * len(modules)

        def work(i):
            with torch.autocast("cpu", enabled=enabled):
                results[i] = modules[i](*inputs[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(modules))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    data_parallel_module = importlib.import_module("torch.nn.parallel.data_parallel")  # the name is also a function
    monkeypatch.setattr(data_parallel_module, "parallel_apply", threaded_apply)
    layer = torch.nn.Linear(4, 4)
    policy = AmpPolicy("cpu", torch.bfloat16)
    model = AutocastDataParallel(layer, device_ids=[], amp=policy)
    with policy.autocast():
        outputs = model.parallel_apply([layer, layer], [(torch.rand(2, 4),), (torch.rand(2, 4),)], None)
    assert [out.dtype for out in outputs] == [torch.bfloat16, torch.bfloat16]
    wrapped = devices.wrap_model(layer, DeviceSetup(torch.device("cpu"), n_gpus=2), policy)
    assert isinstance(wrapped, AutocastDataParallel) and wrapped.amp == policy


# ----- snapshots in host memory (issue 12 #6) --------------------------------------------------------------
def _bare_trainer(device: torch.device) -> Trainer:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(2, 1, 5, 5, device=device)).sum().backward()
    optimizer.step()
    bare = Trainer.__new__(Trainer)
    bare.task, bare.config, bare.model, bare.optimizer = SimpleNamespace(name="t"), {}, model, optimizer
    bare.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    bare.scaler, bare.history, bare.best = None, [], {}
    bare.setup = DeviceSetup(device, 0)
    return bare


def test_checkpoint_snapshot_goes_to_host_memory(monkeypatch):
    # meta tensors have no data to copy: stand in for the copy, and check every tensor is routed through it
    monkeypatch.setattr(trainer, "_to_host", lambda tensor, pin: torch.zeros_like(tensor, device="cpu"))
    snapshot = _bare_trainer(META).checkpoint(1)
    tensors = _tensors({"model": snapshot["model"], **snapshot["optimizer"]["state"]})
    assert len(tensors) == 2 + 5 + 4 * 3  # conv, BatchNorm (3 buffers), Adam's step and 2 moments per parameter
    assert all(t.device.type == "cpu" for t in tensors)


def test_host_snapshot_is_an_independent_copy():
    live = _bare_trainer(torch.device("cpu"))
    snapshot = live.checkpoint(1)
    state = live.optimizer.state_dict()
    for name, value in live.model.state_dict().items():
        assert torch.equal(snapshot["model"][name], value) and snapshot["model"][name].data_ptr() != value.data_ptr()
    assert snapshot["optimizer"]["param_groups"] == state["param_groups"]
    assert isinstance(snapshot["optimizer"]["param_groups"][0]["betas"], tuple)
    with torch.no_grad():
        for parameter in live.model.parameters():
            parameter.add_(1.0)
    assert not torch.equal(snapshot["model"]["0.weight"], live.model.state_dict()["0.weight"])
    assert host_copy({"a": [1, (2.5, "x")]}) == {"a": [1, (2.5, "x")]}


def test_only_the_final_epoch_hands_its_live_state_to_the_writer(tmp_path, monkeypatch):
    # Issue 15 goal 5: nothing trains after the final epoch, so its checkpoint is saved without a 293 MB copy
    # (unet/resnet34 with Adam); every earlier one is a copy that training cannot change under the writer.
    shared: dict[int, bool] = {}
    original_submit = EpochWriter.submit

    def submit(self, epoch, checkpoint, rows, best):
        live = {name: t.data_ptr() for name, t in unwrap_model(running[0].model).state_dict().items()}
        shared[epoch] = all(checkpoint["model"][name].data_ptr() == live[name] for name in live)
        assert all(
            torch.equal(checkpoint["model"][n], t) for n, t in unwrap_model(running[0].model).state_dict().items()
        )
        return original_submit(self, epoch, checkpoint, rows, best)

    running: list[Trainer] = []
    original_fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self: running.append(self) or original_fit(self))
    monkeypatch.setattr(EpochWriter, "submit", submit)
    data = make_seg_data(tmp_path / "data", n_train=4, n_val=2, size=32)
    engine = EngineConfig(epochs=3, batch_size=2, workers=0, quiet=True, gpus=0, steps_per_epoch=1, tensorboard=False)
    run_dir = train_segmentation(
        data, tmp_path / "models", SegmentationSettings(encoder="resnet18", image_size=32), engine
    )
    assert shared == {1: False, 2: False, 3: True}
    saved = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)
    assert saved["epoch"] == 3
    assert all(torch.equal(saved["model"][n], t) for n, t in unwrap_model(running[0].model).state_dict().items())


# ----- a failing writer (issue 12 #7) -------------------------------------------------------------------------
def test_a_failed_save_stops_training_at_the_next_step(tmp_path, monkeypatch):
    def disk_full(path, checkpoint):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("bodycomp_cli.engine.writer.save_checkpoint", disk_full)
    steps: list[int] = []
    original_step = Trainer.train_step

    def counted_step(self, batch):
        steps.append(len(steps) + 1)
        if len(steps) == 4:  # epoch 2's first step: let the background save of epoch 1 finish (and fail) first
            concurrent.futures.wait([self.writer._pending])
        return original_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", counted_step)
    data = make_seg_data(tmp_path / "data", n_train=4, n_val=2, size=32)
    options = ["--encoder", "resnet18", "--image-size", "32", "-b", "2", "--workers", "0", "--quiet"]
    result = invoke(
        ["train-seg", data, tmp_path / "models", "-a", "full", "-e", "3", "--steps-per-epoch", "3"] + options
    )
    assert_user_error(result, "saving the run files failed", "No space left on device", "training stopped")
    assert steps == [1, 2, 3, 4]  # stopped after the step that saw the failure, not at the epoch's end
    assert len((result.stderr or result.output).strip().splitlines()) == 1


# ----- estimate and evaluate under RANK / WORLD_SIZE (issue 12 #8) -------------------------------------------
def _fake_run(folder: Path, task: SegmentationTask | SliceSelectionTask) -> Path:
    """A run folder whose config.json is a real one; the checkpoint is never read (the refusal comes first)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(task.run_config().to_json())
    (folder / "checkpoint_best.pt").write_bytes(b"")
    return folder


def test_evaluate_refuses_a_multi_process_launch_with_one_line(tmp_path, monkeypatch):
    # estimate shards its series over the ranks (tests/test_estimate_ranks.py); evaluate runs as one process.
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    seg = _fake_run(tmp_path / "seg", SegmentationTask(SegmentationSettings()))
    (tmp_path / "data").mkdir()
    result = invoke(["evaluate", seg, tmp_path / "data"])
    assert_user_error(result, "one of 2 processes", "start them without torchrun")


def test_estimate_runs_as_one_process_under_a_one_process_launcher(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not torch.distributed.is_initialized()
    setup = choose_placement(None, False)  # (with --amp, a CPU with bf16 instructions adds ", bf16 autocast")
    assert (setup.device, setup.n_gpus) == ("cpu", 0) and setup.description == "the CPU"
    assert choose_placement(0).device == "cpu"  # -g is a single-process setting, accepted here


# ----- the torch floor (issue 12 #9) ---------------------------------------------------------------------------
def test_torch_floor_has_the_amp_api_the_engine_uses():
    text = (ROOT / "pyproject.toml").read_text()
    floors = {name: tuple(int(x) for x in version.split(".")) for name, version in
              re.findall(r'"(torch|torchvision)>=([\d.]+)"', text)}  # fmt: skip
    assert floors["torch"] >= (2, 3)  # torch.amp.GradScaler(device): 2.3
    assert floors["torchvision"] >= (0, 18)  # the torchvision built for torch 2.3
    assert torch.amp.GradScaler("cpu").is_enabled()


# ----- process-wide state (issue 11 item 6) ---------------------------------------------------------------------
def test_a_run_leaves_process_wide_settings_as_it_found_them(tmp_path, monkeypatch):
    calls: list[str] = []
    real_cdll = ctypes.CDLL

    def cdll(name, *args, **kwargs):
        if name.startswith("libc."):
            calls.append(name)
        return real_cdll(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    torch.backends.cudnn.benchmark = False
    filters = list(warnings.filters)
    data = make_seg_data(tmp_path / "data", n_train=4, n_val=2, size=32)
    settings = SegmentationSettings(encoder="resnet18", image_size=32)
    for deterministic in (True, False):
        engine = EngineConfig(epochs=1, batch_size=2, workers=0, quiet=True, low_memory=True, gpus=0,
                              deterministic=deterministic, steps_per_epoch=1, tensorboard=False)  # fmt: skip
        train_segmentation(data, tmp_path / "models", settings, engine, name=f"d{deterministic}")
        assert torch.are_deterministic_algorithms_enabled() is False
        assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is False
        assert warnings.filters == filters
    assert calls == []  # malloc's setting belongs to the CLI entry (train-* --low-memory), not the library

    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()


def test_cli_low_memory_sets_malloc_at_the_entry(tmp_path, monkeypatch):
    calls: list[tuple] = []
    real_cdll = ctypes.CDLL

    def cdll(name, *args, **kwargs):
        if name.startswith("libc."):
            return SimpleNamespace(mallopt=lambda *values: calls.append(values))
        return real_cdll(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    data = make_seg_data(tmp_path / "data", n_train=4, n_val=2, size=32)
    options = ["--encoder", "resnet18", "--image-size", "32", "-b", "2", "--workers", "0", "--quiet", "-e", "1"]
    result = invoke(["train-seg", data, tmp_path / "models", "--low-memory", "--steps-per-epoch", "1", *options])
    assert result.exit_code == 0, result.output
    assert calls == [(memory.M_MMAP_THRESHOLD, memory.MMAP_THRESHOLD_BYTES)]


def test_cli_keeps_freed_memory_unless_low_memory_or_the_user_chose(trained, tmp_path, monkeypatch):
    calls: list[tuple] = []
    real_cdll = ctypes.CDLL

    def cdll(name, *args, **kwargs):
        if name.startswith("libc."):
            return SimpleNamespace(mallopt=lambda *values: calls.append(values) or 1)
        return real_cdll(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    for name in [k for k in os.environ if k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "LD_PRELOAD")]:
        monkeypatch.delenv(name)
    models = ["--select-model", trained["select"], "--seg-model", trained["seg"], "-g", "0", "--no-previews"]
    result = invoke(["estimate", trained["series_csv"], *models, "-o", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    kept = [(memory.M_MMAP_MAX, 0), (memory.M_TRIM_THRESHOLD, memory.NEVER_TRIM)]
    assert calls == kept
    calls.clear()
    result = invoke(["evaluate", trained["seg"], trained["root"] / "seg_data", "-o", tmp_path / "ev", "-g", "0"])
    assert result.exit_code == 0, result.output
    assert calls == kept
    calls.clear()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # the user's own malloc settings are left alone
    result = invoke(["estimate", trained["series_csv"], *models, "-o", tmp_path / "out2"])
    assert result.exit_code == 0 and calls == [], result.output


# ----- seeding under DDP ---------------------------------------------------------------------------------------
def test_each_rank_draws_its_own_stream_and_rank_0_the_single_process_one():
    def draws(rank: int) -> torch.Tensor:
        seed_epoch(7, 3, rank)
        return torch.rand(4)

    assert torch.equal(draws(0), draws(0))
    assert not torch.equal(draws(0), draws(1)) and not torch.equal(draws(1), draws(2))
    seed_epoch(7, 3)
    assert torch.equal(torch.rand(4), draws(0))
