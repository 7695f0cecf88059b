"""Face tracks: detections linked across frames by box overlap, and the choice of the main one.

Within a video the detections of each kept frame are linked to the tracks
seen so far by :class:`facepcl.tracking.Tracker` (the association that
``facepcl embed`` and ``facepcl.track`` use), on box overlap with each
track's last box (at least ``min_iou``) and distance, solved as one
assignment; a detection that links to no track starts a new one.
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
    """Links the detections of successive frames into tracks, with :class:`facepcl.tracking.Tracker`.

    The association is the one ``facepcl embed`` and ``facepcl.track`` use
    (Hungarian assignment on box overlap and distance), here without a motion
    model, face codes or cuts, and with tracks that never end: a face that
    leaves and comes back where it left continues its track.

    Args:
        min_iou: Smallest overlap between a track's last box and a detection
            for the detection to continue that track on overlap alone.
    """

    def __init__(self, min_iou: float = 0.3) -> None:
        if not 0.0 < min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
        from ..tracking import Tracker as Association
        from ..tracking import TrackerOptions

        self.min_iou = float(min_iou)
        self._association = Association(TrackerOptions(min_iou=self.min_iou, motion=False, appearance_weight=0.0,
                                                       reid_similarity=2.0, max_gap=2**62, cut_threshold=2.0))
        self.tracks: list[Track] = []

    def update(self, frame: int, boxes: np.ndarray, scores: np.ndarray) -> list[int]:
        """Add one frame's detections.

        Args:
            frame: Frame number (increasing from call to call).
            boxes: ``(N, 4)`` boxes in pixels.
            scores: ``(N,)`` detector scores.

        Returns:
            The track id of each detection, in input order (ids count up from 0 in order of creation).
        """
        ids = [int(i) for i in self._association.update(int(frame), np.asarray(boxes, np.float64).reshape(-1, 4))]
        for i, track_id in enumerate(ids):
            if track_id == len(self.tracks):
                self.tracks.append(Track(track_id))
            track = self.tracks[track_id]
            track.frames.append(int(frame))
            track.boxes.append([round(float(v), 2) for v in boxes[i]])
            track.scores.append(round(float(scores[i]), 4))
        return ids

    def main(self) -> Track | None:
        """The track present in the most frames (ties: larger mean box, then the earlier); None without faces."""
        if not self.tracks:
            return None
        return max(self.tracks, key=lambda t: (len(t.frames), t.mean_area, -t.id))

    def kept(self, min_frames: int) -> list[Track]:
        """Every track present in at least ``min_frames`` frames, the main one first."""
        main = self.main()
        others = [t for t in self.tracks if t is not main and len(t.frames) >= min_frames]
        return ([main] if main is not None and len(main.frames) >= min_frames else []) + others
