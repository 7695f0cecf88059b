"""``prepare_tracks``: raw videos, frame folders and images -> aligned face tracks for ``facepcl train``."""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .._utils.version import __version__
from ..align import align_faces
from ..config import PreprocessConfig
from ..detection import FaceDetector
from ..io import load_image
from ..io.inputs import InputItem
from ..io.ranks import from_env, rank_device
from ..io.stream import Unit, iter_units
from ._sources import Source, list_sources, shard
from ._state import (
    TRACK_FILE,
    Ledger,
    check_outside_inputs,
    check_settings,
    commit_track,
    drop_track,
    lock,
    read_ledgers,
    record_files,
    track_done,
    track_problem,
    work_dir,
    write_text,
)
from ._tracks import Tracker

log = logging.getLogger("facepcl.prepare")

# 0.4 * 160 = 64: PCL's face patches (0.4 of the frame side) are then cut at the network's 64 px without
# being enlarged (docs/training.md).
DEFAULT_FRAME_SIZE = 160


@dataclass
class PrepareSummary:
    """What one run (one shard) did.

    Attributes:
        sources: Sources of this shard.
        resumed: Of those, already done by an earlier run (skipped).
        tracks: Tracks written by this run.
        frames: Frames written by this run.
        no_face: Sources in which no face was found.
        errors: Sources that could not be read (``(path, reason)``); logged, never fatal.
        seconds: Wall time.
    """

    sources: int = 0
    resumed: int = 0
    tracks: int = 0
    frames: int = 0
    no_face: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


class _Job:
    """The source in progress: its tracker and the crops of every track so far (in the work folder)."""

    def __init__(self, source: Source, work: str, tracker: Tracker) -> None:
        self.source, self.work, self.tracker = source, work, tracker
        self.folder = os.path.join(work, f"s{source.index:09d}")
        os.makedirs(self.folder, exist_ok=True)
        self.landmarks: dict[tuple[int, int], list[list[float]]] = {}
        self.decoded = self.bad_frames = 0
        self.error: str | None = None


def prepare_tracks(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *, every: int = 1,
                   frame_size: int = DEFAULT_FRAME_SIZE, shard_index: int | None = None,
                   shard_count: int | None = None, device: str | None = None, detect_size: int = 640,
                   det_threshold: float = 0.8, min_face_size: float = 0.0, min_iou: float = 0.3,
                   workers: int = 2, detector: FaceDetector | None = None,
                   all_tracks: int | None = None) -> PrepareSummary:
    """Turn videos, frame folders and images into aligned face tracks ``OUT/identity/video/NNNNNN.png``.

    Each source (a video, a folder of frames or an image; docs/training.md
    says how inputs map to ``identity/video``) gives at most one track: its faces are detected on
    every ``every``-th frame, linked across frames by box overlap
    (:class:`facepcl.prepare.Tracker`), and the frames of the main track
    (the face present longest) are aligned with the model template at
    ``frame_size`` px and written as ``NNNNNN.png`` (NNNNNN: the source frame
    number; frames without that face are skipped). ``track.json`` beside
    them records the provenance. A track lands in one rename, so a killed run
    leaves whole tracks only; running the same call again continues where it
    stopped and writes exactly what one run would have. Unreadable sources
    are logged and recorded in ``OUT/_prepare/ledger-*.jsonl``, never fatal.

    Args:
        inputs: Video files, image files and folders (walked: VoxCeleb1/2 layouts work as downloaded).
        out: Output folder (``data.root`` of ``facepcl train``).
        every: Use frames ``0, every, 2*every, ...`` of each video or frame folder.
        frame_size: Side of the aligned frames in pixels.
        shard_index: This process's shard; None: ``RANK`` under torchrun, else 0.
        shard_count: Number of shards; None: ``WORLD_SIZE`` under torchrun, else 1.
        device: Detector device (None: CUDA if available; under torchrun ``cuda:LOCAL_RANK``).
        detect_size: Longer image side the detector works at (smaller is faster; faces stay in source pixels).
        det_threshold: Minimum detector score.
        min_face_size: Ignore faces whose box is smaller than this many source pixels.
        min_iou: Box overlap that links a face to a track (see :class:`facepcl.prepare.Tracker`).
        workers: Decoding threads.
        detector: A ready :class:`facepcl.FaceDetector` (overrides device and the detector settings).
        all_tracks: Also keep every other track with at least this many frames, each as an identity of its
            own: ``OUT/<identity>-tNNN/<video>/`` (NNN: the track's number in its source). None: the main track only.

    Returns:
        A :class:`PrepareSummary` of this shard.
    """
    t0 = time.perf_counter()
    out = os.fspath(out)
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if frame_size < 32:
        raise ValueError(f"frame_size must be at least 32 px, got {frame_size}")
    if all_tracks is not None and all_tracks < 1:
        raise ValueError(f"all_tracks must be at least 1 frame, got {all_tracks}")
    check_outside_inputs(out, [os.fspath(i) for i in inputs])
    info = from_env()
    index = info.rank if shard_index is None else int(shard_index)
    count = info.world_size if shard_count is None else int(shard_count)
    preprocess = PreprocessConfig().resized(frame_size)
    if detector is None:
        detector = FaceDetector(device=rank_device(device, info), max_size=detect_size,
                                det_threshold=det_threshold, min_face_size=min_face_size)
    settings = {"every": every, "frame_size": frame_size, "template": preprocess.template,
                "interpolation": preprocess.interpolation, "border": preprocess.border, "detector": detector.name,
                "detect_size": detector.max_size, "det_threshold": detector.det_threshold,
                "min_face_size": detector.min_face_size, "min_iou": min_iou}
    if all_tracks is not None:  # absent otherwise, so folders prepared before the option still resume
        settings["all_tracks"] = int(all_tracks)
    os.makedirs(out, exist_ok=True)
    summary = PrepareSummary()
    held = lock(out, index)
    try:
        check_settings(out, settings)
        _run_shard(inputs, out, index, count, settings, summary, detector, preprocess, every, min_iou, workers)
    finally:
        held.release()
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_shard(inputs: Sequence[str | os.PathLike], out: str, index: int, count: int, settings: dict[str, Any],
               summary: PrepareSummary, detector: FaceDetector, preprocess: PreprocessConfig, every: int,
               min_iou: float, workers: int) -> None:
    """Prepare this shard's sources that are not done (under its lock), counting into ``summary``."""
    mine = shard(list_sources(inputs), index, count)
    summary.sources = len(mine)
    done = read_ledgers(out)
    todo = []
    ledger = Ledger(out, index)
    for s in mine:
        finished = (s.index in done and done[s.index].get("key") == s.key
                    and done[s.index].get("status") == "ok") or track_done(out, s.key)
        problem = track_problem(out, s.key) if finished and track_done(out, s.key) else None
        if problem is not None:
            log.warning("redoing %s: its track %s is damaged (%s)", s.path, os.path.join(out, s.key), problem)
            drop_track(out, s.key)
            todo.append(s)
        elif s.index in done and done[s.index].get("key") == s.key:
            summary.resumed += 1
        elif track_done(out, s.key):
            ledger.add({"index": s.index, "key": s.key, "status": "ok", "source": s.path})
            summary.resumed += 1
        else:
            todo.append(s)
    work = work_dir(out, index, fresh=True)
    log.info("shard %d of %d: %d sources, %d done before, %d to prepare", index, count, len(mine),
             summary.resumed, len(todo))
    try:
        for job in _jobs(todo, work, detector, preprocess, every, min_iou, workers):
            _finish(job, out, settings, ledger, summary)
    finally:
        ledger.close()


def _items(todo: list[Source], every: int, where: dict[int, tuple[Source, int, bool]]) -> Iterator[InputItem]:
    """Decoder inputs: a video item per video, an image item per kept frame; ``where`` maps them back."""
    counter = itertools.count()
    for s in todo:
        if s.error is not None or s.kind in ("video", "image"):
            i = next(counter)
            where[i] = (s, 0, True)
            yield InputItem(i, s.path, "image" if s.kind == "image" else "video", "", s.error)
            continue
        kept = range(0, len(s.frames), every)
        for n in kept:
            i = next(counter)
            where[i] = (s, n, n == kept[-1])
            yield InputItem(i, os.path.join(s.path, s.frames[n]), "image", "")


def _jobs(todo: list[Source], work: str, detector: FaceDetector, preprocess: PreprocessConfig, every: int,
          min_iou: float, workers: int) -> Iterator[_Job]:
    """Run detection and tracking over the decoded stream; yield each source's job when it ends."""
    where: dict[int, tuple[Source, int, bool]] = {}
    job: _Job | None = None
    units = iter_units(_items(todo, every, where), load_image, every=every, workers=workers,
                       lookahead=4 * max(1, workers), prepare=detector.prepare)
    for unit in units:
        source, frame, last = where[unit.item.index]
        if job is None or job.source.index != source.index:
            job = _Job(source, work, Tracker(min_iou))
        if unit.item.kind == "video":
            frame, last = unit.frame, unit.end
        if unit.image is not None:
            job.decoded += 1
            _track_frame(job, unit, frame, detector, preprocess)
        elif unit.error is not None and (unit.frame >= 0 or (source.kind == "frames" and source.error is None)):
            job.bad_frames += 1  # one unreadable frame of a video or frame folder: skip it, keep the source
            log.warning("skipping a frame: %s", unit.error)
        elif unit.error is not None:
            job.error = unit.error
        if unit.item.kind != "video" or last:
            where.pop(unit.item.index, None)
        if last:
            yield job
            job = None


def _track_frame(job: _Job, unit: Unit, frame: int, detector: FaceDetector, preprocess: PreprocessConfig) -> None:
    found = detector.detect_prepared([unit.prepared])[0]
    if not len(found):
        return
    ids = job.tracker.update(frame, found.boxes, found.scores)
    crops, _ = align_faces(unit.image, found.kps, preprocess)
    for track_id, crop, kps in zip(ids, crops, found.kps, strict=True):
        folder = os.path.join(job.folder, f"t{track_id:04d}")
        os.makedirs(folder, exist_ok=True)
        ok, png = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("OpenCV could not encode a PNG")
        with open(os.path.join(folder, f"{frame:06d}.png"), "wb") as f:
            f.write(png.tobytes())
        job.landmarks[(track_id, frame)] = np.round(kps.astype(np.float64), 2).tolist()


def _finish(job: _Job, out: str, settings: dict[str, Any], ledger: Ledger, summary: PrepareSummary) -> None:
    s = job.source
    record: dict[str, Any] = {"index": s.index, "key": s.key, "source": s.path}
    main = job.tracker.main()
    try:
        if job.error is not None and job.decoded == 0:
            raise _SourceError(job.error)
        if job.decoded == 0 and job.bad_frames:
            raise _SourceError(f"none of its {job.bad_frames} frames could be read")
        if main is None:
            record["status"] = "no_face"
            summary.no_face += 1
            log.warning("%s: no face in %d frames; no track written", s.path, job.decoded)
        else:
            if job.error is not None:  # e.g. a video cut short: its frames before the damage are kept
                record["warning"] = job.error
                log.warning("%s: %s", s.path, job.error)
            min_frames = settings.get("all_tracks")
            others = [t for t in job.tracker.kept(min_frames) if t is not main] if min_frames else []
            extra = []
            for track in others:  # each other person's track is an identity of its own; committed before the main
                key = f"{s.identity}-t{track.id:03d}/{s.video}"
                if not track_done(out, key):
                    _commit(job, track, s.identity + f"-t{track.id:03d}", key, out, settings)
                extra.append(key)
            if extra:
                record["other_tracks"] = extra
            _commit(job, main, s.identity, s.key, out, settings)
            record.update(status="ok", frames=len(main.frames))
            summary.tracks += 1
            summary.frames += len(main.frames)
            log.info("%s -> %s: %d frames of track %d (%d tracks, %d frames without it)", s.path, s.key,
                     len(main.frames), main.id, len(job.tracker.tracks), job.decoded - len(main.frames))
    except (_SourceError, OSError) as e:
        record.update(status="error", reason=str(e))
        summary.errors.append((s.path, str(e)))
        log.warning("skipping %s: %s", s.path, e)
    shutil.rmtree(job.folder, ignore_errors=True)
    ledger.add(record)


def _commit(job: _Job, track: Any, identity: str, key: str, out: str, settings: dict[str, Any]) -> None:
    """Write one track's ``track.json`` and move its folder to ``OUT/key`` in one rename."""
    s = job.source
    folder = os.path.join(job.folder, f"t{track.id:04d}")
    provenance = {
        "identity": identity, "video": s.video, "source": s.path, "kind": s.kind,
        "source_frames": [s.frames[f] for f in track.frames] if s.kind == "frames" else None,
        "frames": track.frames, "boxes": track.boxes, "scores": track.scores,
        "landmarks": [job.landmarks[(track.id, f)] for f in track.frames],
        "track": track.id, "tracks_found": len(job.tracker.tracks), "frames_read": job.decoded,
        "frames_unreadable": job.bad_frames, "frames_without_track": job.decoded - len(track.frames),
        "settings": settings, "facepcl": __version__, "files": record_files(folder),
    }
    if job.error is not None:
        provenance["warning"] = job.error
    # Durability comes with the folder: commit_track fsyncs its files before the rename.
    write_text(os.path.join(folder, TRACK_FILE), json.dumps(provenance, indent=1) + "\n", durable=False)
    commit_track(folder, out, key)


class _SourceError(Exception):
    pass
