"""Face search: FaceIndex over exports (incremental, exact and IVF, save/load) and `facepcl index` / `search`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facepcl.cli import main
from facepcl.export._formats import get_format
from facepcl.search import FaceIndex

DIM = 32


def _meta(**over) -> dict:
    meta = {"features": ["face", "pose", "trunk"], "feature_dim": DIM, "model_id": "tiny", "config_hash": "abc",
            "encoder_sha256": "e1" * 32, "preprocess": {"crop_size": 64}, "cwd": "/nowhere", "format": "parquet"}
    meta.update(over)
    return meta


def _write_export(folder, vectors: dict[str, np.ndarray], *, fmt: str = "parquet", shard: int = 0, start: int = 0,
                  **meta) -> None:
    """A shard as `facepcl embed` writes it (without its bookkeeping: the reader globs finished shards)."""
    n = len(next(iter(vectors.values())))
    cols = {"item": np.arange(start, start + n), "path": [f"img{start + i}.jpg" for i in range(n)],
            "frame": np.full(n, -1), "timestamp": np.full(n, np.nan), "face_index": np.zeros(n, np.int32),
            "width": np.full(n, 100, np.int32), "height": np.full(n, 80, np.int32),
            "bbox": np.tile(np.float32([1, 2, 30, 40]), (n, 1)), "kps": np.full((n, 10), np.nan, np.float32),
            "det_score": np.ones(n, np.float32), **vectors}
    os.makedirs(folder, exist_ok=True)
    f = get_format(fmt)
    m = _meta(format=fmt, features=list(vectors), **meta)
    f.write(cols, os.path.join(folder, f"part-r00000-{shard:05d}{f.suffix}"), list(vectors), DIM, m)


def _vectors(rng, n: int) -> dict[str, np.ndarray]:
    return {k: rng.standard_normal((n, DIM)).astype(np.float32) for k in ("face", "pose", "trunk")}


@pytest.mark.parametrize("fmt", ["parquet", "npz", "safetensors"])
def test_every_export_format_indexes_and_finds_its_own_rows(tmp_path, fmt) -> None:
    rng = np.random.default_rng(0)
    vec = _vectors(rng, 12)
    _write_export(tmp_path / "e", vec, fmt=fmt)
    index = FaceIndex()
    assert index.add(tmp_path / "e") == 12
    res = index.search(vec["pose"][[3, 7]], by="pose", k=2)
    assert res.rows[:, 0].tolist() == [3, 7]
    assert res.scores[:, 0] == pytest.approx(1.0, abs=1e-3)  # float16 storage
    hit = res.records[0][0]
    assert {k: hit[k] for k in ("rank", "path", "frame", "timestamp", "face_index", "bbox")} == {
        "rank": 1, "path": "img3.jpg", "frame": -1, "timestamp": None, "face_index": 0, "bbox": [1.0, 2.0, 30.0, 40.0]}
    assert hit["export"] == str(tmp_path / "e")


def test_adding_again_adds_only_new_rows_and_save_load_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(1)
    first, more, other = _vectors(rng, 10), _vectors(rng, 5), _vectors(rng, 4)
    _write_export(tmp_path / "e", first)
    index = FaceIndex(["face", "pose"])
    assert index.add(tmp_path / "e") == 10
    assert index.add(tmp_path / "e") == 0
    _write_export(tmp_path / "e", more, shard=1, start=10)  # the export was resumed: a new shard
    assert index.add(tmp_path / "e") == 5
    _write_export(tmp_path / "f", other)
    assert index.add(tmp_path / "f") == 4
    assert len(index) == 19
    assert len(index.exports) == 2
    index.save(tmp_path / "idx")
    back = FaceIndex.load(tmp_path / "idx")
    assert back.features == ["face", "pose"]
    assert len(back) == 19
    q = np.concatenate([more["face"][:2], other["face"][3:]])
    a, b = index.search(q, k=3), back.search(q, k=3)
    assert a.rows.tolist() == b.rows.tolist() == [[10, *a.rows[0, 1:]], [11, *a.rows[1, 1:]], [18, *a.rows[2, 1:]]]
    assert b.records[2][0]["export"] == str(tmp_path / "f")
    assert b.records[2][0]["path"] == "img3.jpg"
    assert back.add(tmp_path / "f") == 0
    with pytest.raises(ValueError, match="holds"):
        back.search(q, by="trunk")


def test_exports_of_another_model_are_refused(tmp_path) -> None:
    rng = np.random.default_rng(2)
    _write_export(tmp_path / "a", _vectors(rng, 3))
    _write_export(tmp_path / "b", _vectors(rng, 3), encoder_sha256="e2" * 32)
    index = FaceIndex()
    index.add(tmp_path / "a")
    with pytest.raises(ValueError, match="one index per model"):
        index.add(tmp_path / "b")
    assert len(index) == 3


def test_approximate_search_above_threshold_agrees_with_exact(tmp_path) -> None:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((60, DIM)).astype(np.float32)
    face = centres[np.repeat(np.arange(60), 20)] + 0.3 * rng.standard_normal((1200, DIM)).astype(np.float32)
    _write_export(tmp_path / "e", {"face": face})
    exact, approx = FaceIndex(exact_below=10**6), FaceIndex(exact_below=1000)
    exact.add(tmp_path / "e")
    approx.add(tmp_path / "e")
    assert exact.kinds() == {"face": "exact"}
    queries = centres[:30] + 0.3 * rng.standard_normal((30, DIM)).astype(np.float32)
    a, b = exact.search(queries, k=10), approx.search(queries, k=10)
    assert approx.kinds() == {"face": "ivf"}
    recall = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a.rows, b.rows, strict=True)])
    assert recall >= 0.9
    approx.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").glob("face*")) == ["face.v1.ivf.faiss", "face.v1.npy"]
    assert FaceIndex.load(tmp_path / "idx").search(queries, k=10).rows.tolist() == b.rows.tolist()


def test_without_the_search_extra_index_is_one_clear_error(tmp_path, capsys, monkeypatch) -> None:
    _write_export(tmp_path / "e", _vectors(np.random.default_rng(4), 8))
    (tmp_path / "e" / "_run.json").write_text(json.dumps(_meta()))
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if faiss-cpu (the [search] extra) were not installed
    assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "idx")]) == 1
    err = capsys.readouterr().err
    assert 'pip install "facepcl[search]"' in err
    assert "Traceback" not in err


def test_cli_index_and_search_with_vectors_and_export_rows(tmp_path, capsys) -> None:
    rng = np.random.default_rng(4)
    vec = _vectors(rng, 8)
    _write_export(tmp_path / "e", vec)
    (tmp_path / "e" / "_run.json").write_text(json.dumps(_meta()))
    assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "idx")]) == 0
    assert "8 new rows" in capsys.readouterr().out
    assert main(["index", str(tmp_path / "e"), "-o", str(tmp_path / "idx")]) == 0
    assert "0 new rows" in capsys.readouterr().out
    np.save(tmp_path / "q.npy", vec["trunk"][5])
    assert main(["search", str(tmp_path / "idx"), str(tmp_path / "q.npy"), f"{tmp_path / 'e'}#2", "--by", "trunk",
                 "-k", "3", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["query"] for x in lines] == ["q.npy[0]", "e row 2"]
    assert [x["neighbours"][0]["path"] for x in lines] == ["img5.jpg", "img2.jpg"]
    assert len(lines[0]["neighbours"]) == 3
    np.save(tmp_path / "bad.npy", np.zeros((2, DIM + 1)))
    assert main(["search", str(tmp_path / "idx"), str(tmp_path / "bad.npy")]) == 1
    assert f"(Q, {DIM})" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "nothere"), str(tmp_path / "q.npy")]) == 1
    assert "not a facepcl index" in capsys.readouterr().err


@pytest.mark.slow
def test_photo_query_finds_the_other_copies_of_the_same_face_first(tmp_path, capsys) -> None:
    """Real photos, the bundled pcl-demo model: astronaut copies (rescaled, cropped) among other people."""
    from tests import _samples

    src = Image.open(_samples.astronaut()).convert("RGB")
    photos = tmp_path / "photos"
    photos.mkdir()
    src.resize((300, 300)).save(photos / "astro_small.jpg", quality=90)
    src.crop((50, 0, 450, 400)).resize((600, 600)).save(photos / "astro_crop.jpg", quality=90)
    for p in (_samples.grace_hopper(), _samples.pyfeat("multi_face.jpg")):
        Image.open(p).convert("RGB").save(photos / os.path.basename(p))
    Image.open(_samples.grace_hopper()).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        photos / "grace_flipped.jpg")
    assert main(["embed", str(photos), "-o", str(tmp_path / "faces"), "-q", "--no-progress"]) == 0
    assert main(["index", str(tmp_path / "faces"), "-o", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    grid = tmp_path / "grid.png"
    assert main(["search", str(tmp_path / "idx"), str(_samples.astronaut()), "--by", "face", "-k", "4", "--json",
                 "--grid", str(grid)]) == 0
    (query,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    paths = [h["path"] for h in query["neighbours"]]
    assert sorted(paths[:2]) == sorted([str(photos / "astro_crop.jpg"), str(photos / "astro_small.jpg")])
    assert query["neighbours"][0]["score"] > query["neighbours"][2]["score"] + 0.3
    with Image.open(grid) as g:
        assert g.width > 4 * 96
        assert g.height >= 96


@pytest.mark.slow
def test_scale_benchmark_measures_exact_and_approximate_search(tmp_path) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "search_scale.py"
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, str(script), "--sizes", "600", "--json", str(out)], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "recall@10 vs exact" in proc.stdout
    assert "load average" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"].split()[0] for r in rows] == ["exact", "ivf"]
    assert rows[0]["recall_at_10"] == 1.0
    assert 0.5 <= rows[1]["recall_at_10"] <= 1.0
    assert all(r["qps_batch"] > 0 for r in rows)
    assert all(r["peak_rss_gb"] > 0 for r in rows)


def test_an_export_without_rows_gives_an_empty_index_that_searches_and_saves(tmp_path) -> None:
    _write_export(tmp_path / "e", {"face": np.zeros((0, DIM), np.float32)})
    index = FaceIndex()
    assert index.add(tmp_path / "e") == 0
    res = index.search(np.ones(DIM), k=3)
    assert res.rows.tolist() == [[-1, -1, -1]]
    assert res.records == [[]]
    index.save(tmp_path / "idx")
    assert len(FaceIndex.load(tmp_path / "idx")) == 0
