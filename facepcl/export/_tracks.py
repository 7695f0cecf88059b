"""Tracks in the export: a track id, head angles and sharpness on every row, and ``_tracks.parquet`` at the end.

Video frames are tracked in input order by :class:`facepcl.tracking.Tracker`
(shot cuts end every track). A track id is unique within the export:
``item * 2**20 + n`` for the n-th track of input ``item``, so ranks and
resumed runs never collide; still images get -1 (as their ``frame`` is -1).
The tracker's state is recorded in each shard's manifest when the shard ends
inside a video, so ``--resume`` continues the same tracks exactly.

At the end (rank 0, after every rank's last shard) the committed rows are
read back video by video, in input order, and summarised into
``OUT/_tracks.parquet``: one row per track (docs/tracking.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..io.storage import Store, open_store
from ..tracking import TrackerOptions, VideoTracker, head_angles, summarize
from ..tracking._summary import box_sharpness
from ._dataset import _per_rank

#: Bits of a track id left for the track's number within its input.
TRACK_BITS = 20
TRACKS_FILE = "_tracks.parquet"
#: Columns of ``_tracks.parquet`` (see :func:`facepcl.tracking.summarize`); ``face`` is float32[D].
SUMMARY_COLUMNS = ("track_id", "item", "path", "first_frame", "last_frame", "first_timestamp", "last_timestamp",
                   "rows", "representative_frame", "keyframes", "face")


class ExportTracker:
    """Assigns track ids to the rows of each batch, video by video, in input order.

    Args:
        enabled: False (``--no-track``): every row gets -1.
        state: The state a manifest recorded (:meth:`state`), to continue a video.
        options: Association options.
    """

    def __init__(self, enabled: bool = True, state: dict | None = None,
                 options: TrackerOptions | None = None) -> None:
        self.enabled = enabled
        self.options = options or TrackerOptions()
        self.item = -1
        self.video: VideoTracker | None = None
        if state:
            self.item = int(state["item"])
            self.video = VideoTracker.from_state(state["video"], self.options)

    def state(self) -> dict | None:
        """The tracker's state for the manifest (None when no video is in progress)."""
        return None if self.video is None else {"item": self.item, "video": self.video.state()}

    def assign(self, pictures: Sequence[Any], image_index: np.ndarray, bbox: np.ndarray,
               face: np.ndarray) -> np.ndarray:
        """Track ids of one batch's faces.

        Args:
            pictures: The batch's decoded units in order (``item.index``, ``item.path``,
                ``frame``, ``image``), faceless frames included.
            image_index: ``(N,)`` position in ``pictures`` of each face, ascending.
            bbox: ``(N, 4)`` boxes.
            face: ``(N, D)`` face codes.

        Returns:
            ``(N,)`` int64 track ids (-1 for still images, or when tracking is off).
        """
        ids = np.full(len(image_index), -1, np.int64)
        if not self.enabled:
            return ids
        for j, u in enumerate(pictures):
            if u.frame < 0:
                continue
            if u.item.index != self.item or self.video is None:
                self.item = u.item.index
                self.video = VideoTracker(self.options, first_id=u.item.index << TRACK_BITS)
            lo, hi = np.searchsorted(image_index, [j, j + 1])
            ids[lo:hi] = self.video.frame(u.frame, u.image, bbox[lo:hi], face[lo:hi], histogram=u.histogram)
            if self.video.tracker.next_id - (u.item.index << TRACK_BITS) >= 1 << TRACK_BITS:
                raise ValueError(f"{u.item.path}: more than {1 << TRACK_BITS} tracks in one video; embed it with "
                                 "--no-track")
        return ids


def row_columns(pictures: Sequence[Any], image_index: np.ndarray, bbox: np.ndarray, kps: np.ndarray,
                face: np.ndarray, tracker: ExportTracker) -> dict[str, np.ndarray]:
    """The tracking columns of one batch's rows: ``yaw``, ``pitch``, ``roll``, ``sharpness``, ``track_id``.

    Sharpness is measured on video frames only (it chooses a track's representative frame); NaN for still images.
    A unit that carries its faces' ``sharpness`` (measured where it was decoded) gives it instead.
    """
    angles = head_angles(kps.reshape(-1, 5, 2)) if len(kps) else np.zeros((0, 3), np.float32)
    within = np.arange(len(image_index)) - np.searchsorted(image_index, image_index, side="left")
    sharp = np.array([np.nan if pictures[j].frame < 0 else box_sharpness(pictures[j].image, b)
                      if pictures[j].sharpness is None else pictures[j].sharpness[k]
                      for j, k, b in zip(image_index, within, bbox, strict=True)], np.float32)
    return {"yaw": angles[:, 0], "pitch": angles[:, 1], "roll": angles[:, 2], "sharpness": sharp,
            "track_id": tracker.assign(pictures, image_index, bbox, face)}


def _videos(shards: Sequence[Any]) -> Iterator[dict[str, np.ndarray]]:
    """The tracked rows of each input, one input at a time (rows of a video are contiguous in its rank's shards)."""
    pending: dict[str, list] = {}
    item = None
    for shard in shards:
        ids, meta = shard.read(["track_id"])
        if "track_id" not in ids or not (np.asarray(ids["track_id"]) >= 0).any():
            continue  # no video rows here (or an export written without tracking)
        columns = ["item", "path", "frame", "timestamp", "bbox", "yaw", "pitch", "roll", "sharpness", "track_id",
                   *[f for f in ("face", "pose") if f in meta.get("features", [])]]
        cols, _ = shard.read(columns)
        keep = np.asarray(cols["track_id"]) >= 0
        if not keep.any():
            continue
        items = np.asarray(cols["item"])[keep]
        for value in np.unique(items):
            sel = np.flatnonzero(keep)[items == value]
            if item is not None and value != item:
                yield _joined(pending)
                pending = {}
            item = value
            for k in columns:
                part = [cols[k][i] for i in sel] if k == "path" else np.asarray(cols[k])[sel]
                pending.setdefault(k, []).append(part)
    if pending:
        yield _joined(pending)


def _joined(parts: dict[str, list]) -> dict[str, Any]:
    return {k: [p for part in v for p in part] if k == "path" else np.concatenate(v) for k, v in parts.items()}


def write_summary(out: str | Store, shards: Sequence[Any]) -> int:
    """Write ``OUT/_tracks.parquet`` from the committed shards; returns the number of tracks.

    Without tracked rows nothing is written (and a summary left by an earlier run is removed). Without the
    ``face`` feature the summary's ``face`` is NaN; without ``pose`` the keyframes are the representative frame.

    Args:
        out: The export folder (a path, URL or store).
        shards: Its committed shards, each rank's in order (:func:`facepcl.export.committed_shards`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = open_store(out)
    rows: list[dict[str, Any]] = []
    dim = 0
    for rank_shards in _per_rank(list(shards)):
        for video in _videos(rank_shards):
            n = len(video["frame"])
            dim = next((video[f].shape[1] for f in ("face", "pose") if f in video), dim)
            face = video.get("face", np.full((n, max(dim, 1)), np.nan, np.float32))
            pose = video.get("pose", np.zeros((n, 1), np.float32))
            order = np.lexsort((video["frame"], video["track_id"]))
            tids = video["track_id"][order]
            starts = np.flatnonzero(np.r_[True, tids[1:] != tids[:-1]])
            for a, b in zip(starts, [*starts[1:], len(tids)], strict=True):
                sel = order[a:b]
                angles = np.stack([video["yaw"][sel], video["pitch"][sel], video["roll"][sel]], 1)
                s = summarize(int(tids[a]), video["path"][sel[0]], video["frame"][sel], video["timestamp"][sel],
                              video["bbox"][sel], angles, video["sharpness"][sel], face[sel], pose[sel])
                s["item"] = int(video["item"][sel[0]])
                rows.append(s)
    if not rows:
        if store.exists(TRACKS_FILE):
            store.delete(TRACKS_FILE)
        return 0
    rows.sort(key=lambda r: (r["item"], r["first_frame"], r["track_id"]))
    dim = len(rows[0]["face"])
    schema = pa.schema([("track_id", pa.int64()), ("item", pa.int64()), ("path", pa.string()),
                        ("first_frame", pa.int64()), ("last_frame", pa.int64()), ("first_timestamp", pa.float64()),
                        ("last_timestamp", pa.float64()), ("rows", pa.int64()), ("representative_frame", pa.int64()),
                        ("keyframes", pa.list_(pa.int64())), ("face", pa.list_(pa.float32(), dim))])
    arrays = [pa.array([r[c] for r in rows], type=schema.field(c).type) if c != "face" else
              pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate([r["face"] for r in rows]), pa.float32()), dim)
              for c in SUMMARY_COLUMNS]
    table = pa.Table.from_arrays(arrays, schema=schema)
    store.write_file(TRACKS_FILE, lambda p: pq.write_table(table, p, compression="zstd"))
    return len(rows)


def read_tracks(out: str | Store) -> Any:
    """``OUT/_tracks.parquet`` as a ``pyarrow.Table``: one row per track (columns: docs/tracking.md).

    Raises:
        FileNotFoundError: The export has no track summary (no video, ``--no-track``, or an unfinished run).
    """
    import pyarrow.parquet as pq

    store = open_store(out)
    if not store.exists(TRACKS_FILE):
        raise FileNotFoundError(f"{store.url(TRACKS_FILE)}: no track summary; it is written at the end of a facepcl "
                                "embed run with videos (and without --no-track): finish the run with --resume")
    with store.local(TRACKS_FILE) as path:
        return pq.read_table(path)


__all__ = ["TRACKS_FILE", "ExportTracker", "read_tracks", "row_columns", "write_summary"]
