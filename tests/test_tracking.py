"""Tracks: association across frames, head angles, summaries, facepcl.track on real and synthesised videos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import facepcl
from facepcl.tracking import Tracker, TrackerOptions, head_angles, keyframes, summarize

from . import _samples, _video

TEMPLATE = np.array(facepcl.PreprocessConfig().template)


def _rotate(points: np.ndarray, degrees: float, centre: np.ndarray) -> np.ndarray:
    th = np.radians(degrees)
    r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    return (points - centre) @ r.T + centre


def test_roll_follows_an_in_plane_rotation_exactly():
    base = head_angles(TEMPLATE)
    for deg in (-40.0, -10.0, 5.0, 25.0):
        turned = head_angles(_rotate(TEMPLATE, deg, np.array([31.5, 31.5])))
        assert turned[2] == pytest.approx(base[2] + deg, abs=1e-4)
        np.testing.assert_allclose(turned[:2], base[:2], atol=1e-4)  # yaw and pitch do not move


def test_yaw_changes_sign_in_a_mirror_and_pitch_follows_the_nose():
    turned = TEMPLATE.copy()
    turned[2, 0] += 4.0  # nose to the image's right
    yaw = head_angles(turned)[0]
    assert yaw > 10
    mirrored = turned[[1, 0, 2, 4, 3]].copy()  # mirror: the image-left eye is the other eye
    mirrored[:, 0] = 63.0 - mirrored[:, 0]
    assert head_angles(mirrored)[0] == pytest.approx(-yaw, abs=1e-4)
    up = TEMPLATE.copy()
    up[2, 1] -= 3.0
    assert head_angles(up)[1] > 10
    assert np.isnan(head_angles(np.full((5, 2), np.nan))).all()


@pytest.mark.photos
def test_angles_on_real_rotated_and_mirrored_photos(photo_paths):
    image = cv2.cvtColor(cv2.imread(str(photo_paths["single_face.jpg"])), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), -15, 1.0)  # 15 degrees clockwise in the image
    rotated = cv2.warpAffine(image, m, (w, h))
    found = facepcl.embed([image, rotated, image[:, ::-1].copy()], model="pcl-demo", max_faces=1)
    a, b, c = head_angles(found.kps)
    assert b[2] - a[2] == pytest.approx(15.0, abs=2.0)
    assert np.sign(c[0]) == -np.sign(a[0]) or abs(a[0]) < 2


def _boxes(*centres: tuple[float, float], size: float = 60.0) -> np.ndarray:
    return np.array([[x - size / 2, y - size / 2, x + size / 2, y + size / 2] for x, y in centres])


def test_crossing_paths_keep_their_ids_with_the_motion_model():
    tracker = Tracker(TrackerOptions(appearance_weight=0, reid_similarity=2))
    first = tracker.update(0, _boxes((50, 100), (350, 100)))
    for f in range(1, 11):
        ids = tracker.update(f, _boxes((50 + 30 * f, 100), (350 - 30 * f, 100)))
        np.testing.assert_array_equal(ids, first)


def test_a_short_miss_keeps_the_id_and_a_long_one_does_not():
    tracker = Tracker(TrackerOptions(max_gap=5))
    a = tracker.update(0, _boxes((100, 100)))
    tracker.update(1, _boxes((110, 100)))
    assert tracker.update(5, _boxes((150, 100)))[0] == a[0]  # hidden for 3 frames, back where it was going
    assert tracker.update(20, _boxes((300, 100)))[0] != a[0]


def test_face_codes_decide_a_fast_swap_and_a_cut_ends_every_track():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(2, 64))
    tracker = Tracker()
    first = tracker.update(0, _boxes((100, 100), (400, 100)), codes)
    swapped = tracker.update(1, _boxes((400, 100), (100, 100)), codes)  # same people, places exchanged
    np.testing.assert_array_equal(swapped, first)
    overlap_only = Tracker(TrackerOptions(appearance_weight=0, reid_similarity=2))
    before = overlap_only.update(0, _boxes((100, 100), (400, 100)))
    after = overlap_only.update(1, _boxes((400, 100), (100, 100)))
    np.testing.assert_array_equal(after, before[::-1])  # by position alone, the ids swap
    tracker.cut()
    assert set(tracker.update(2, _boxes((100, 100), (400, 100)), codes)).isdisjoint(first)


def test_summary_rows_representative_and_keyframes():
    n = 9
    frame = np.arange(n) * 2
    yaw = np.linspace(-40, 40, n)
    angles = np.stack([yaw, np.zeros(n), np.zeros(n)], 1)
    bbox = _boxes(*[(100, 100)] * n)
    pose = np.stack([np.cos(np.radians(yaw)), np.sin(np.radians(yaw))], 1)
    face = np.ones((n, 4))
    s = summarize(7, "clip.mp4", frame, frame / 10, bbox, angles, np.ones(n), face, pose)
    assert s["representative_frame"] == 8  # yaw 0
    assert s["rows"] == n
    assert s["first_frame"] == 0
    assert s["last_frame"] == 16
    np.testing.assert_allclose(np.linalg.norm(s["face"]), 1, atol=1e-6)
    assert s["keyframes"][0] == 0  # the extremes of the pose range are kept
    assert s["keyframes"][-1] == 16
    assert keyframes(pose, 4, k=3) == [0, 4, 8]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["crossing", "occlusion", "swap", "cut"])
def test_synthesised_scenes_have_no_identity_switch_or_fragment(name):
    frames, scenes = _video.scenario(name, n=16)
    images = _video.compose(frames, scenes, _video.face_patches())
    tracks = facepcl.track(images, model="pcl-demo")
    truth, ids = _video.label_tracks(tracks, frames)
    found = sum(len(t) for t in truth)
    assert found >= sum(len(f) for f in frames) - 2  # every face found and tracked (crossing: one hides another)
    switches, fragments = _video.count_errors(truth, ids)
    if name == "cut":  # the same place after the cut is someone else: a new id, never the old one
        assert switches == 0
        assert len(tracks) == 2
    else:
        assert (switches, fragments) == (0, 0)


@pytest.mark.slow
def test_a_real_video_is_one_track_and_a_written_video_cuts(tmp_path):
    tracks = facepcl.track(_samples.pyfeat("single_face.mp4"), every=4, model="pcl-demo")
    assert len(tracks) == 1
    t = tracks[0]
    assert len(t) == len(set(t.frame.tolist()))  # one row per sampled frame
    assert t.summary["representative_frame"] in set(t.frame.tolist())
    assert set(t.summary["keyframes"]) <= set(t.frame.tolist())
    assert np.isfinite(t.angles).all()
    frames, scenes = _video.scenario("cut", n=12)
    path = _video.write_video(tmp_path / "cut.avi", _video.compose(frames, scenes, _video.face_patches()))
    tracks = facepcl.track(path, model="pcl-demo")
    assert [(int(t.frame[0]), int(t.frame[-1])) for t in tracks] == [(0, 5), (6, 11)]
    # the same tracks drawn by the command: one panel (thumbnails + plot) per track, faces pasted in
    from PIL import Image

    from facepcl.cli import main

    out = tmp_path / "strips.png"
    assert main(["plot", str(path), "--tracks", "--model", "pcl-demo", "-o", str(out), "--thumb-size", "48"]) == 0
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape[1] == 8 * 48
    first_thumb = picture[18 + 14:18 + 14 + 48, :48]
    assert first_thumb.std() > 20  # a face, not the empty frame of a missing thumbnail


@pytest.fixture(scope="module")
def crossing_video(tmp_path_factory):
    frames, scenes = _video.scenario("crossing", n=12)
    folder = tmp_path_factory.mktemp("clips")
    path = _video.write_video(folder / "crossing.avi", _video.compose(frames, scenes, _video.face_patches()))
    return path, frames


def _export(tmp_path, *inputs, extra=()):
    from facepcl.cli import main

    out = tmp_path / "out"
    assert main(["embed", *map(str, inputs), "-o", str(out), "--model", "pcl-demo", "-q", "--no-progress",
                 *extra]) == 0
    return out


@pytest.mark.slow
def test_the_export_tracks_every_video_row_and_summarises_each_track(crossing_video, photo_paths, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    video, frames = crossing_video
    out = _export(tmp_path, video, photo_paths["single_face.jpg"], extra=["--shard-size", "5"])
    table = pq.read_table(out)
    is_frame = table.column("frame").to_numpy() >= 0
    still = table.filter(pa.array(~is_frame))
    assert still.num_rows == 1
    assert still.column("track_id").to_pylist() == [-1]  # still images get no track
    rows = table.filter(pa.array(is_frame))
    by_track = {}
    for frame, tid, box in zip(rows.column("frame").to_pylist(), rows.column("track_id").to_pylist(),
                               rows.column("bbox").to_pylist(), strict=True):
        by_track.setdefault(tid, []).append((frame, box))
    tracks = facepcl.track(video, model="pcl-demo")  # the same tracks as the Python call
    assert sorted(by_track) == sorted(t.track_id for t in tracks)
    for t in tracks:
        assert [f for f, _ in by_track[t.track_id]] == t.frame.tolist()
    summary = facepcl.export.read_tracks(out).to_pylist()
    assert [s["track_id"] for s in summary] == [t.track_id for t in tracks]
    for s, t in zip(summary, tracks, strict=True):
        for key in ("first_frame", "last_frame", "rows", "representative_frame", "keyframes"):
            assert s[key] == t.summary[key], key
        np.testing.assert_allclose(s["face"], t.summary["face"], atol=1e-5)
        assert s["path"] == str(video)
    truth, ids = _video.label_tracks(tracks, frames)
    assert _video.count_errors(truth, ids) == (0, 0)  # a person crossing the frame keeps one id
    angles = np.stack([rows.column(c).to_numpy() for c in ("yaw", "pitch", "roll")], 1)
    assert np.isfinite(angles).all()


@pytest.mark.slow
def test_resume_inside_a_video_continues_the_same_tracks(crossing_video, tmp_path):
    import json
    import shutil

    import pyarrow.parquet as pq

    video, _ = crossing_video
    small = ["--shard-size", "4", "--batch-size", "2"]  # a shard every 2 frames
    whole = _export(tmp_path / "a", video, extra=small)
    cut = tmp_path / "b"
    shutil.copytree(whole, cut)
    manifests = sorted((cut / "_manifests").glob("part-*.json"))
    kept = manifests[: len(manifests) // 2]
    assert json.loads(kept[-1].read_text())["tracking"]["video"]["tracker"]["tracks"]  # ended inside the video
    for m in manifests[len(kept):]:  # as if the run had been killed after the kept shards
        (cut / m.name.replace(".json", ".parquet")).unlink()
        m.unlink()
    (cut / "_tracks.parquet").unlink()
    from facepcl.cli import main

    assert main(["embed", str(video), "-o", str(cut), "--model", "pcl-demo", "-q", "--no-progress", *small,
                 "--resume"]) == 0
    for name in ("track_id", "frame", "face"):
        assert pq.read_table(cut).column(name).to_pylist() == pq.read_table(whole).column(name).to_pylist(), name
    assert facepcl.export.read_tracks(cut).to_pylist() == facepcl.export.read_tracks(whole).to_pylist()


@pytest.mark.slow
def test_no_track_and_ids_never_cross_a_cut(tmp_path):
    import pyarrow.parquet as pq

    frames, scenes = _video.scenario("cut", n=10)
    video = _video.write_video(tmp_path / "cut.avi", _video.compose(frames, scenes, _video.face_patches()))
    out = _export(tmp_path / "t", video)
    table = pq.read_table(out)
    ids = dict(zip(table.column("frame").to_pylist(), table.column("track_id").to_pylist(), strict=True))
    assert {ids[f] for f in range(5)}.isdisjoint({ids[f] for f in range(5, 10)})
    off = _export(tmp_path / "n", video, extra=["--no-track"])
    assert set(pq.read_table(off).column("track_id").to_pylist()) == {-1}
    assert not (off / "_tracks.parquet").exists()
    with pytest.raises(FileNotFoundError, match="no track summary"):
        facepcl.export.read_tracks(off)


def test_a_tracker_restored_from_its_state_continues_the_same_tracks():
    import json

    from facepcl.tracking import VideoTracker

    rng = np.random.default_rng(1)
    codes = rng.normal(size=(2, 32))
    image = np.full((120, 500, 3), 90, np.uint8)

    def faces(f: int) -> tuple[np.ndarray, np.ndarray]:  # A leaves after frame 3; B walks on
        if f <= 3:
            return _boxes((60 + 5 * f, 60), (300 + 10 * f, 60)), codes
        return _boxes((300 + 10 * f, 60)), codes[1:]

    whole = VideoTracker()
    want = [whole.frame(f, image, *faces(f)).tolist() for f in range(10)]
    first = VideoTracker()
    got = [first.frame(f, image, *faces(f)).tolist() for f in range(6)]
    restored = VideoTracker.from_state(json.loads(json.dumps(first.state())))
    got += [restored.frame(f, image, *faces(f)).tolist() for f in range(6, 10)]
    assert got == want
    fresh = VideoTracker()  # without the state, B would be renumbered
    assert [fresh.frame(f, image, *faces(f)).tolist() for f in range(6, 10)] != want[6:]


@pytest.mark.slow
def test_search_grouped_by_track_returns_each_track_once(crossing_video, tmp_path, capsys):
    import json

    from facepcl.cli import main
    from facepcl.search import FaceIndex

    video, _ = crossing_video
    out = _export(tmp_path, video)
    assert main(["index", str(out), "-o", str(tmp_path / "idx")]) == 0
    index = FaceIndex.load(tmp_path / "idx")
    table = facepcl.export.read_embeddings(out)
    first = table.column("track_id").to_pylist()[0]
    query = np.asarray(table.column("face").to_pylist()[0], np.float32)
    grouped = index.search(query, by="face", k=5, group="track").records[0]
    ids = [r["track_id"] for r in grouped]
    assert len(ids) == len(set(ids))  # each track once
    assert len(grouped) == 2  # two people, two tracks
    assert grouped[0]["track_id"] == first
    assert sum(r["matches"] for r in grouped) == len(table)  # every row was looked at, each counted once
    plain = index.search(query, by="face", k=5).records[0]
    assert len({r["track_id"] for r in plain}) < len(plain)  # without grouping, one track fills the list
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), f"{out}#0", "--group", "track", "-k", "5", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["neighbours"]
    assert [h["track_id"] for h in hits] == [r["track_id"] for r in grouped]


@pytest.mark.slow
def test_a_video_cut_short_keeps_its_tracks_up_to_the_damage_and_records_the_rest(tmp_path):
    import json

    import pyarrow.parquet as pq

    from .test_export_video import remux_avi

    whole = tmp_path / "whole.avi"
    remux_avi(_samples.pyfeat("single_face.mp4"), whole)
    cut = tmp_path / "cut.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = _export(tmp_path / "e", cut, _samples.pyfeat("no_face.mp4"), extra=["--every", "4"])
    table = pq.read_table(out)
    frames = table.column("frame").to_pylist()
    assert frames == sorted(frames)
    assert 0 < len(frames) < 72 // 4  # the frames before the damage only
    assert set(table.column("track_id").to_pylist()) == {0}  # one person, one track (input 0)
    records = [json.loads(line) for line in (out / "_errors.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "truncated" and r["path"].endswith("cut.avi") for r in records)
    assert any(r["kind"] == "no_face" and r["path"].endswith("no_face.mp4") for r in records)
    (summary,) = facepcl.export.read_tracks(out).to_pylist()  # the video without a face has no track
    assert summary["rows"] == len(frames)
    with pytest.warns(RuntimeWarning, match="truncated after frame"):
        tracks = facepcl.track(cut, every=4, model="pcl-demo")
    assert [t.frame.tolist() for t in tracks] == [frames]


@pytest.mark.slow
def test_a_folder_of_frames_is_tracked_as_one_video_with_sequences(tmp_path):
    import pyarrow.parquet as pq
    from PIL import Image

    from facepcl.io.inputs import iter_inputs

    frames, scenes = _video.scenario("crossing", n=10)
    clip = tmp_path / "shots" / "clip1"
    clip.mkdir(parents=True)
    for i, image in enumerate(_video.compose(frames, scenes, _video.face_patches())):
        Image.fromarray(image).save(clip / f"frame{i:03d}.png")
    items = list(iter_inputs([str(tmp_path / "shots")], sequences=True))
    assert [(i.path, i.kind) for i in items] == [(str(clip), "video")]
    assert len(list(iter_inputs([str(tmp_path / "shots")]))) == 10  # without: ten still images
    out = _export(tmp_path / "e", tmp_path / "shots", extra=["--sequences"])
    table = pq.read_table(out)
    assert sorted(set(table.column("frame").to_pylist())) == list(range(10))
    tracks = facepcl.track(clip, model="pcl-demo")  # the same tracks as the Python call on the folder
    ids = table.column("track_id").to_pylist()
    assert sorted(set(ids)) == sorted(t.track_id for t in tracks)
    assert facepcl.export.read_tracks(out).column("rows").to_pylist() == [len(t) for t in tracks]
    truth, got = _video.label_tracks(tracks, frames)
    assert _video.count_errors(truth, got) == (0, 0)
