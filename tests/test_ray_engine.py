"""``facepcl embed --engine ray`` and ``facepcl.ray.EmbedFaces`` on a real local Ray (``ray.init(num_cpus=2)``).

The Ray export must be the local export row for row (same shards, manifests,
``_errors.jsonl`` and ``_run.json``); a driver killed part way and resumed,
and an embedding actor killed with SIGKILL mid-run (Ray restarts it and
retries its batch), must still give every row exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import facepcl
from facepcl.cli import main
from facepcl.export import read_embeddings, read_errors, read_tracks
from tests import _samples

from . import _video
from ._threads import torch_threads
from ._video import remux_avi

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

pytestmark = [pytest.mark.slow, pytest.mark.photos]

GOOD = ["0-f1-su-ph.jpg", "45-m7-di-ph.jpg", "multi_face.jpg", "single_face.jpg"]
NO_FACE = "free-mountain-vector-01.jpg"
OPTIONS = ["--batch-size", "1", "--device", "cpu", "--no-progress", "-q"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Real photos (one with several faces, one without a face), an empty file and a folder of more photos."""
    root = tmp_path_factory.mktemp("ray-data") / "photos"
    (root / "more").mkdir(parents=True)
    for name in [*GOOD, NO_FACE]:
        shutil.copy(_samples.pyfeat(name), root / name)
    shutil.copy(_samples.grace_hopper(), root / "more" / "grace_hopper.jpg")
    (root / "empty.jpg").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """Four copies of each small photo (24 inputs): long enough to kill a worker part way."""
    root = tmp_path_factory.mktemp("ray-many")
    for k in range(4):
        for name in [*GOOD[:2], "single_face.jpg", NO_FACE]:
            shutil.copy(_samples.pyfeat(name), root / f"{k}-{name}")
        shutil.copy(_samples.grace_hopper(), root / f"{k}-grace_hopper.jpg")
        (root / f"{k}-empty.jpg").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def many_local(many, random_model_dir, tmp_path_factory) -> Path:
    """The local export of ``many`` in shards of two rows or records."""
    return local_export(many, tmp_path_factory.mktemp("many-local") / "out", random_model_dir, "--shard-size", "2")


def local_export(inputs: Path, out: Path, model: Path, *extra: str) -> Path:
    with torch_threads(1):  # the thread count of a Ray actor with one CPU
        assert main(["embed", str(inputs), "-o", str(out), "--model", str(model), *OPTIONS, *extra]) == 0
    return out


def assert_same_export(a: Path, b: Path) -> None:
    """Same rows in the same order (floats within rounding), same skip records, same settings and shard layout."""
    ta, tb = read_embeddings(a), read_embeddings(b)
    assert ta.column_names == tb.column_names
    assert ta.num_rows == tb.num_rows > 0
    for name in ta.column_names:
        x, y = ta[name].to_pylist(), tb[name].to_pylist()
        if name in ("face", "pose", "trunk", "bbox", "kps", "det_score", "timestamp", "sharpness"):
            np.testing.assert_allclose(np.array(x, np.float64), np.array(y, np.float64), atol=2e-4, rtol=1e-4,
                                       err_msg=name)
        else:
            assert x == y, name
    assert read_errors(a) == read_errors(b)
    assert json.loads((a / "_run.json").read_text()) == json.loads((b / "_run.json").read_text())
    assert sorted(p.name for p in a.glob("part-*")) == sorted(p.name for p in b.glob("part-*"))


def test_ray_export_equals_local_export(ray_cluster, data, random_model_dir, tmp_path):
    local = local_export(data, tmp_path / "local", random_model_dir, "--shard-size", "3")
    code = main(["embed", str(data), "-o", str(tmp_path / "ray"), "--model", str(random_model_dir), *OPTIONS,
                 "--shard-size", "3", "--engine", "ray"])
    assert code == 0
    assert_same_export(local, tmp_path / "ray")
    table = read_embeddings(tmp_path / "ray")
    assert table.num_rows > len(GOOD)  # multi_face.jpg has several faces
    kinds = {(r["path"].rsplit("/", 1)[-1], r["kind"]) for r in read_errors(tmp_path / "ray")}
    assert kinds == {(NO_FACE, "no_face"), ("empty.jpg", "unreadable")}


def test_on_no_face_error_stops_a_ray_run_as_a_local_one(ray_cluster, data, random_model_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    shutil.copy(data / NO_FACE, tmp_path / "in" / NO_FACE)  # one input: one actor to start
    code = main(["embed", str(tmp_path / "in"), "-o", str(tmp_path / "ray"), "--model", str(random_model_dir),
                 *OPTIONS, "--on-no-face", "error", "--engine", "ray"])
    assert code == 1
    assert f"{NO_FACE}: no face found" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--ray-address", "auto"], ["--ray-stages", "2"]])
def test_ray_flags_need_the_ray_engine(data, tmp_path, capsys, flag):
    assert main(["embed", str(data), "-o", str(tmp_path / "o"), *flag]) == 1
    assert f"{flag[0]} works with --engine ray only" in capsys.readouterr().err


def test_the_ray_engine_says_how_to_install_ray(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["embed", str(data), "-o", str(tmp_path / "o"), "--engine", "ray"]) == 1
    assert 'pip install "facepcl[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_ray_export_with_a_video_equals_local_and_resumes_inside_it(ray_cluster, random_model_dir, tmp_path):
    # one stage here (EmbedFaces: DetectFaces and EncodeFaces in one actor); the two-stage engine reads videos
    # through the same DetectFaces code in test_ray_export_of_frame_folders_with_sequences_equals_local
    stages = "1"
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(_samples.pyfeat("single_face.mp4"), inputs / "a.mp4")  # 72 frames: 6 kept
    shutil.copy(_samples.pyfeat(GOOD[1]), inputs / "b.jpg")
    whole = remux_avi(_samples.pyfeat("single_face.mp4"), tmp_path / "whole.avi")
    data = (tmp_path / "whole.avi").read_bytes()
    (inputs / "c-cut.avi").write_bytes(data[: len(data) // 2])  # truncated: its first frames, then a record
    (inputs / "d-cut.mp4").write_bytes(_samples.pyfeat("single_face.mp4").read_bytes()[:100_000])  # unreadable
    extra = ["--every", "12", "--shard-size", "2"]
    local = local_export(inputs, tmp_path / "local", random_model_dir, *extra)
    out = tmp_path / "ray"
    args = ["embed", str(inputs), "-o", str(out), "--model", str(random_model_dir), *OPTIONS, *extra,
            "--engine", "ray", "--ray-stages", stages]
    assert main(args) == 0
    assert_same_export(local, out)
    table = read_embeddings(out)
    assert table["frame"].to_pylist()[:6] == [0, 12, 24, 36, 48, 60]
    assert whole == 72 and table["track_id"].to_pylist()[0] >= 0 and -1 in table["track_id"].to_pylist()
    kinds = {(r["path"].rsplit("/", 1)[-1], r["kind"]) for r in read_errors(out)}
    assert kinds == {("c-cut.avi", "truncated"), ("d-cut.mp4", "unreadable")}
    assert "c-cut.avi" in {p.rsplit("/", 1)[-1] for p in table["path"].to_pylist()}
    # as if the run had stopped after its first shard: the resumed run continues the video after frame 12
    manifests = sorted((out / "_manifests").glob("part-*.json"))
    for m in manifests[1:]:
        m.unlink()
    assert main([*args, "--resume"]) == 0
    assert_same_export(local, out)


def test_ray_export_of_frame_folders_with_sequences_equals_local(ray_cluster, random_model_dir, tmp_path):
    from PIL import Image

    frames, scenes = _video.scenario("crossing", n=8)
    clip = tmp_path / "shots" / "clip1"
    clip.mkdir(parents=True)
    for i, image in enumerate(_video.compose(frames, scenes, _video.face_patches())):
        Image.fromarray(image).save(clip / f"frame{i:03d}.png")
    extra = ["--sequences", "--every", "2", "--shard-size", "3"]
    local = local_export(tmp_path / "shots", tmp_path / "local", random_model_dir, *extra)
    out = tmp_path / "ray"
    assert main(["embed", str(tmp_path / "shots"), "-o", str(out), "--model", str(random_model_dir), *OPTIONS,
                 *extra, "--engine", "ray", "--ray-stages", "2"]) == 0
    assert_same_export(local, out)
    assert sorted(set(read_embeddings(out)["frame"].to_pylist())) == [0, 2, 4, 6]
    tracks = [read_tracks(x).select(["track_id", "rows"]).to_pylist() for x in (local, out)]
    assert tracks[0] == tracks[1] and tracks[0]


@pytest.mark.parametrize("stages", [1, 2])
def test_embed_faces_in_a_user_pipeline(ray_cluster, data, random_model_dir, stages):
    from ray.data import ActorPoolStrategy

    from facepcl.ray import DetectFaces, EmbedFaces, EncodeFaces

    paths = [str(data / n) for n in [*GOOD, NO_FACE, "empty.jpg"]]
    items = [{"image": p, "key": i} for i, p in enumerate(paths)]
    items.append({"image": (data / GOOD[0]).read_bytes(), "key": len(paths)})  # encoded bytes work too
    options = {"model": str(random_model_dir), "device": "cpu", "mode": "exact"}
    ds = ray.data.from_items(items)
    if stages == 1:
        ds = ds.map_batches(EmbedFaces, fn_constructor_kwargs={**options, "features": ["face", "trunk"]},
                            batch_size=3, compute=ActorPoolStrategy(size=1), num_cpus=1)
    else:  # detect on one actor, encode on another, in batches of other sizes
        ds = ds.map_batches(DetectFaces, fn_constructor_kwargs=options, batch_size=3,
                            compute=ActorPoolStrategy(size=1), num_cpus=1)
        ds = ds.map_batches(EncodeFaces, fn_constructor_kwargs={**options, "features": ["face", "trunk"]},
                            batch_size=4, compute=ActorPoolStrategy(size=1), num_cpus=1)
    rows = ds.take_all()
    expected = facepcl.embed([*paths, items[-1]["image"]], model=str(random_model_dir), device="cpu", mode="exact")
    faces = [r for r in rows if r["status"] == "face"]
    assert len(faces) == len(expected.face)
    assert "pose" not in rows[0] and "image" not in rows[0] and "crop" not in rows[0]
    for r, face, trunk, index in zip(faces, expected.face, expected.trunk, expected.image_index, strict=True):
        assert r["key"] == index
        np.testing.assert_allclose(r["face"], face, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(r["trunk"], trunk, atol=1e-4, rtol=1e-4)
        assert r["encoder_sha256"] == rows[0]["encoder_sha256"] and len(r["encoder_sha256"]) == 64
    counts = {}
    for r in faces:
        counts[r["key"]] = counts.get(r["key"], 0) + 1
        assert r["face_index"] == counts[r["key"]] - 1
    assert counts[len(paths)] == counts[0]  # the bytes of a photo give its faces
    others = {r["key"]: (r["status"], r["error"]) for r in rows if r["status"] != "face"}
    assert others[len(GOOD)][0] == "no_face" and "no face found" in others[len(GOOD)][1]
    assert others[len(GOOD) + 1][0] == "unreadable" and "empty.jpg" in others[len(GOOD) + 1][1]
    assert np.isnan(next(r for r in rows if r["status"] == "no_face")["face"]).all()


def test_ray_run_killed_then_resumed(ray_cluster, many, many_local, random_model_dir, tmp_path):
    local = many_local
    out = tmp_path / "ray"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "facepcl", "embed", str(many), "-o", str(out), "--model", str(random_model_dir),
           *OPTIONS, "--shard-size", "2", "--engine", "ray", "--ray-address", ray_cluster]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "_manifests").glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
        proc.send_signal(signal.SIGKILL)  # the driver dies hard: the shard in flight is lost
    finally:
        proc.wait(timeout=60)
    done = len(list((out / "_manifests").glob("*.json")))
    assert 0 < done < len(list(local.glob("part-*")))
    code = main(["embed", str(many), "-o", str(out), "--model", str(random_model_dir), *OPTIONS, "--shard-size",
                 "2", "--engine", "ray", "--resume"])
    assert code == 0
    assert_same_export(local, out)


def _embedding_actors() -> list[int]:
    """PIDs of this test process's Ray Data actors running EmbedFaces (descendants of this process only)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue

    def mine(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    found = []
    for pid in parents:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read()
        except OSError:
            continue
        if b"MapBatches(EmbedFaces)" in title and mine(pid):
            found.append(pid)
    return found


def test_worker_killed_mid_run(ray_cluster, many, many_local, random_model_dir, tmp_path):
    local = many_local
    out = tmp_path / "ray"
    killed: list[int] = []
    shards_then: list[int] = []

    def kill_one_actor() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if list((out / "_manifests").glob("*.json")):
                actors = _embedding_actors()
                if actors:
                    shards_then.append(len(list((out / "_manifests").glob("*.json"))))
                    os.kill(actors[0], signal.SIGKILL)
                    killed.append(actors[0])
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_actor)
    killer.start()
    try:
        code = main(["embed", str(many), "-o", str(out), "--model", str(random_model_dir), *OPTIONS,
                     "--shard-size", "2", "--engine", "ray"])
    finally:
        killer.join()
    assert killed, "no embedding actor was found to kill"
    assert shards_then[0] < len(list(local.glob("part-*")))  # killed before the end
    assert code == 0
    assert_same_export(local, out)  # nothing lost, nothing twice
    table = read_embeddings(out)
    keys = list(zip(table["item"].to_pylist(), table["face_index"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys))
