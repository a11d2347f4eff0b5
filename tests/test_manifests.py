"""Manifest reading and split assignment (by series / by group)."""

from __future__ import annotations

import pytest

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.manifests import (
    assign_splits,
    parse_float,
    parse_splits,
    read_manifest,
    refuse_blank_or_duplicate,
    resolve_path,
)


def test_read_manifest_keeps_blanks_as_empty_strings(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("series, path ,z_L3\nA,a.npz,\nB,b.npz, 12.5\n")
    table = read_manifest(path, ["series", "path"])
    assert list(table.columns) == ["series", "path", "z_L3"]
    assert list(table["z_L3"]) == ["", "12.5"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "manifest is empty"),
        ("series,path\n", "no rows under the header"),
        ("series\nA\n", "missing column 'path'"),
    ],
)
def test_read_manifest_refusals(tmp_path, text, message):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(BodycompError, match=message):
        read_manifest(path, ["series", "path"])


def test_cell_checks_name_the_row_and_column(tmp_path):
    manifest = tmp_path / "m.csv"
    with pytest.raises(BodycompError, match=r"m.csv row 3: duplicate series 'A' \(also in row 1\)"):
        refuse_blank_or_duplicate(manifest, ["A", "B", "A"], "series")
    with pytest.raises(BodycompError, match="m.csv row 2: column 'id' is blank"):
        refuse_blank_or_duplicate(manifest, ["A", ""], "id")
    with pytest.raises(BodycompError, match="m.csv row 2: column 'z_L3' is not a number: 'abc'"):
        parse_float(manifest, 1, "z_L3", "abc")
    assert parse_float(manifest, 0, "z_L3", "") is None
    assert parse_float(manifest, 0, "z_L3", "-7.25") == -7.25
    with pytest.raises(BodycompError, match="m.csv row 1: path file not found"):
        resolve_path(manifest, 0, "path", "nowhere.npz")
    (tmp_path / "a.npz").write_bytes(b"")
    assert resolve_path(manifest, 0, "path", "a.npz") == tmp_path / "a.npz"


def test_split_column_values_are_checked(tmp_path):
    manifest = tmp_path / "m.csv"
    assert parse_splits(manifest, ["Train", "val", "test"], ("train", "val", "test")) == ["train", "val", "test"]
    with pytest.raises(BodycompError, match="row 2: column 'split' is 'valid'; use one of train, val, test"):
        parse_splits(manifest, ["train", "valid"], ("train", "val", "test"))
    with pytest.raises(BodycompError, match="row 1: column 'split' is blank"):
        parse_splits(manifest, [""], ("train", "val"))


def test_split_by_series_counts_and_is_seeded():
    series = [f"S{i}" for i in range(20)]
    splits = assign_splits(series, {"val": 0.1, "test": 0.2}, seed=3)
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (14, 2, 4)
    assert splits == assign_splits(series, {"val": 0.1, "test": 0.2}, seed=3)
    assert splits != assign_splits(series, {"val": 0.1, "test": 0.2}, seed=4)


def test_split_by_group_keeps_each_group_whole():
    groups = ["p1", "p1", "p2", "p3", "p3", "p3", "p4", "p5", "p5", "p6"]
    for seed in range(10):
        splits = assign_splits(groups, {"val": 0.34}, seed=seed)
        by_group: dict[str, set[str]] = {}
        for group, split in zip(groups, splits, strict=True):
            by_group.setdefault(group, set()).add(split)
        assert all(len(found) == 1 for found in by_group.values())
        assert sum(found == {"val"} for found in by_group.values()) == 2  # round(0.34 * 6 groups)


def test_tiny_sets_still_get_a_val_group_but_keep_train():
    assert sorted(assign_splits(["a", "b"], {"val": 0.1}, seed=0)) == ["train", "val"]
    assert assign_splits(["a"], {"val": 0.1}, seed=0) == ["train"]
    assert assign_splits(["a", "b"], {"val": 0.0}, seed=0) == ["train", "train"]
    with pytest.raises(BodycompError, match="leave nothing for train"):
        assign_splits(["a", "b"], {"val": 0.6, "test": 0.5}, seed=0)
