"""Fuzz every command with truncated and corrupted inputs: each case must end with exit 0 or 2, never a traceback.

Valid tiny inputs are built once per module (32 px slices, a few series, 1-epoch runs of small models). Each
generated case copies the scenario's inputs into a fresh folder, damages one file (cut at a random point, random
bytes overwritten, or both) and runs the command in-process. Exit 2 must come with one `error:` line that names
the damaged file (or the folder or manifest it belongs to). Hypothesis runs derandomized, so CI sees the same
cases every time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import invoke
from helpers_train import body_slice
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_volumes import write_dicom_series

S = 32  # pixels of every slice
EXAMPLES = 8  # generated cases per scenario (the scenarios below times this is the case count)
SEG_ENCODER = "timm-tf_efficientnet_lite0"  # the smallest smp encoder on offer: 5.6 M parameters with the U-Net
SELECT_ARCH = "test_resnet"
FAST = ["--image-size", "32", "-e", "1", "-b", "2", "--workers", "0", "--quiet", "-g", "0", "--steps-per-epoch", "1"]
GENERATED: list[str] = []  # one entry per case run, for the count in the report


# ------------------------------------------------------------------------------------------ valid inputs


def _volume(n_slices: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hu = np.stack([body_slice(S, rng)[0] for _ in range(n_slices)]).round().astype(np.int16)
    return hu, np.arange(n_slices) * 5.0


def _write_seg_sources(root: Path) -> None:
    """prepare-seg inputs: .npy, DICOM and NIfTI-free images; .npy and .png masks; seg.csv naming them."""
    import imageio.v3 as iio

    rng = np.random.default_rng(1)
    rows = []
    for i in range(6):
        hu, labels = body_slice(S, rng)
        mask_name = f"mask{i}.png" if i % 2 else f"mask{i}.npy"
        if i == 2:
            image_name = write_dicom_series(root / "dicom_slice", hu.round().astype(np.int16)[None], np.zeros(1))[0]
            image_name = image_name.relative_to(root)
        else:
            image_name = f"img{i}.npy"
            np.save(root / image_name, hu.round().astype(np.int16))
        if i % 2:
            iio.imwrite(root / mask_name, labels)
        else:
            np.save(root / mask_name, labels)
        rows.append({"id": f"s{i}", "image": str(image_name), "mask": mask_name, "group": f"g{i // 2}"})
    pd.DataFrame(rows).to_csv(root / "seg.csv", index=False)


def _write_series_sources(root: Path) -> None:
    """prepare-slices / estimate inputs: two .npz volumes and one DICOM series folder, series.csv naming them."""
    rows = []
    for i, name in enumerate(("a", "b", "c")):
        hu, z = _volume(6, seed=10 + i)
        if name == "c":
            write_dicom_series(root / name, hu, z, seed=i)
            path = name
        else:
            np.savez(root / f"{name}.npz", hu=hu, z_mm=z, pixel_spacing=np.array([0.8, 0.8]))
            path = f"{name}.npz"
        rows.append({"series": name, "path": path, "z_L3": 12.0 + i, "split": ("train", "train", "val")[i]})
    pd.DataFrame(rows).to_csv(root / "series.csv", index=False)
    hu, z = _volume(1, seed=20)
    np.savez(root / "one.npz", hu=hu, z_mm=z, pixel_spacing=np.array([0.8, 0.8]))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every valid input, built once through the real commands: sources, prepared data and two trained runs."""
    root = tmp_path_factory.mktemp("pristine")
    (root / "src").mkdir()
    _write_seg_sources(root / "src")
    _write_series_sources(root / "src")
    for args in (
        ["prepare-seg", root / "src" / "seg.csv", root / "seg_data", "--size", S, "--val-frac", "0.34"],
        ["prepare-slices", root / "src" / "series.csv", root / "slice_data", "--workers", "1"],
        ["train-seg", root / "seg_data", root / "runs", "-a", "seg", "--encoder", SEG_ENCODER, *FAST],
        ["train-select", root / "slice_data", root / "runs", "-a", "select", "--arch", SELECT_ARCH, *FAST],
    ):
        result = invoke(args)
        assert result.exit_code == 0, f"{args[0]}: {result.output}{result.stderr}{result.exception!r}"
    return root


# ------------------------------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Scenario:
    target: str  # the file to damage, relative to the case folder
    args: Callable[[Path], list]  # the command line, given the case folder
    names: tuple[str, ...] = ()  # what else an error line may name instead of the target's own name
    output: str | None = None  # an output that must not exist after exit 2


def _estimate(case: Path) -> list:
    return [
        "estimate", case / "src" / "series.csv", case / "src" / "one.npz",
        "--select-model", case / "runs" / "select", "--seg-model", case / "runs" / "seg",
        "-o", case / "est", "--min-slices", "1", "-g", "0", "--no-previews",
    ]  # fmt: skip


def _prepare_seg(case: Path) -> list:
    return ["prepare-seg", case / "src" / "seg.csv", case / "out", "--size", S, "--val-frac", "0.34"]


def _prepare_slices(case: Path) -> list:
    return ["prepare-slices", case / "src" / "series.csv", case / "out", "--workers", "1"]


def _train_seg(case: Path) -> list:
    return ["train-seg", case / "seg_data", case / "new_runs", "-a", "x", "--encoder", SEG_ENCODER, *FAST]


def _train_select(case: Path) -> list:
    return ["train-select", case / "slice_data", case / "new_runs", "-a", "x", "--arch", SELECT_ARCH, *FAST]


def _resume_seg(case: Path) -> list:
    return ["train-seg", case / "seg_data", case / "runs", "-a", "seg", "--encoder", SEG_ENCODER, *FAST, "--resume"]


def _resume_select(case: Path) -> list:
    return [
        "train-select",
        case / "slice_data",
        case / "runs",
        "-a",
        "select",
        "--arch",
        SELECT_ARCH,
        *FAST,
        "--resume",
    ]


def _evaluate_seg(case: Path) -> list:
    return ["evaluate", case / "runs" / "seg", case / "seg_data", "-o", case / "eval", "-g", "0"]


def _evaluate_select(case: Path) -> list:
    return ["evaluate", case / "runs" / "select", case / "slice_data", "-o", case / "eval", "-g", "0"]


SCENARIOS = {
    "prepare-seg csv": Scenario("src/seg.csv", _prepare_seg, output="out"),
    "prepare-seg npy image": Scenario("src/img0.npy", _prepare_seg, ("seg.csv",), output="out"),
    "prepare-seg npy mask": Scenario("src/mask0.npy", _prepare_seg, ("seg.csv",), output="out"),
    "prepare-seg png mask": Scenario("src/mask1.png", _prepare_seg, ("seg.csv",), output="out"),
    "prepare-seg dicom image": Scenario("src/dicom_slice/*", _prepare_seg, ("seg.csv",), output="out"),
    "prepare-slices csv": Scenario("src/series.csv", _prepare_slices, output="out"),
    "prepare-slices npz": Scenario("src/a.npz", _prepare_slices, output="out"),
    "prepare-slices dicom": Scenario("src/c/*", _prepare_slices, ("c",), output="out"),
    "train-seg images": Scenario("seg_data/train_images.npy", _train_seg),
    "train-seg masks": Scenario("seg_data/val_masks.npy", _train_seg),
    "train-select png": Scenario("slice_data/images/train/000003.png", _train_select),
    "train-select csv": Scenario("slice_data/meta/train.csv", _train_select),
    "train-seg --resume checkpoint": Scenario("runs/seg/checkpoint_last.pt", _resume_seg, ("seg",)),
    "train-select --resume checkpoint": Scenario("runs/select/checkpoint_last.pt", _resume_select, ("select",)),
    "evaluate seg checkpoint": Scenario("runs/seg/checkpoint_best.pt", _evaluate_seg, ("seg",), output="eval"),
    "evaluate seg config": Scenario("runs/seg/config.json", _evaluate_seg, ("seg",), output="eval"),
    "evaluate seg npy": Scenario("seg_data/val_images.npy", _evaluate_seg, output="eval"),
    "evaluate select csv": Scenario("slice_data/meta/val.csv", _evaluate_select, output="eval"),
    "evaluate select png": Scenario("slice_data/images/val/000001.png", _evaluate_select, output="eval"),
    "evaluate select checkpoint": Scenario(
        "runs/select/checkpoint_best.pt", _evaluate_select, ("select",), output="eval"
    ),
    "evaluate select config": Scenario("runs/select/config.json", _evaluate_select, ("select",), output="eval"),
    "estimate npz": Scenario("src/a.npz", _estimate, ("qc.csv",)),
    "estimate one-slice npz": Scenario("src/one.npz", _estimate, ("qc.csv",)),
    "estimate dicom": Scenario("src/c/*", _estimate, ("qc.csv", "c")),
    "estimate csv": Scenario("src/series.csv", _estimate),
    "estimate select checkpoint": Scenario("runs/select/checkpoint_best.pt", _estimate, ("select",)),
    "estimate seg config": Scenario("runs/seg/config.json", _estimate, ("seg",)),
}


# ------------------------------------------------------------------------------------------ damage


@dataclass(frozen=True)
class Damage:
    cut: float | None  # keep this fraction of the bytes (None: no cut)
    flips: tuple[tuple[str, float, int], ...]  # (region, where in it, new byte value)

    def apply(self, data: bytes) -> bytes:
        buffer = bytearray(data)
        for region, where, value in self.flips:
            if not buffer:
                break
            # Headers, zip directories and pickles sit at the ends; pixel data in the middle.
            span = min(len(buffer), 256)
            offset = {
                "head": int(where * span),
                "tail": len(buffer) - 1 - int(where * span),
                "any": int(where * len(buffer)),
            }[region]
            buffer[min(max(offset, 0), len(buffer) - 1)] = value
        if self.cut is not None:
            del buffer[int(self.cut * len(buffer)) :]
        return bytes(buffer)


fractions = st.floats(0.0, 1.0, exclude_max=True)
# Any byte, or a printable one: a letter or digit swapped into config.json or a CSV often leaves it parseable
# but wrong (a renamed key, another number), which tests the checks behind the parser.
new_bytes = st.one_of(st.integers(0, 255), st.sampled_from(list(b"09azAZ_-.,")))
flips = st.tuples(st.sampled_from(["head", "tail", "any"]), fractions, new_bytes)
damages = st.one_of(
    st.builds(Damage, cut=fractions, flips=st.just(())),
    st.builds(Damage, cut=st.none(), flips=st.lists(flips, min_size=1, max_size=6).map(tuple)),
    st.builds(Damage, cut=fractions, flips=st.lists(flips, min_size=1, max_size=3).map(tuple)),
)


def _copy_case(pristine: Path, case: Path) -> None:
    """A private copy of the inputs: checkpoints hard-linked (every writer replaces them by rename), the rest copied."""

    def copy(source: str, target: str) -> None:
        if source.endswith(".pt"):
            os.link(source, target)
        else:
            shutil.copy2(source, target)

    for name in ("src", "seg_data", "slice_data", "runs"):
        shutil.copytree(pristine / name, case / name, copy_function=copy)


def _damage(case: Path, target: str, damage: Damage) -> Path:
    # A glob target ("src/c/*") picks the first file of that folder, in name order.
    path = sorted(case.glob(target))[0] if "*" in target else case / target
    data = path.read_bytes()
    path.unlink()  # never write through a hard link into the pristine copy
    path.write_bytes(damage.apply(data))
    return path


@pytest.mark.parametrize("name", list(SCENARIOS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each case runs a command, and the damage is readable
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(damage=damages)
def test_damaged_input_ends_in_exit_0_or_2(pristine: Path, name: str, damage: Damage) -> None:
    scenario = SCENARIOS[name]
    GENERATED.append(name)
    with tempfile.TemporaryDirectory(dir=pristine.parent) as folder:
        case = Path(folder)
        _copy_case(pristine, case)
        damaged = _damage(case, scenario.target, damage)
        result = invoke(scenario.args(case))
        text = (result.output or "") + (result.stderr or "")
        assert result.exit_code in (0, 2), f"{name} {damage}: exit {result.exit_code}\n{text}\n{result.exception!r}"
        assert "Traceback" not in text, text
        if result.exit_code == 0:
            return
        errors = [line for line in (result.stderr or "").splitlines() if line.startswith("error:")]
        assert len(errors) == 1, f"{name} {damage}: not one error line: {result.stderr}"
        names = (damaged.name, *scenario.names)
        assert any(n in errors[0] for n in names), f"{name} {damage}: {errors[0]!r} names none of {names}"
        if scenario.output is not None:
            assert not (case / scenario.output).exists(), f"{name} {damage}: half-written {scenario.output}"


def test_estimate_measures_a_one_slice_volume_with_selection_skipped(pristine: Path, tmp_path: Path) -> None:
    """Issue 11: `estimate one.npz --min-slices 1` ended in a traceback (an empty z-step list in QC)."""
    args = ["estimate", pristine / "src" / "one.npz", "--select-model", pristine / "runs" / "select"]
    result = invoke([*args, "--seg-model", pristine / "runs" / "seg", "-o", tmp_path / "o", "--min-slices", "1"])
    assert result.exit_code == 0, f"{result.output}{result.stderr}{result.exception!r}"
    row = pd.read_csv(tmp_path / "o" / "results.csv").iloc[0]
    assert row["series"] == "one" and row["slice_selection"] == "skipped (one slice)"
    assert row["L3_slice_index"] == 0 and row["L3_z_mm"] == 0.0 and np.isnan(row["L3_zero_crossings"])
    assert row["L3_muscle_area_cm2"] >= 0.0
    assert (tmp_path / "o" / "previews" / "one_L3.png").is_file()


def test_fuzz_ran_enough_cases() -> None:
    """The issue asks for at least 200 generated cases (this runs after the fuzz cases, in file order)."""
    assert len(SCENARIOS) * EXAMPLES >= 200
    if set(GENERATED) == set(SCENARIOS):  # every scenario ran in this session (not a -k selection)
        assert len(GENERATED) >= 200, len(GENERATED)
