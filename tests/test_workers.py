"""One worker default (core/workers.py): the CPU affinity, shared by the ranks torchrun started on the node."""

from __future__ import annotations

import os

import pytest

from bodycomp_cli.core import workers
from bodycomp_cli.engine.config import EngineConfig
from bodycomp_cli.prepare.slices import default_workers as prepare_default


@pytest.fixture
def node(monkeypatch):
    def fake(cores: int, os_cores: int = 64, local_world: str | None = None) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: os_cores)  # the whole machine, more than we may use
        if local_world is None:
            monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)

    return fake


@pytest.mark.parametrize(
    ("cores", "local_world", "per_rank", "loader"),
    [(16, None, 16, 8), (16, "8", 2, 1), (16, "2", 8, 4), (64, "1", 64, 8), (4, None, 4, 2), (1, None, 1, 1),
     (2, "4", 1, 1), (16, "garbage", 16, 8)],
)  # fmt: skip
def test_affinity_shared_by_the_ranks_on_the_node(node, cores, local_world, per_rank, loader):
    node(cores, local_world=local_world)
    assert workers.usable_cores() == cores
    assert workers.cores_per_rank() == per_rank
    assert workers.default_loader_workers() == loader
    assert EngineConfig().resolved_workers() == loader  # train-seg / train-select
    assert EngineConfig(workers=3).resolved_workers() == 3
    assert prepare_default() == per_rank  # prepare-slices' process pool


def test_eight_ranks_on_sixteen_cores_do_not_oversubscribe(node):
    node(16, local_world="8")
    assert 8 * (EngineConfig().resolved_workers() + 1) <= 16  # each rank's workers plus the rank itself


def test_without_affinity_falls_back_to_cpu_count(node, monkeypatch):
    node(16, os_cores=12)
    monkeypatch.delattr(os, "sched_getaffinity")
    assert workers.usable_cores() == 12
