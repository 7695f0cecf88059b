"""Face tracks: detections linked across frames by box overlap, and the choice of the main one.

Within a video the detections of each kept frame are linked to the tracks
seen so far: highest-scored detection first, each takes the unclaimed track
whose last box overlaps it most, if that overlap (intersection over union)
reaches ``min_iou``; a detection that links to no track starts a new one.
Tracks never end: a face that leaves the picture and comes back where it
left (overlapping its last box) continues its track, while a face that
shows up elsewhere starts another. The main track (the speaker of a
VoxCeleb clip) is the one present in the most frames; ties go to the larger
mean box, then to the earlier track. Following one track, rather than the
best face of each frame, keeps a second face that appears for a while (even
a larger or sharper one) out of the speaker's frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one ``(4,)`` box (x1, y1, x2, y2) with each of ``(N, 4)`` boxes."""
    if len(boxes) == 0:
        return np.zeros((0,), np.float64)
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


@dataclass
class Track:
    """One face followed through a video.

    Attributes:
        id: Order of creation (0 = the first face seen).
        frames: Frame numbers where the face was found, increasing.
        boxes: Its box in each of those frames, ``[x1, y1, x2, y2]`` in pixels.
        scores: Its detector score in each of those frames.
    """

    id: int
    frames: list[int] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    @property
    def mean_area(self) -> float:
        b = np.asarray(self.boxes, np.float64)
        return float(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).mean()) if len(b) else 0.0


class Tracker:
    """Links the detections of successive frames into tracks.

    Args:
        min_iou: Smallest overlap between a track's last box and a detection
            for the detection to continue that track.
    """

    def __init__(self, min_iou: float = 0.3) -> None:
        if not 0.0 < min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
        self.min_iou = float(min_iou)
        self.tracks: list[Track] = []

    def update(self, frame: int, boxes: np.ndarray, scores: np.ndarray) -> list[int]:
        """Add one frame's detections.

        Args:
            frame: Frame number (increasing from call to call).
            boxes: ``(N, 4)`` boxes in pixels.
            scores: ``(N,)`` detector scores.

        Returns:
            The track id of each detection, in input order.
        """
        ids = [-1] * len(boxes)
        last = np.asarray([t.boxes[-1] for t in self.tracks], np.float64).reshape(-1, 4)
        free = np.ones(len(self.tracks), bool)
        for i in np.argsort(-np.asarray(scores), kind="stable"):
            overlap = iou(np.asarray(boxes[i], np.float64), last)
            overlap[~free] = -1.0
            best = int(np.argmax(overlap)) if len(overlap) else -1
            if best >= 0 and overlap[best] >= self.min_iou:
                free[best] = False
                track = self.tracks[best]
            else:
                track = Track(len(self.tracks))
                self.tracks.append(track)
            track.frames.append(int(frame))
            track.boxes.append([round(float(v), 2) for v in boxes[i]])
            track.scores.append(round(float(scores[i]), 4))
            ids[i] = track.id
        return ids

    def main(self) -> Track | None:
        """The track present in the most frames (ties: larger mean box, then the earlier); None without faces."""
        if not self.tracks:
            return None
        return max(self.tracks, key=lambda t: (len(t.frames), t.mean_area, -t.id))
