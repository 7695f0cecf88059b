"""Shard formats of `facepcl embed`: exact round trips, Arrow schema, metadata, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facepcl._utils.atomic import atomic_write as write_atomic
from facepcl.export._formats import FORMATS, RowBuffer, arrow_schema, from_arrow, get_format

DIM = 32
META = {"model_id": "tiny", "revision": None, "config_hash": "abc", "feature_dim": DIM,
        "features": ["face", "pose", "trunk"], "preprocess": {"crop_size": 64}}


def block(rng: np.random.Generator, n: int, first_item: int = 0, features=("face", "pose", "trunk")) -> dict:
    b = {
        "item": np.arange(first_item, first_item + n),
        "path": [f"dir/ïmg {i},x.jpg" for i in range(first_item, first_item + n)],  # non-ASCII, comma
        "frame": rng.integers(-1, 100, n),
        "timestamp": np.where(rng.random(n) < 0.5, np.nan, rng.random(n) * 10),
        "face_index": rng.integers(0, 5, n),
        "width": rng.integers(1, 4000, n),
        "height": rng.integers(1, 4000, n),
        "bbox": rng.normal(size=(n, 4)).astype(np.float32),
        "kps": rng.normal(size=(n, 5, 2)).astype(np.float32),
        "det_score": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)).astype(np.float32),
    }
    for f in features:
        b[f] = rng.normal(size=(n, DIM)).astype(np.float32)
    return b


def assert_same(cols: dict, expected: dict) -> None:
    assert cols.keys() == expected.keys()
    assert list(cols["path"]) == list(expected["path"])
    for k in expected:
        if k != "path":
            assert np.asarray(cols[k]).dtype == np.asarray(expected[k]).dtype, k
            np.testing.assert_array_equal(cols[k], expected[k], err_msg=k)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_round_trip_is_exact(fmt: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    buf = RowBuffer(["face", "pose", "trunk"], DIM)
    buf.add(block(rng, 3))
    buf.add({"path": []})  # an image without faces adds nothing
    buf.add(block(rng, 4, first_item=3))
    assert len(buf) == 7
    cols = buf.take()
    assert len(buf) == 0
    assert cols["kps"].shape == (7, 10)
    assert cols["face"].shape == (7, DIM)
    assert cols["face_index"].dtype == np.int32
    f = get_format(fmt)
    dest = str(tmp_path / f"part{f.suffix}")
    f.write(cols, dest, ["face", "pose", "trunk"], DIM, META)
    back, meta = f.read(dest)
    assert meta == META
    assert f.metadata(dest) == META
    assert_same(back, cols)
    sub, _ = f.read(dest, ["item", "path"])
    assert set(sub) == {"item", "path"}
    assert list(sub["path"]) == cols["path"]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_empty_shard_and_feature_subset(fmt: str, tmp_path: Path) -> None:
    f = get_format(fmt)
    empty = RowBuffer(["pose"], DIM).take()
    dest = str(tmp_path / f"empty{f.suffix}")
    f.write(empty, dest, ["pose"], DIM, META)
    back, _ = f.read(dest)
    assert_same(back, empty)
    assert "face" not in back
    assert back["pose"].shape == (0, DIM)


def test_one_line_readers(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    f = get_format("parquet")
    for shard in range(2):
        buf = RowBuffer(["face"], DIM)
        buf.add(block(rng, 5, first_item=5 * shard, features=("face",)))
        f.write(buf.take(), str(tmp_path / f"part-r00000-00000{shard}.parquet"), ["face"], DIM, META)
    # bookkeeping files next to the shards must not disturb dataset readers
    (tmp_path / "_errors.jsonl").write_text('{"x": 1}\n')
    (tmp_path / "_manifests").mkdir()
    (tmp_path / "_manifests" / "part-r00000-000000.json").write_text("{}")
    (tmp_path / ".part-r00000-000002.parquet.tmp-123").write_bytes(b"half a file")
    table = pq.read_table(tmp_path)
    assert table.num_rows == 10
    assert table.column("item").to_pylist() == list(range(10))
    assert table.schema.field("face").type == pa.list_(pa.float32(), DIM)
    assert table.schema.field("kps").type == pa.list_(pa.float32(), 10)
    assert json.loads(table.schema.metadata[b"facepcl"]) == META
    face = np.stack(table.column("face").to_numpy(zero_copy_only=False))
    assert face.shape == (10, DIM)
    assert face.dtype == np.float32
    assert from_arrow(table)["kps"].shape == (10, 10)


def test_schema_names_and_order() -> None:
    names = arrow_schema(["trunk", "face"], 8).names
    assert names == ["item", "path", "frame", "timestamp", "face_index", "width", "height", "bbox", "kps",
                     "det_score", "yaw", "pitch", "roll", "sharpness", "track_id", "face", "trunk"]


def test_write_atomic_leaves_nothing_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"

    def boom(tmp: str) -> None:
        Path(tmp).write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(str(dest), boom)
    assert os.listdir(tmp_path) == []
    write_atomic(str(dest), lambda tmp: Path(tmp).write_bytes(b"whole"))
    assert dest.read_bytes() == b"whole"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_write_atomic_gives_files_the_usual_mode(tmp_path: Path) -> None:
    # safetensors creates owner-only files; a model folder must be readable like any other file.
    dest = tmp_path / "model.bin"

    def private(tmp: str) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)

    mask = os.umask(0o022)
    try:
        write_atomic(str(dest), private)
    finally:
        os.umask(mask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~mask


def test_row_buffer_rejects_ragged_blocks() -> None:
    rng = np.random.default_rng(2)
    b = block(rng, 3)
    b["det_score"] = b["det_score"][:2]
    with pytest.raises(ValueError, match="det_score"):
        RowBuffer(["face", "pose", "trunk"], DIM).add(b)
    with pytest.raises(ValueError, match="unknown format"):
        get_format("csv")
