"""Read and check the next series in worker processes while the current one runs through the models.

A torch DataLoader over the series (batch_size=None: one series per item) with `workers` processes, each
reading prefetch_factor series ahead; series come back in input order. Their voxels come back as tensors,
which cross to the main process in shared memory: a 120-slice 512 x 512 series, pickled through the pipe
as an array, cost the main process 0.26 s, most of what reading it costs; as a tensor, 0.03 s. A series
that cannot be read or fails QC comes back with its reason, as it would in-process, so it becomes that
series' qc.csv row. With workers=0 every series is read in this process when its turn comes (no read-ahead)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.inputs import SeriesInput, read_series
from bodycomp_cli.estimate.qc import QcSettings, qc_failure
from bodycomp_cli.io.dicom_tree import DicomSeries
from bodycomp_cli.io.volumes import Volume

SERIES_AHEAD_PER_WORKER = 2  # each worker holds at most this many read volumes waiting (memory bound)


@dataclass
class SeriesRead:
    """One input, read and checked: its volume, or the reason it is skipped (reason is None when it passed)."""

    entry: SeriesInput
    volume: Volume | None
    dicom: DicomSeries | None
    reason: str | None


def read_and_check(entry: SeriesInput, qc: QcSettings) -> SeriesRead:
    """Read one series and run QC; a refusal (filtered, unreadable, mixed or tilted series) is its reason."""
    dicom = entry.dicom
    try:
        volume, dicom = read_series(entry, qc)
        reason = qc_failure(volume, qc)
    except BodycompError as error:  # skipped, not fatal: the run goes on
        return SeriesRead(entry, None, dicom, str(error))
    return SeriesRead(entry, None if reason else volume, dicom, reason)


class _SeriesDataset(Dataset):
    def __init__(self, entries: Sequence[SeriesInput], qc: QcSettings) -> None:
        self.entries, self.qc = list(entries), qc

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> SeriesRead:
        read = read_and_check(self.entries[index], self.qc)
        if read.volume is not None:  # a tensor crosses to the main process in shared memory, an array by copy
            read.volume = dataclasses.replace(read.volume, hu=torch.from_numpy(read.volume.hu))
        return read


def _back_to_numpy(read: SeriesRead) -> SeriesRead:
    if read.volume is not None and isinstance(read.volume.hu, torch.Tensor):
        read.volume = dataclasses.replace(read.volume, hu=read.volume.hu.numpy())  # no copy: the shared pages
    return read


def _as_is(item: SeriesRead) -> SeriesRead:
    return item  # no collation: the default would turn the volume's arrays into tensors


def read_ahead(entries: Sequence[SeriesInput], qc: QcSettings, workers: int) -> Iterator[SeriesRead]:
    """Each entry read and checked, in input order, `workers` processes reading ahead (0: in this process)."""
    if not entries:
        return iter(())
    if workers == 0:
        return (read_and_check(entry, qc) for entry in entries)
    loader = DataLoader(
        _SeriesDataset(entries, qc),
        batch_size=None,
        shuffle=False,
        num_workers=min(workers, len(entries)),
        collate_fn=_as_is,
        prefetch_factor=SERIES_AHEAD_PER_WORKER,
    )
    return (_back_to_numpy(read) for read in loader)
