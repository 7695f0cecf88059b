"""Index and search never half-written, never silent: commits, the lock, rewritten exports, model identity, damage."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from facepcl._utils.folders import FolderLock, file_record
from facepcl.cli import main
from facepcl.export._formats import get_format
from facepcl.io.inputs import display_path
from facepcl.search import FaceIndex, IndexFileError
from tests.test_search import DIM, _meta, _vectors

E1 = "e1" * 32


def _export(folder, vectors: dict[str, np.ndarray], *, shard: int = 0, start: int = 0, paths=None,
            manifest: bool = False, dim: int = DIM, **meta) -> None:
    """A Parquet shard as `facepcl embed` writes it; with ``manifest``, its manifest with the shard's record too."""
    n = len(next(iter(vectors.values())))
    cols = {"item": np.arange(start, start + n), "path": paths or [f"img{start + i}.jpg" for i in range(n)],
            "frame": np.full(n, -1), "timestamp": np.full(n, np.nan), "face_index": np.zeros(n, np.int32),
            "width": np.full(n, 100, np.int32), "height": np.full(n, 80, np.int32),
            "bbox": np.tile(np.float32([1, 2, 30, 40]), (n, 1)), "kps": np.full((n, 10), np.nan, np.float32),
            "det_score": np.ones(n, np.float32), **vectors}
    os.makedirs(folder, exist_ok=True)
    name = f"part-r00000-{shard:06d}.parquet"
    get_format("parquet").write(cols, os.path.join(folder, name), list(vectors), dim,
                                _meta(features=list(vectors), feature_dim=dim, **meta))
    if manifest:
        os.makedirs(os.path.join(folder, "_manifests"), exist_ok=True)
        with open(os.path.join(folder, "_manifests", name.replace(".parquet", ".json")), "w") as f:
            json.dump({"shard": shard, "rank": 0, "file": name, "rows": n,
                       **file_record(os.path.join(folder, name))}, f)


def _index_files(idx) -> list[str]:
    return sorted(os.listdir(idx))


def _named(idx) -> list[str]:
    with open(os.path.join(idx, "index.json")) as f:
        m = json.load(f)
    return sorted([r["name"] for r in m["files"].values()] + ["index.json", ".facepcl.lock"])


def _one_error_line(err: str, command: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"facepcl {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _error_among(err: str) -> str:
    """The one error line of a run that also printed notes (neighbours whose source file is not found)."""
    lines = [x for x in err.splitlines() if x.startswith("facepcl search: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


# -- 1 and 2: an interrupted run leaves the previous index readable; one writer at a time -----------------------

_SLOW_INDEX = r"""
import sys, time
import facepcl.search._files as files
real = files.write_npy
def slow(folder, name, array):
    record = real(folder, name, array)  # the new version's first vectors are in place, index.json not yet
    open(sys.argv[1], "w").close()
    time.sleep(300)
    return record
files.write_npy = slow
from facepcl.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_killed_index_run_leaves_the_previous_index_readable_and_the_next_run_completes_it(tmp_path, capsys) -> None:
    rng = np.random.default_rng(10)
    first, more = _vectors(rng, 8), _vectors(rng, 5)
    _export(tmp_path / "e", first)
    idx = tmp_path / "idx"
    assert main(["index", str(tmp_path / "e"), "-o", str(idx)]) == 0
    before = FaceIndex.load(idx).search(first["face"][:3], k=4)
    _export(tmp_path / "f", more)
    marker = tmp_path / "writing"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_INDEX, str(marker), "index", str(tmp_path / "f"), "-o",
                             str(idx)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300  # a guard against a hang, not a measurement
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.stderr.read().decode()
        capsys.readouterr()
        # 2: a second writer is refused, told who holds the index
        assert main(["index", str(tmp_path / "f"), "-o", str(idx)]) == 1
        line = _one_error_line(capsys.readouterr().err, "index")
        assert f"another process is writing this index (pid {proc.pid}" in line
    finally:
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait()
    assert "face.v2.npy" in _index_files(idx)  # the interrupted version's leftovers
    back = FaceIndex.load(idx)
    assert len(back) == 8
    again = back.search(first["face"][:3], k=4)
    assert again.rows.tolist() == before.rows.tolist()
    assert np.allclose(again.scores, before.scores)
    assert main(["index", str(tmp_path / "f"), "-o", str(idx)]) == 0
    assert "5 new rows" in capsys.readouterr().out
    assert len(FaceIndex.load(idx)) == 13
    assert _index_files(idx) == _named(idx)  # nothing of the interrupted version is left


def test_second_writer_is_refused_while_the_lock_is_held(tmp_path, capsys) -> None:
    rng = np.random.default_rng(11)
    _export(tmp_path / "e", _vectors(rng, 4))
    with FolderLock(tmp_path / "idx", "index"):
        assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "idx")]) == 1
        line = _one_error_line(capsys.readouterr().err, "index")
        assert f"pid {os.getpid()}" in line
        assert "wait for it to finish" in line
    assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "idx")]) == 0


# -- 3: an export written again replaces its rows -----------------------------------------------------------------

@pytest.mark.parametrize("manifest", [False, True])
def test_export_written_again_has_its_rows_replaced(tmp_path, capsys, manifest) -> None:
    rng = np.random.default_rng(12)
    old, new, more = _vectors(rng, 8), _vectors(rng, 8), _vectors(rng, 3)
    _export(tmp_path / "e", old, manifest=manifest)
    idx = str(tmp_path / "idx")
    assert main(["index", str(tmp_path / "e"), "-o", idx]) == 0
    shutil.rmtree(tmp_path / "e")  # `facepcl embed --overwrite`: the same inputs, other vectors
    _export(tmp_path / "e", new, manifest=manifest)
    capsys.readouterr()
    assert main(["index", str(tmp_path / "e"), "-o", idx]) == 0
    assert "8 new rows (the export was written again: its 8 earlier rows were replaced)" in capsys.readouterr().out
    index = FaceIndex.load(idx)
    assert len(index) == 8
    assert index.exports[0]["rows"] == 8
    hit = index.search(new["face"][2], k=1)
    assert hit.rows[0, 0] == 2
    assert hit.scores[0, 0] == pytest.approx(1.0, abs=1e-3)
    assert index.search(old["face"], k=1).scores.max() < 0.9
    _export(tmp_path / "e", more, shard=1, start=8, manifest=manifest)  # then resumed: only the new shard is read
    assert main(["index", str(tmp_path / "e"), "-o", idx]) == 0
    assert "3 new rows" in capsys.readouterr().out
    assert len(FaceIndex.load(idx)) == 11


def test_shard_that_differs_from_its_manifest_record_is_refused(tmp_path, capsys) -> None:
    rng = np.random.default_rng(13)
    _export(tmp_path / "e", _vectors(rng, 4), manifest=True)
    man = tmp_path / "e" / "_manifests" / "part-r00000-000000.json"
    rec = json.loads(man.read_text())
    man.write_text(json.dumps({**rec, "sha256": "0" * 64}))
    assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "idx")]) == 1
    line = _one_error_line(capsys.readouterr().err, "index")
    assert "part-r00000-000000.parquet: its SHA-256 differs" in line
    assert "re-export" in line


# -- 4: one encoder per index ------------------------------------------------------------------------------------

def test_exports_of_another_encoder_are_refused_naming_both(tmp_path, capsys) -> None:
    rng = np.random.default_rng(14)
    _export(tmp_path / "a", _vectors(rng, 3))
    _export(tmp_path / "b", _vectors(rng, 3), encoder_sha256="e2" * 32)
    assert main(["index", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "idx")]) == 1
    line = _one_error_line(capsys.readouterr().err, "index")
    assert str(tmp_path / "a") in line
    assert str(tmp_path / "b") in line
    assert f"encoder_sha256 {'e2' * 32} vs {E1}" in line
    _export(tmp_path / "old", _vectors(rng, 3), encoder_sha256=None, weights_sha256="0123456789abcdef")
    with pytest.raises(ValueError, match="no encoder_sha256"):
        FaceIndex().add(tmp_path / "old")


def test_search_refuses_a_model_or_export_rows_of_another_encoder(tmp_path, capsys, random_model_dir) -> None:
    from facepcl._utils.digest import encoder_digest
    from facepcl.pipeline import FaceEmbedder

    emb = FaceEmbedder(str(random_model_dir), detect=False)
    digest, config = encoder_digest(emb.model), emb.info()["config_hash"]
    dim = 2048
    rng = np.random.default_rng(15)
    vec = {"face": rng.standard_normal((4, dim)).astype(np.float32)}
    _export(tmp_path / "mine", vec, dim=dim, encoder_sha256=digest, config_hash=config)
    _export(tmp_path / "other", vec, dim=dim)
    (tmp_path / "other" / "_run.json").write_text("{}")
    photo = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(photo)
    for export in ("mine", "other"):
        assert main(["index", str(tmp_path / export), "-o", str(tmp_path / f"{export}.idx")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "other.idx"), str(photo), "--model", str(random_model_dir),
                 "--no-detect"]) == 1
    line = _one_error_line(capsys.readouterr().err, "search")
    assert f"encoder_sha256 {digest}" in line
    assert f"encoder_sha256 {E1}" in line
    assert main(["search", str(tmp_path / "mine.idx"), f"{tmp_path / 'other'}#0", "-k", "1"]) == 1
    assert f"made with encoder_sha256 {E1}" in _one_error_line(capsys.readouterr().err, "search")
    assert main(["search", str(tmp_path / "mine.idx"), str(photo), "--model", str(random_model_dir), "--no-detect",
                 "-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["neighbours"]) == 2


# -- 5: codes no search can rank ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "what"), [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                                             (0.0, "only zeros")])
def test_nan_infinite_or_zero_codes_are_refused_naming_export_shard_and_row(tmp_path, capsys, value, what) -> None:
    rng = np.random.default_rng(16)
    _export(tmp_path / "e", _vectors(rng, 4))
    vec = _vectors(rng, 6)
    vec["pose"][4] = value if value == 0 else vec["pose"][4]
    vec["pose"][4, 7] = value
    _export(tmp_path / "e", vec, shard=1, start=4)
    assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "idx")]) == 1
    line = _one_error_line(capsys.readouterr().err, "index")
    assert f"shard part-r00000-000001.parquet, row 4 (img8.jpg, face 0) has a pose code with {what}" in line
    assert str(tmp_path / "e") in line
    assert not (tmp_path / "idx").exists()
    index = FaceIndex()
    with pytest.raises(ValueError, match="row 4"):
        index.add(tmp_path / "e")
    assert len(index) == 0
    assert index.exports == []
    assert index.identity is None  # nothing half-added
    np.save(tmp_path / "q.npy", np.full(DIM, np.nan, np.float32))
    _export(tmp_path / "ok", _vectors(rng, 4))
    assert main(["index", str(tmp_path / "ok"), "-o", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), str(tmp_path / "q.npy")]) == 1
    assert "row 0 holds NaN or infinite values" in _one_error_line(capsys.readouterr().err, "search")


# -- 6: damaged index files --------------------------------------------------------------------------------------

def _flip(path, offset: int = -5) -> None:
    with open(path, "r+b") as f:
        f.seek(offset, os.SEEK_END)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x10]))


@pytest.mark.parametrize("damage", ["npy", "ivf", "ivf missing"])
def test_damaged_index_files_are_detected_and_rebuild_repairs_them(tmp_path, capsys, damage) -> None:
    rng = np.random.default_rng(17)
    vec = _vectors(rng, 64)
    _export(tmp_path / "e", {"face": vec["face"]})
    idx = tmp_path / "idx"
    ivf = damage.startswith("ivf")
    assert main(["index", str(tmp_path / "e"), "-o", str(idx), "--exact-below", "32" if ivf else "1000"]) == 0
    np.save(tmp_path / "q.npy", vec["face"][:2])
    before = FaceIndex.load(idx).search(vec["face"][:2], k=3)
    files = json.loads((idx / "index.json").read_text())["files"]
    target = idx / files["face.ivf" if ivf else "face"]["name"]
    if damage == "ivf missing":
        target.unlink()
    else:
        _flip(target)
    if damage != "ivf missing":
        with pytest.raises(IndexFileError, match="SHA-256 differs"):
            FaceIndex.load(idx).search(vec["face"][:2], k=3)
    capsys.readouterr()
    assert main(["search", str(idx), str(tmp_path / "q.npy")]) == 1
    line = _one_error_line(capsys.readouterr().err, "search")
    assert target.name in line
    assert "missing" in line if damage == "ivf missing" else "SHA-256 differs" in line
    assert f"facepcl index --rebuild -o {idx}" in line
    assert main(["index", "--rebuild", "-o", str(idx)]) == 0
    after = FaceIndex.load(idx).search(vec["face"][:2], k=3)
    assert after.rows.tolist() == before.rows.tolist()
    assert _index_files(idx) == _named(idx)


def test_index_of_an_older_format_is_refused_and_rebuilt(tmp_path, capsys) -> None:
    rng = np.random.default_rng(18)
    _export(tmp_path / "e", _vectors(rng, 5))
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "index.json").write_text(json.dumps({"format_version": 1, "features": ["face"], "rows": 5,
                                                "exact_below": 1000, "exports": [{"export": str(tmp_path / "e")}]}))
    (idx / "face.npy").write_bytes(b"half")
    assert main(["index", str(tmp_path / "e"), "-o", str(idx)]) == 1
    assert "--rebuild" in _one_error_line(capsys.readouterr().err, "index")
    assert main(["index", "--rebuild", "-o", str(idx)]) == 0
    index = FaceIndex.load(idx)
    assert len(index) == 5
    assert index.features == ["face"]
    assert "face.npy" not in _index_files(idx)


# -- 7: clear errors ---------------------------------------------------------------------------------------------

def test_full_disk_or_unwritable_index_folder_is_one_line_and_keeps_the_index(tmp_path, capsys, monkeypatch) -> None:
    import facepcl.search._files as files

    rng = np.random.default_rng(19)
    _export(tmp_path / "e", _vectors(rng, 4))
    _export(tmp_path / "f", _vectors(rng, 4))
    idx = tmp_path / "idx"
    assert main(["index", str(tmp_path / "e"), "-o", str(idx)]) == 0
    real = files.atomic_write

    def full(dest, write, **kw):
        if str(dest).endswith(".npy"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dest))
        return real(dest, write, **kw)

    monkeypatch.setattr(files, "atomic_write", full)
    capsys.readouterr()
    assert main(["index", str(tmp_path / "f"), "-o", str(idx)]) == 1
    line = _one_error_line(capsys.readouterr().err, "index")
    assert "No space left on device" in line
    assert "disk is full" in line
    assert "unchanged" in line
    monkeypatch.undo()
    assert len(FaceIndex.load(idx)) == 4
    assert _index_files(idx) == _named(idx)
    (tmp_path / "file").write_text("x")
    assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "file" / "idx")]) == 1
    assert "cannot write the index there" in _one_error_line(capsys.readouterr().err, "index")
    assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "e")]) == 1
    assert "is an export folder" in _one_error_line(capsys.readouterr().err, "index")


def test_grid_on_an_unwritable_or_full_location_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    rng = np.random.default_rng(20)
    vec = _vectors(rng, 3)
    _export(tmp_path / "e", vec)
    assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "idx")]) == 0
    np.save(tmp_path / "q.npy", vec["face"][0])
    (tmp_path / "file").write_text("x")
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), str(tmp_path / "q.npy"), "--grid",
                 str(tmp_path / "file" / "g.png")]) == 1
    assert "cannot write the search grid" in _error_among(capsys.readouterr().err)

    def full(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    assert main(["search", str(tmp_path / "idx"), str(tmp_path / "q.npy"), "--grid", str(tmp_path / "g.png")]) == 1
    assert "No space left on device" in _error_among(capsys.readouterr().err)
    assert not (tmp_path / "g.png").exists()
    assert not list(tmp_path.glob(".g.png*"))


def test_query_npy_whose_header_claims_763_gib_is_refused_before_loading(tmp_path, capsys) -> None:
    rng = np.random.default_rng(21)
    _export(tmp_path / "e", _vectors(rng, 3))
    assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "idx")]) == 0
    bad = tmp_path / "huge.npy"
    with open(bad, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (100_000_000, 2048)})
        f.write(np.zeros(DIM, np.float32).tobytes())
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), str(bad)]) == 1
    line = _one_error_line(capsys.readouterr().err, "search")
    assert "762.9 GiB" in line
    assert "128 bytes of data" in line
    assert "numpy.save" in line


def test_non_utf8_file_names_are_found_for_the_grid_and_printed(tmp_path, capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    name = os.fsdecode(b"caf\xe9.png")  # not UTF-8: a str with a surrogate escape, as os.listdir gives it
    rng = np.random.default_rng(22)
    Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(os.path.join(photos, name))
    vec = _vectors(rng, 1)
    _export(tmp_path / "e", vec, paths=[display_path(os.path.join(photos, name))])
    assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "idx")]) == 0
    query = os.path.join(tmp_path, os.fsdecode(b"q\xe9.npy"))
    np.save(query, vec["face"][0])
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), query, "-k", "1", "--grid", str(tmp_path / "g.png")]) == 0
    out, err = capsys.readouterr()
    assert "q\\xe9.npy[0]" in out
    assert "caf\\xe9.png" in out
    assert "not found" not in err
    assert (tmp_path / "g.png").exists()


def test_index_loaded_before_another_writer_committed_says_so(tmp_path) -> None:
    rng = np.random.default_rng(23)
    vec = _vectors(rng, 4)
    _export(tmp_path / "e", vec)
    _export(tmp_path / "f", _vectors(rng, 4))
    assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "idx")]) == 0
    stale = FaceIndex.load(tmp_path / "idx")  # its vectors are opened on first use
    assert main(["index", str(tmp_path / "f"), "-o", str(tmp_path / "idx")]) == 0
    with pytest.raises(IndexFileError, match="replaced by a newer version of the index since it was loaded"):
        stale.search(vec["face"][0])
    assert FaceIndex.load(tmp_path / "idx").search(vec["face"][0], k=1).rows[0, 0] == 0


def test_run_that_changes_nothing_writes_nothing_but_deletes_leftovers(tmp_path, capsys) -> None:
    rng = np.random.default_rng(24)
    _export(tmp_path / "e", _vectors(rng, 4))
    idx = tmp_path / "idx"
    assert main(["index", str(tmp_path / "e"), "-o", str(idx)]) == 0
    committed = _index_files(idx)
    (idx / "face.v9.npy").write_bytes(b"left by a killed run")
    (idx / ".rows.v9.parquet.tmp-1-abcd").write_bytes(b"half")
    (idx / "notes.txt").write_text("mine")
    assert main(["index", str(tmp_path / "e"), "-o", str(idx)]) == 0
    assert "0 new rows" in capsys.readouterr().out
    assert _index_files(idx) == sorted([*committed, "notes.txt"])  # same version; leftovers gone, the rest kept
    assert main(["index", str(tmp_path / "e"), "-o", str(idx), "--nprobe", "7"]) == 0
    assert FaceIndex.load(idx).nprobe == 7
    assert "rows.v2.parquet" in _index_files(idx)
