"""Associating the faces of consecutive frames into tracks: motion, overlap and face-code continuity.

Each track keeps its last box, a smoothed velocity of its box corners (a
constant-velocity motion model), and the running mean direction of its face
codes. For every new frame, a cost is computed between each live track's
box *predicted* at that frame and each detection:

``cost = (1 - IoU) + 0.5 * min(centre distance / track size, 2) + appearance_weight * (1 - cosine)``

where the cosine compares the detection's face code with the track's (the
pose-unrelated code, so a head turn does not break a track). A pair is
allowed when it is plausible in space (IoU above ``min_iou``, or the centre
within ``0.5 + 0.1 * gap`` track sizes, at most 2) or, whatever the distance,
when the face codes agree strongly (cosine at least ``reid_similarity``:
someone who reappears elsewhere after a short miss, or two people swapping
places faster than the frame rate). Assignments are solved optimally with
scipy's Hungarian solver (``linear_sum_assignment``); unmatched detections
start new tracks, and a track unseen for more than ``max_gap`` frames ends.
A shot cut (:func:`is_cut` on frame colour histograms) ends every track.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Cost of a pair that is not allowed (never chosen).
_FORBIDDEN = 1e6


@dataclass
class TrackerOptions:
    """How faces are associated across frames (see the module docstring).

    Attributes:
        max_gap: Frames a track may go unseen and still continue.
        min_iou: Overlap with the predicted box that makes a pair plausible.
        appearance_weight: Weight of ``1 - cosine`` of the face codes in the cost (0: box overlap and motion only).
        reid_similarity: Face-code cosine that allows a pair whatever the distance (above 1: never).
        max_cost: Pairs costing more are not matched.
        cut_threshold: Bhattacharyya distance between consecutive frames' colour histograms that marks a cut
            (above 1: cuts are never detected).
        motion: Predict each track's box at the new frame from its velocity (False: its last box).
    """

    max_gap: int = 30
    min_iou: float = 0.1
    appearance_weight: float = 3.0
    reid_similarity: float = 0.85
    max_cost: float = 3.5
    cut_threshold: float = 0.35
    motion: bool = True

    def __post_init__(self) -> None:
        if self.max_gap < 1:
            raise ValueError(f"max_gap must be at least 1 frame, got {self.max_gap}")
        if not 0 <= self.min_iou <= 1:
            raise ValueError(f"min_iou must be in [0, 1], got {self.min_iou}")
        if self.appearance_weight < 0 or self.max_cost <= 0:
            raise ValueError("appearance_weight must be >= 0 and max_cost > 0")


@dataclass
class _Track:
    id: int
    box: np.ndarray
    frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    code: np.ndarray | None = None
    hits: int = 1

    def predicted(self, frame: int) -> np.ndarray:
        return self.box + self.velocity * (frame - self.frame)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (T, 4) with every box in ``b`` (D, 4)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = inter / (area_a[:, None] + area_b[None, :] - inter)
    return np.nan_to_num(out)


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1)


class Tracker:
    """Online face tracker: feed it the faces of each frame in order, get a track id for each face.

    Args:
        options: A :class:`TrackerOptions` (default options when None).
        first_id: The id the first track gets; ids then count up by one.

    Example:
        >>> tracker = Tracker()
        >>> ids = tracker.update(0, boxes)                     # doctest: +SKIP
        >>> ids = tracker.update(1, boxes, codes=face_codes)   # doctest: +SKIP
    """

    def __init__(self, options: TrackerOptions | None = None, *, first_id: int = 0) -> None:
        self.options = options or TrackerOptions()
        self.next_id = int(first_id)
        self._live: list[_Track] = []

    @property
    def live_ids(self) -> list[int]:
        """Ids of the tracks that can still continue."""
        return [t.id for t in self._live]

    def state(self) -> dict:
        """Everything needed to continue later (JSON-able): the next id and each live track."""
        return {"next_id": self.next_id, "tracks": [
            {"id": tr.id, "box": tr.box.tolist(), "frame": tr.frame, "velocity": tr.velocity.tolist(),
             "code": None if tr.code is None else _pack(tr.code), "hits": tr.hits} for tr in self._live]}

    @classmethod
    def from_state(cls, state: dict, options: TrackerOptions | None = None) -> Tracker:
        """A tracker that continues where :meth:`state` was taken."""
        tracker = cls(options, first_id=int(state["next_id"]))
        tracker._live = [_Track(int(d["id"]), np.asarray(d["box"], np.float64), int(d["frame"]),
                                np.asarray(d["velocity"], np.float64),
                                None if d["code"] is None else _unpack(d["code"]), int(d["hits"]))
                         for d in state["tracks"]]
        return tracker

    def cut(self) -> None:
        """End every track (a shot cut): the next faces start new tracks."""
        self._live = []

    def update(self, frame: int, boxes: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
        """Assign the faces of one frame to tracks.

        Args:
            frame: Frame number, increasing from call to call (gaps allowed:
                sampled frames, frames without faces).
            boxes: ``(N, 4)`` x1, y1, x2, y2 in pixels.
            codes: ``(N, D)`` face codes (any scale; compared by cosine), or
                None to associate by overlap and motion only.

        Returns:
            ``(N,)`` int64 track ids.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        unit = None
        if codes is not None and (self.options.appearance_weight > 0 or self.options.reid_similarity <= 1):
            codes = np.asarray(codes, np.float64)
            if len(codes) != len(boxes):
                raise ValueError(f"got {len(boxes)} boxes but {len(codes)} face codes")
            unit = _unit(codes.reshape(len(boxes), -1)) if len(boxes) else None
        opt = self.options
        self._live = [t for t in self._live if frame - t.frame <= opt.max_gap]
        ids = np.full(len(boxes), -1, np.int64)
        if self._live and len(boxes):
            cost = self._cost(frame, boxes, unit)
            from scipy.optimize import linear_sum_assignment

            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] <= opt.max_cost:
                    self._continue(self._live[r], frame, boxes[c], None if unit is None else unit[c])
                    ids[c] = self._live[r].id
        for c in np.flatnonzero(ids < 0):
            track = _Track(self.next_id, boxes[c].copy(), frame, code=None if unit is None else unit[c].copy())
            self.next_id += 1
            self._live.append(track)
            ids[c] = track.id
        return ids

    def _cost(self, frame: int, boxes: np.ndarray, unit: np.ndarray | None) -> np.ndarray:
        opt = self.options
        pred = np.stack([t.predicted(frame) if opt.motion else t.box for t in self._live])
        iou = _iou(pred, boxes)
        size = np.sqrt(np.clip((pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1]), 1e-6, None))
        centre_p = (pred[:, :2] + pred[:, 2:]) / 2
        centre_d = (boxes[:, :2] + boxes[:, 2:]) / 2
        dist = np.linalg.norm(centre_p[:, None] - centre_d[None], axis=2) / size[:, None]
        gap = np.array([frame - t.frame for t in self._live], np.float64)
        near = (iou > opt.min_iou) | (dist < np.minimum(0.5 + 0.1 * gap, 2.0)[:, None])
        cost = (1 - iou) + 0.5 * np.minimum(dist, 2.0)
        if unit is not None:
            known = np.array([t.code is not None for t in self._live])
            codes = np.stack([t.code if t.code is not None else np.zeros(unit.shape[1]) for t in self._live])
            cos = codes @ unit.T
            cost = cost + opt.appearance_weight * np.where(known[:, None], 1 - cos, 0.5)
            near |= known[:, None] & (cos >= opt.reid_similarity)
        return np.where(near, cost, _FORBIDDEN)

    @staticmethod
    def _continue(track: _Track, frame: int, box: np.ndarray, code: np.ndarray | None) -> None:
        gap = max(frame - track.frame, 1)
        step = (box - track.box) / gap
        track.velocity = step if track.hits == 1 else 0.5 * track.velocity + 0.5 * step
        track.box = box.copy()
        track.frame = frame
        track.hits += 1
        if code is not None:
            track.code = code.copy() if track.code is None else _unit(0.9 * track.code + 0.1 * code)


class VideoTracker:
    """The frames of one video, in order: a shot cut ends every track, then the faces are associated.

    The one per-frame step of :func:`facepcl.track`, ``facepcl embed`` and ``facepcl prepare``.

    Args:
        options: Association and cut options.
        first_id: The id of the video's first track.
    """

    def __init__(self, options: TrackerOptions | None = None, *, first_id: int = 0) -> None:
        self.tracker = Tracker(options, first_id=first_id)
        self.previous: np.ndarray | None = None

    @property
    def options(self) -> TrackerOptions:
        return self.tracker.options

    def frame(self, number: int, image: np.ndarray | None, boxes: np.ndarray, codes: np.ndarray | None,
              histogram: np.ndarray | None = None) -> np.ndarray:
        """Track ids of one frame's faces.

        ``image`` is the frame, for cut detection; or ``histogram``, its :func:`colour_histogram` measured
        where the frame was decoded (``image`` then unused).
        """
        hist = colour_histogram(image) if histogram is None else histogram
        if is_cut(self.previous, hist, self.options.cut_threshold):
            self.tracker.cut()
        self.previous = hist
        return self.tracker.update(number, boxes, codes)

    def state(self) -> dict:
        """JSON-able state: the tracker's and the last frame's histogram."""
        return {"tracker": self.tracker.state(),
                "histogram": None if self.previous is None else _pack(self.previous.reshape(-1))}

    @classmethod
    def from_state(cls, state: dict, options: TrackerOptions | None = None) -> VideoTracker:
        """A video tracker that continues where :meth:`state` was taken."""
        video = cls(options)
        video.tracker = Tracker.from_state(state["tracker"], options)
        hist = state.get("histogram")
        video.previous = None if hist is None else _unpack(hist).astype(np.float32).reshape(16, 8)
        return video


def _pack(x: np.ndarray) -> str:
    import base64

    return base64.b64encode(np.asarray(x, "<f8").tobytes()).decode("ascii")


def _unpack(text: str) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(text), "<f8").copy()


def colour_histogram(image: np.ndarray) -> np.ndarray:
    """A frame's hue-saturation histogram (on a 64 px thumbnail), for :func:`is_cut`."""
    import cv2

    step = max(1, max(image.shape[:2]) // 256)  # every step-th pixel first: the histogram needs no more
    view = np.ascontiguousarray(image[::step, ::step])
    h, w = view.shape[:2]
    scale = 64 / max(h, w)
    small = cv2.resize(view, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
    return cv2.normalize(hist, hist).astype(np.float32)


def is_cut(previous: np.ndarray | None, current: np.ndarray, threshold: float) -> bool:
    """Whether two consecutive frames' :func:`colour_histogram` differ as much as a shot cut."""
    import cv2

    if previous is None:
        return False
    return float(cv2.compareHist(previous, current, cv2.HISTCMP_BHATTACHARYYA)) > threshold


__all__ = ["Tracker", "TrackerOptions", "VideoTracker", "colour_histogram", "is_cut"]
