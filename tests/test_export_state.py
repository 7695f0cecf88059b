"""Resume bookkeeping of `facepcl embed`: commits, scans after crashes, settings checks, merged errors."""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from facepcl._utils.folders import FolderLockedError
from facepcl.export import _dataset, read_embeddings, read_errors
from facepcl.export._folder import ExportFolder
from facepcl.export._formats import RowBuffer
from facepcl.export._layout import any_shards
from facepcl.export._resume import skip_done
from facepcl.export._types import Cursor, ExportStateError, Stats
from facepcl.io.inputs import InputItem, iter_inputs
from facepcl.io.stream import iter_units

DIM = 4
META = {"feature_dim": DIM, "features": ["face"]}


def rows(items: list[int]) -> dict:
    buf = RowBuffer(["face"], DIM)
    n = len(items)
    buf.add({"item": np.array(items), "path": [f"p{i}.jpg" for i in items], "frame": np.full(n, -1),
             "timestamp": np.full(n, np.nan), "face_index": np.zeros(n), "width": np.ones(n), "height": np.ones(n),
             "bbox": np.zeros((n, 4)), "kps": np.zeros((n, 10)), "det_score": np.ones(n),
             "face": np.tile(np.array(items, np.float32)[:, None], (1, DIM))})
    return buf.take()


def cursor(item: int, frame: int = -1, complete: bool = True) -> Cursor:
    return Cursor(item, frame, complete, f"d{item}", f"p{item}.jpg")


def commit(state: ExportFolder, shard: int, start: Cursor, end: Cursor, items: list[int], errors=()) -> None:
    state.commit(shard, rows(items), ["face"], DIM, META, start, end, Stats(inputs=len(items), faces=len(items)),
                 list(errors))


@pytest.mark.parametrize("fmt", ["parquet", "npz", "safetensors"])
def test_commit_then_scan(tmp_path: Path, fmt: str) -> None:
    state = ExportFolder(str(tmp_path), fmt, 0)
    os.makedirs(tmp_path / "_manifests")
    assert state.resume().next_shard == 0
    commit(state, 0, Cursor(), cursor(2), [0, 2])
    commit(state, 1, cursor(2), cursor(6, 30, complete=False), [4, 6])
    point = state.resume()
    assert point.next_shard == 2
    assert point.cursor == cursor(6, 30, complete=False)
    assert point.rows == 4
    assert point.done.inputs == 4
    assert read_embeddings(tmp_path).column("item").to_pylist() == [0, 2, 4, 6]


def test_crash_leftovers_are_cleaned_and_bad_folders_refused(tmp_path: Path) -> None:
    out = str(tmp_path)
    state = ExportFolder(out, "parquet", 0)
    os.makedirs(tmp_path / "_manifests")
    commit(state, 0, Cursor(), cursor(0), [0])
    commit(state, 1, cursor(0), cursor(1), [1])
    # killed between the manifest and the data rename of shard 2, with temporaries lying around
    (tmp_path / "_manifests" / "part-r00000-000002.json").write_text(json.dumps({"file": "x"}))
    (tmp_path / ".part-r00000-000002.parquet.tmp-999").write_bytes(b"half")
    (tmp_path / "_manifests" / ".part-r00000-000003.json.tmp-999").write_bytes(b"half")
    (tmp_path / ".part-r00001-000000.parquet.tmp-999").write_bytes(b"another rank's")
    point = state.resume()
    assert point.next_shard == 2
    assert point.cursor == cursor(1)
    assert sorted(os.listdir(tmp_path)) == [".part-r00001-000000.parquet.tmp-999", "_manifests",
                                            "part-r00000-000000.parquet", "part-r00000-000001.parquet"]
    assert sorted(os.listdir(tmp_path / "_manifests")) == ["part-r00000-000000.json", "part-r00000-000001.json"]
    # a shard missing from the middle would be a gap: refused
    os.rename(tmp_path / "part-r00000-000000.parquet", tmp_path / "keep.bin")
    os.rename(tmp_path / "_manifests" / "part-r00000-000000.json", tmp_path / "keep.json")
    with pytest.raises(ExportStateError, match=r"part-r00000-000000 of .* is missing"):
        state.resume()
    # a data file without its manifest: what it covers is unknown, refused
    os.rename(tmp_path / "keep.bin", tmp_path / "part-r00000-000000.parquet")
    with pytest.raises(ExportStateError, match="has no manifest"):
        state.resume()
    os.rename(tmp_path / "keep.json", tmp_path / "_manifests" / "part-r00000-000000.json")
    assert state.resume().next_shard == 2
    with pytest.raises(ExportStateError, match="not a npz shard"):
        ExportFolder(out, "npz", 0).resume()


def test_settings_check(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    settings = {"config_hash": "a", "features": ["face"], "world_size": 1}
    state = ExportFolder(out)
    state.write_settings(settings, resume=False)
    state.write_settings(settings, resume=False)  # no shards yet: starting again is fine
    commit(state, 0, Cursor(), cursor(0), [0])
    with pytest.raises(ExportStateError, match="--resume"):
        state.write_settings(settings, resume=False)
    ExportFolder(out, rank=1).write_settings(settings, resume=False)  # rank 1 of the same run starts fresh
    state.write_settings(settings, resume=True)
    with pytest.raises(ExportStateError, match="features: was \\['face'\\], now \\['pose'\\]"):
        state.write_settings({**settings, "features": ["pose"]}, resume=True)
    (Path(out) / "_run.json").write_text('{"config_hash": "a", "feat')  # a torn or garbled file
    with pytest.raises(ExportStateError, match=r"_run.json is damaged .*run with --overwrite or restore it"):
        state.write_settings(settings, resume=True)


def test_one_writer_per_rank(tmp_path: Path) -> None:
    os.makedirs(tmp_path / "_manifests")
    a, b = ExportFolder(str(tmp_path), "parquet", 0), ExportFolder(str(tmp_path), "parquet", 0)
    a.lock()
    try:
        with pytest.raises(FolderLockedError, match="writing this rank 0 of a facepcl embed export") as info:
            b.lock()
        assert "resuming" not in str(info.value)  # the same message whether or not --resume was given
        ExportFolder(str(tmp_path), "parquet", 1).lock()  # other ranks are independent
    finally:
        a.unlock()
    b.lock()
    b.unlock()


def test_errors_and_index_merge_ranks_in_input_order(tmp_path: Path) -> None:
    out = str(tmp_path)
    os.makedirs(tmp_path / "_manifests")
    err = lambda i, frame=-1: {"item": i, "path": f"p{i}.jpg", "frame": frame, "kind": "no_face", "reason": "r"}  # noqa: E731
    r0, r1 = ExportFolder(out, "npz", 0), ExportFolder(out, "npz", 1)
    commit(r0, 0, Cursor(), cursor(2), [0], [err(2)])
    commit(r0, 1, cursor(2), cursor(4), [4], [])
    commit(r1, 0, Cursor(), cursor(3, 5, complete=False), [1], [err(3, 2), err(3, 5)])
    commit(r1, 1, cursor(3, 5, complete=False), cursor(5), [5], [err(5)])
    assert _dataset.write_errors(out) == 4
    lines = [json.loads(x) for x in (tmp_path / "_errors.jsonl").read_text().splitlines()]
    assert [(x["item"], x["frame"]) for x in lines] == [(2, -1), (3, 2), (3, 5), (5, -1)]
    assert read_errors(out) == lines
    _dataset.write_index(out, "npz")
    with open(tmp_path / "index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    assert [int(r["item"]) for r in index] == [0, 1, 4, 5]
    assert [r["file"] for r in index] == ["part-r00000-000000.npz", "part-r00001-000000.npz",
                                          "part-r00000-000001.npz", "part-r00001-000001.npz"]
    stats, n = _dataset.dataset_totals(out)
    assert n == 4
    assert stats.inputs == 4


def test_resume_refuses_changed_inputs(tmp_path: Path) -> None:
    for name in "abcd":
        (tmp_path / f"{name}.jpg").write_bytes(b"x")
    items = list(iter_inputs([str(tmp_path)]))
    done = Cursor(1, -1, True, items[1].digest, items[1].path)
    assert [it.index for it in skip_done(iter(items), done)] == [2, 3]
    partial = Cursor(1, 40, False, items[1].digest, items[1].path)
    assert [it.index for it in skip_done(iter(items), partial)] == [1, 2, 3]
    (tmp_path / "a0.jpg").write_bytes(b"x")  # a file inserted before the cursor shifts everything
    with pytest.raises(ExportStateError, match="inputs differ"):
        list(skip_done(iter_inputs([str(tmp_path)]), done))
    with pytest.raises(ExportStateError, match="fewer inputs"):
        list(skip_done(iter(items[:1]), done))
    # a file renamed before the cursor: the input at the cursor has the same name, but not the same stream
    os.rename(tmp_path / "a0.jpg", tmp_path / "a1.jpg")
    with pytest.raises(ExportStateError) as info:
        list(skip_done(iter_inputs([str(tmp_path)]), Cursor(4, -1, True, "other", items[3].path)))
    assert f"is still {items[3].path!r}, but a file before it was added, removed or renamed" in str(info.value)
    assert "it was '" not in str(info.value)
    # inputs added at the end are fine: they continue the same stream
    more = list(iter_inputs([str(tmp_path / f"{n}.jpg") for n in "abcd"] + [str(tmp_path / "a0.jpg")]))
    assert [it.index for it in skip_done(iter(more), Cursor(1, -1, True, more[1].digest, more[1].path))] == [2, 3, 4]


def test_units_come_in_input_order_with_bounded_lookahead() -> None:
    items = [InputItem(i, f"img{i}.jpg", "image", "") for i in range(60)]
    in_flight, peak, lock = [0], [0], threading.Lock()
    rng = np.random.default_rng(0)
    delays = rng.random(60) * 0.004

    def load(path: str) -> np.ndarray:
        i = int(path[3:-4])
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(delays[i])  # finish out of order
        if i % 7 == 3:
            from facepcl.errors import ImageLoadError

            raise ImageLoadError(f"{path}: broken")
        return np.full((2, 2, 3), i, np.uint8)

    seen = []
    for unit in iter_units(iter(items), load, workers=4, lookahead=8):
        with lock:
            in_flight[0] -= 1
        seen.append(unit)
    assert [u.item.index for u in seen] == list(range(60))
    assert all((u.error is not None) == (u.item.index % 7 == 3) for u in seen)
    assert all(u.image is None or int(u.image[0, 0, 0]) == u.item.index for u in seen)
    assert peak[0] <= 9  # decoded but not yet handed over: never more than the lookahead (+ the one in hand)


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_only_on_rank_0_of_an_interactive_stderr() -> None:
    from facepcl.export._progress import progress_wanted

    assert progress_wanted(False, False, 0, _Stream(True))
    assert not progress_wanted(False, False, 0, _Stream(False))  # piped or redirected
    assert not progress_wanted(True, False, 0, _Stream(True))  # --no-progress
    assert not progress_wanted(False, True, 0, _Stream(True))  # --quiet
    assert not progress_wanted(False, False, 1, _Stream(True))  # other torchrun ranks


def test_summary_line() -> None:
    from facepcl.export._progress import summary_line

    line = summary_line(Stats(inputs=10, images=8, videos=2, frames=40, faces=60, skipped=3), 4.0, "out",
                        errors_file="out/_errors.jsonl")
    assert line == ("done: 10 inputs (8 images, 2 videos, 40 frames), 60 faces, 3 skipped in 4.0 s "
                    "(12.0 images/s, 15.0 faces/s) -> out; reasons in out/_errors.jsonl")
    assert "run the same command with --resume" in summary_line(Stats(), 1.0, "out", interrupted=True)


def test_shards_copied_without_bookkeeping_still_read(tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    os.makedirs(out / "_manifests")
    state = ExportFolder(str(out), "safetensors", 0)
    commit(state, 0, Cursor(), cursor(3), [1, 3])
    commit(state, 1, cursor(3), cursor(5), [5])
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in out.glob("part-*"):
        shutil.copy(f, copy)
    assert read_embeddings(copy).column("item").to_pylist() == [1, 3, 5]
    with pytest.raises(FileNotFoundError, match="not a facepcl embed output folder"):
        read_embeddings(tmp_path / "copy" / ".." / "out" / "_manifests")


def test_clear_export_deletes_only_export_files_of_its_ranks(tmp_path: Path) -> None:
    out = str(tmp_path)
    os.makedirs(tmp_path / "_manifests")
    for rank in (0, 1, 2):  # an earlier run with 3 processes
        commit(ExportFolder(out, "parquet", rank), 0, Cursor(), cursor(rank), [rank])
    for name in ("_run.json", "_errors.jsonl", "index.csv", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "_manifests" / ".lock-r00001").write_text("")
    # This run has 2 processes: rank 1 clears its own files only.
    gone = ExportFolder(out, rank=1, world_size=2).clear()
    assert sorted(os.path.basename(p) for p in gone) == ["part-r00001-000000.json", "part-r00001-000000.parquet"]
    assert any_shards(out, 0)
    assert any_shards(out, 2)
    assert not any_shards(out, 1)
    # Rank 0 clears its own, those of ranks the run lacks (2), and the folder-level files.
    ExportFolder(out, rank=0, world_size=2).clear()
    assert not any_shards(out)
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == ["_manifests", "_manifests/.lock-r00001", "notes.txt"]


def test_resume_verifies_shards_and_redoes_the_first_damaged_one_and_all_after_it(tmp_path: Path) -> None:
    out = str(tmp_path)
    state = ExportFolder(out, "npz", 0)
    commit(state, 0, Cursor(), cursor(1), [0, 1])
    commit(state, 1, cursor(1), cursor(3), [2, 3])
    commit(state, 2, cursor(3), cursor(5), [4, 5])
    man = json.loads((tmp_path / "_manifests" / "part-r00000-000001.json").read_text())
    assert man["rows"] == 2
    assert man["size"] == (tmp_path / "part-r00000-000001.npz").stat().st_size
    assert len(man["sha256"]) == 64
    assert [s.number for s in _dataset.committed_shards(out)] == [0, 1, 2]
    data = tmp_path / "part-r00000-000001.npz"
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(ExportStateError, match=r"part-r00000-000001.npz is damaged \(\d+ bytes, the manifest says"):
        _dataset.committed_shards(out)
    point = state.resume()
    assert point.next_shard == 1
    assert point.cursor == cursor(1)
    assert point.rows == 2
    assert [name for name, _ in point.redone] == ["part-r00000-000001.npz", "part-r00000-000002.npz"]
    assert sorted(p.name for p in tmp_path.glob("part-*")) == ["part-r00000-000000.npz"]
    assert sorted(p.name for p in (tmp_path / "_manifests").glob("part-*")) == ["part-r00000-000000.json"]
    assert read_embeddings(tmp_path).column("item").to_pylist() == [0, 1]


def test_data_files_after_the_last_manifest_are_redone(tmp_path: Path) -> None:
    state = ExportFolder(str(tmp_path), "parquet", 0)
    commit(state, 0, Cursor(), cursor(1), [0, 1])
    commit(state, 1, cursor(1), cursor(3), [2, 3])
    (tmp_path / "_manifests" / "part-r00000-000001.json").unlink()  # a copy that missed the last manifest
    point = state.resume()
    assert point.next_shard == 1
    assert point.redone == [("part-r00000-000001.parquet", "it has no manifest")]
    assert sorted(p.name for p in tmp_path.glob("part-*")) == ["part-r00000-000000.parquet"]
