"""`facepcl embed` end to end: the real command in subprocesses, on real photos, bad files and a real video.

Every run uses one encoder/detector batch per image (``--batch-size 1``) and
one torch thread, so that runs that split the work differently (killed and
resumed, two torchrun processes) must give bit-identical rows.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import facepcl
from facepcl.cli import main
from facepcl.export import column_to_numpy, read_embeddings, read_errors, read_metadata
from tests import _samples

from ._threads import torch_threads

pytestmark = [pytest.mark.slow, pytest.mark.photos]

GOOD = ["0-f1-su-ph.jpg", "45-m7-di-ph.jpg", "multi_face.jpg", "single_face.jpg", "Image_with_alpha.png"]
NO_FACE = "free-mountain-vector-01.jpg"
EVERY = 6
VIDEO_FRAMES = list(range(0, 72, EVERY))  # single_face.mp4 has 72 frames at 30 fps
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "PYTHONUNBUFFERED": "1"}
VECTORS = ("bbox", "kps", "face", "pose", "trunk")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A folder of real photos, bad files of every kind, a real video and a broken one."""
    root = tmp_path_factory.mktemp("embed-data")
    photos = root / "photos"
    (photos / "more").mkdir(parents=True)
    for name in [*GOOD, NO_FACE]:
        shutil.copy(_samples.pyfeat(name), photos / name)
    shutil.copy(_samples.astronaut(), photos / "more" / "astronaut.png")
    shutil.copy(_samples.grace_hopper(), photos / "more" / "grace_hopper.jpg")
    jpg = _samples.pyfeat("single_face.jpg").read_bytes()
    png = _samples.astronaut().read_bytes()
    corrupt = bytearray(jpg)
    corrupt[2:300] = bytes(range(256)) + bytes(42)  # the JPEG markers are destroyed
    (photos / "corrupt.jpg").write_bytes(bytes(corrupt))
    (photos / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    (photos / "truncated.png").write_bytes(png[: len(png) // 2])
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.jpg").write_text("shopping list\n" * 20)
    (photos / "readme.txt").write_text("not media: folders skip it\n")
    # first in sorted order, so that interrupted runs below stop inside it and resume part way through it
    shutil.copy(_samples.pyfeat("single_face.mp4"), photos / "0-clip.mp4")
    (photos / "more" / "broken.mp4").write_text("not a video\n" * 30)
    return photos


BAD = {"corrupt.jpg", "truncated.jpg", "truncated.png", "empty.jpg", "notes.jpg", "more/broken.mp4"}


def embed_cmd(data: Path, out: Path, model: Path, *extra: str, torchrun: int = 0) -> list[str]:
    head = [sys.executable, "-m", "facepcl"]
    if torchrun:
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(torchrun),
                "-m", "facepcl"]
    return [*head, "embed", str(data), "-o", str(out), "--model", str(model), "--every", str(EVERY),
            "--batch-size", "1", "--device", "cpu", "--num-workers", "2", *extra]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, **kw)


@pytest.fixture()
def one_torch_thread():
    """One torch thread in this process, like the subprocesses (their rows are then bit-identical)."""
    with torch_threads(1):
        yield


@pytest.fixture()
def in_process(capsys, one_torch_thread):
    """Run the same command line in this process (no interpreter start-up)."""

    def call(cmd: list[str]) -> tuple[int, str]:
        assert cmd[:3] == [sys.executable, "-m", "facepcl"]
        capsys.readouterr()
        rc = main(cmd[3:])
        return rc, capsys.readouterr().err

    return call


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data, random_model_dir) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("ref") / "out"
    proc = run(embed_cmd(data, out, random_model_dir, "--shard-size", "5"))
    assert proc.returncode == 0, proc.stderr
    return proc, out


def assert_same_rows(a, b) -> None:
    """Two exports hold exactly the same rows: keys, provenance columns and bit-identical vectors."""
    assert a.column_names == b.column_names
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        if name in VECTORS:
            np.testing.assert_array_equal(column_to_numpy(a, name), column_to_numpy(b, name), err_msg=name)
        elif name in ("timestamp", "det_score", "yaw", "pitch", "roll", "sharpness"):  # NaN where absent
            np.testing.assert_array_equal(a.column(name).to_numpy(), b.column(name).to_numpy(), err_msg=name)
        else:
            assert a.column(name).to_pylist() == b.column(name).to_pylist(), name


def keys(table) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in ("item", "frame", "face_index")), strict=True))


def rel(path: str, data: Path) -> str:
    return os.path.relpath(path, data)


def test_folder_of_photos_with_bad_files(reference, data, random_model_dir, one_torch_thread) -> None:
    proc, out = reference
    table = read_embeddings(out)
    assert len(set(keys(table))) == table.num_rows  # one row per face, no duplicates
    paths = [rel(p, data) for p in table.column("path").to_pylist()]
    # every good image is there, with exactly the faces the library finds in it
    embedder = facepcl.FaceEmbedder(facepcl.load(random_model_dir, device="cpu"))
    for name in [*GOOD, "more/astronaut.png", "more/grace_hopper.jpg"]:
        rows = [i for i, p in enumerate(paths) if p == name]
        expected = embedder.embed(str(data / name))
        assert len(rows) == len(expected) >= 1, name
        got = table.take(rows)
        assert got.column("face_index").to_pylist() == list(range(len(rows)))
        assert set(got.column("frame").to_pylist()) == {-1}
        np.testing.assert_allclose(column_to_numpy(got, "bbox"), expected.bbox, atol=1e-3)
        np.testing.assert_allclose(column_to_numpy(got, "kps").reshape(-1, 5, 2), expected.kps, atol=1e-3)
        for f in ("face", "pose", "trunk"):
            np.testing.assert_allclose(column_to_numpy(got, f), getattr(expected, f), rtol=1e-4, atol=1e-4)
        h, w = facepcl.load_image(data / name).shape[:2]
        assert set(got.column("width").to_pylist()) == {w}
        assert set(got.column("height").to_pylist()) == {h}
    assert len([p for p in paths if p == "multi_face.jpg"]) == 5
    # bad inputs are recorded with a reason, not fatal; non-media files in folders are not inputs
    errors = [json.loads(line) for line in (out / "_errors.jsonl").read_text().splitlines()]
    assert errors == read_errors(out)
    by_path = {rel(e["path"], data): e for e in errors}
    assert set(by_path) == BAD | {NO_FACE}
    assert by_path[NO_FACE]["kind"] == "no_face"
    for name in BAD:
        assert by_path[name]["kind"] == "unreadable"
        assert name.split("/")[-1] in by_path[name]["reason"]
    assert "empty file" in by_path["empty.jpg"]["reason"]
    assert "truncated" in by_path["truncated.png"]["reason"]
    assert not any("readme" in p for p in paths + list(by_path))
    assert not set(paths) & set(by_path)
    # summary on stderr; no progress bar when stderr is not a terminal
    summary = proc.stderr.strip().splitlines()[-1]
    # the 5 unreadable image files are inputs, not images (only the 8 decoded photos are)
    assert "done: 15 inputs (8 images, 2 videos, 12 frames)" in summary
    assert f"{table.num_rows} faces" in summary
    assert "7 skipped" in summary
    assert "images/s" in summary
    assert "\r" not in proc.stderr
    # provenance
    meta = read_metadata(out)
    cfg = facepcl.PCLConfig.from_json_file(random_model_dir / "config.json")
    assert meta["config_hash"] == cfg.hash()
    assert meta["model_id"] == str(random_model_dir)
    assert meta["facepcl_version"] == facepcl.__version__
    assert meta["feature_dim"] == 2048
    assert meta["preprocess"]["template"] == cfg.preprocess.template
    assert meta["every"] == EVERY
    assert json.loads(pq.read_schema(next(out.glob("part-*.parquet"))).metadata[b"facepcl"]) == meta


def test_video_frames_and_timestamps(reference, data) -> None:
    _, out = reference
    table = read_embeddings(out)
    rows = [i for i, p in enumerate(table.column("path").to_pylist()) if p.endswith("clip.mp4")]
    video = table.take(rows)
    assert video.column("frame").to_pylist() == VIDEO_FRAMES  # one face in every kept frame, in order
    np.testing.assert_allclose(video.column("timestamp").to_numpy(), np.array(VIDEO_FRAMES) / 30.0, atol=1e-6)
    assert set(video.column("width").to_pylist()) == {640}
    assert set(video.column("height").to_pylist()) == {360}
    assert np.isnan(table.take([i for i in range(table.num_rows) if i not in rows]).column("timestamp")
                    .to_numpy()).all()


def wait_for_shards(out: Path, proc: subprocess.Popen, n: int) -> None:
    deadline = time.monotonic() + 300
    while len(list(out.glob("part-*"))) < n:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_killed_run_resumes_to_exactly_the_same_rows(reference, data, random_model_dir, tmp_path) -> None:
    out = tmp_path / "out"
    cmd = embed_cmd(data, out, random_model_dir, "--shard-size", "1")
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_shards(out, proc, 3)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    ends = [json.loads(p.read_text())["end"] for p in (out / "_manifests").glob("part-*.json")]
    assert ends
    assert all(e["item"] == 0 for e in ends)
    assert not any(e["complete"] for e in ends)  # killed inside the video
    partial = pq.read_table(out)  # what a killed run leaves is readable: half-written files are hidden
    assert 0 < partial.num_rows < read_embeddings(reference[1]).num_rows
    resumed = run([*cmd, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming rank 0" in resumed.stderr
    table = read_embeddings(out)
    assert_same_rows(table, read_embeddings(reference[1]))
    assert len(set(keys(table))) == table.num_rows
    assert read_errors(out) == read_errors(reference[1])
    assert not [p for p in os.listdir(out) if p.startswith(".")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_and_exits(sig, reference, data, random_model_dir, tmp_path) -> None:
    out = tmp_path / "out"
    cmd = embed_cmd(data, out, random_model_dir, "--shard-size", "2")
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_shards(out, proc, 2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, stderr
    assert "interrupted" in stderr
    assert "--resume" in stderr
    # the batch in hand was saved: the last shard ends where the run stopped, and the skip log is written
    assert (out / "_errors.jsonl").exists()
    assert not [p for p in os.listdir(out) if p.startswith(".")]
    assert 0 < pq.read_table(out).num_rows < read_embeddings(reference[1]).num_rows
    if sig == signal.SIGTERM:
        return  # resuming is the same as after Ctrl-C
    resumed = run([*cmd, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_rows(read_embeddings(out), read_embeddings(reference[1]))


def test_resuming_a_finished_export_changes_nothing(reference, data, random_model_dir, tmp_path, in_process) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference[1], out)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.glob("part-*"))
    rc, err = in_process(embed_cmd(data, out, random_model_dir, "--shard-size", "5", "--resume"))
    assert rc == 0
    assert "done: 0 inputs" in err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.glob("part-*")) == before
    assert_same_rows(read_embeddings(out), read_embeddings(reference[1]))
    assert read_errors(out) == read_errors(reference[1])


def test_torchrun_two_processes_give_the_same_rows(reference, data, random_model_dir, tmp_path) -> None:
    out = tmp_path / "out"
    proc = run(embed_cmd(data, out, random_model_dir, torchrun=2))
    assert proc.returncode == 0, proc.stderr
    shards = sorted(p.name for p in out.glob("part-*.parquet"))
    assert any(s.startswith("part-r00000-") for s in shards)
    assert any(s.startswith("part-r00001-") for s in shards)
    table = read_embeddings(out)
    assert_same_rows(table, read_embeddings(reference[1]))
    assert pq.read_table(out).num_rows == table.num_rows  # the folder reads as one table
    assert read_errors(out) == read_errors(reference[1])
    assert "done across 2 processes: 15 inputs" in proc.stderr
    # each rank took the inputs with index % 2 == rank
    for shard in shards:
        rank = int(shard[6:11])
        assert {i % 2 for i in pq.read_table(out / shard).column("item").to_pylist()} <= {rank}


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_other_formats_hold_the_same_rows(fmt, reference, data, random_model_dir, tmp_path, in_process) -> None:
    out = tmp_path / "out"
    rc, err = in_process(embed_cmd(data, out, random_model_dir, "--format", fmt, "--shard-size", "8"))
    assert rc == 0, err
    ref = read_embeddings(reference[1])
    assert_same_rows(read_embeddings(out), ref)
    shards = sorted(out.glob(f"part-*.{fmt}"))
    assert len(shards) > 1
    if fmt == "npz":  # the documented numpy one-liner
        face = np.concatenate([np.load(f)["face"] for f in shards])
        np.testing.assert_array_equal(face, column_to_numpy(ref, "face"))
    else:
        from safetensors import safe_open
        from safetensors.numpy import load_file

        face = np.concatenate([load_file(f)["face"] for f in shards])
        np.testing.assert_array_equal(face, column_to_numpy(ref, "face"))
        with safe_open(str(shards[0]), "np") as f:
            assert json.loads(f.metadata()["facepcl"])["config_hash"] == read_metadata(reference[1])["config_hash"]
    with open(out / "index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    assert [(int(r["item"]), int(r["frame"]), int(r["face_index"])) for r in index] == keys(ref)
    assert [r["path"] for r in index] == ref.column("path").to_pylist()


def test_fatal_errors_exit_1(reference, data, random_model_dir, tmp_path, in_process) -> None:
    _, out = reference
    rc, err = in_process(embed_cmd(data, out, random_model_dir))
    assert rc == 1
    assert "already holds shards" in err
    assert "--resume" in err
    rc, err = in_process(embed_cmd(data, out, random_model_dir, "--features", "face", "--resume"))
    assert rc == 1
    assert "other settings" in err
    assert "features: was ['face', 'pose', 'trunk'], now ['face']" in err
    rc, err = in_process(embed_cmd(data, out, random_model_dir, "--resume", "--overwrite"))
    assert rc == 1
    assert "contradict" in err
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("x")
    rc, err = in_process(embed_cmd(tmp_path / "nothing", tmp_path / "o1", random_model_dir))
    assert rc == 1
    assert "no input files found" in err
    cmd = embed_cmd(data, tmp_path / "o2", random_model_dir)
    cmd[cmd.index(str(data))] = f"@{tmp_path}/missing.txt"
    rc, err = in_process(cmd)
    assert rc == 1
    assert "missing.txt" in err
    rc, err = in_process(embed_cmd(data, tmp_path / "o3", tmp_path / "no-such-model"))
    assert rc == 1
    assert "no-such-model" in err
    rc, err = in_process(embed_cmd(data / NO_FACE, tmp_path / "o4", random_model_dir, "--on-no-face", "error"))
    assert rc == 1
    assert "no face found" in err
    assert NO_FACE in err
    with pytest.raises(SystemExit) as usage:
        main(["embed", str(data), "-o", str(tmp_path / "o5"), "--features", "face,ears"])
    assert usage.value.code == 2


def test_overwrite_starts_over_with_other_settings(reference, data, random_model_dir, tmp_path, in_process) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference[1], out)
    (out / "mine.txt").write_text("not part of the export")
    rc, err = in_process(embed_cmd(data, out, random_model_dir, "--features", "face", "--overwrite"))
    assert rc == 0, err
    table = read_embeddings(out)
    ref = read_embeddings(reference[1])
    assert "pose" not in table.column_names
    assert "trunk" not in table.column_names
    assert keys(table) == keys(ref)
    np.testing.assert_array_equal(column_to_numpy(table, "face"), column_to_numpy(ref, "face"))
    assert (out / "mine.txt").read_text() == "not part of the export"
    assert json.loads((out / "_run.json").read_text())["features"] == ["face"]


def test_aligned_crops_without_detection_and_full_image_fallback(data, random_model_dir, tmp_path,
                                                                  in_process) -> None:
    crops = tmp_path / "crops"
    crops.mkdir()
    embedder = facepcl.FaceEmbedder(facepcl.load(random_model_dir, device="cpu"), return_crops=True)
    result = embedder.embed(str(data / "multi_face.jpg"))
    from PIL import Image

    for i, crop in enumerate(result.crops[:3]):
        Image.fromarray(crop).save(crops / f"face{i}.png")
    out = tmp_path / "aligned"
    rc, err = in_process(embed_cmd(crops, out, random_model_dir, "--no-detect", "--features", "face,trunk"))
    assert rc == 0, err
    table = read_embeddings(out)
    assert table.column_names[-2:] == ["face", "trunk"]
    assert "pose" not in table.column_names
    assert table.column("face_index").to_pylist() == [0, 0, 0]
    assert np.isnan(table.column("det_score").to_numpy()).all()
    np.testing.assert_array_equal(column_to_numpy(table, "bbox"), [[0, 0, 64, 64]] * 3)
    np.testing.assert_allclose(column_to_numpy(table, "face"), result.face[:3], rtol=1e-4, atol=1e-4)
    rc, err = in_process(embed_cmd(data / NO_FACE, tmp_path / "full", random_model_dir, "--on-no-face",
                                   "full_image"))
    assert rc == 0, err
    row = read_embeddings(tmp_path / "full")
    assert row.num_rows == 1
    assert np.isnan(row.column("det_score").to_numpy()).all()
    assert read_errors(tmp_path / "full") == []


def test_progress_bar_on_a_terminal(data, random_model_dir, tmp_path) -> None:
    import pty

    master, slave = pty.openpty()  # a terminal that reports no size: the bar must still be drawn
    cmd = embed_cmd(data / "single_face.jpg", tmp_path / "out", random_model_dir)
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    shown = b"".join(chunks).decode(errors="replace")
    assert proc.wait() == 0
    assert "embed: 100%" in shown
    assert "1/1" in shown
    assert "faces=1" in shown
    assert "done: 1 inputs" in shown


def test_sigterm_while_listing_a_symlink_to_the_root_stops_promptly(data, random_model_dir, tmp_path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    os.symlink("/", inputs / "root")  # the whole file system, /proc and its loops included
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "facepcl", "embed", str(data / "single_face.jpg"), str(inputs), "-o", str(out),
           "--model", str(random_model_dir), "--no-detect", "--batch-size", "1", "--device", "cpu",
           "--num-workers", "1"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):  # past start-up: the settings are written, the walk of / has begun
            if (out / "_run.json").exists() or proc.poll() is not None:
                break
            time.sleep(0.25)
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted" in stderr
    assert "--resume" in stderr
    assert "Traceback" not in stderr
