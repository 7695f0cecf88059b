"""What detection hands on: images prepared for the network, and the faces found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Prepared(NamedTuple):
    """An image made ready for the detector network by :meth:`FaceDetector.prepare`.

    Attributes:
        image: ``(h, w, 3)`` uint8 RGB, the image shrunk so that its longer
            side is at most ``max_size`` (the input itself if it was small enough).
        scale: ``(sx, sy)``, resized pixels per original pixel.
        canvas: ``(H, W)`` of the padded network input it goes into.
        size: ``(height, width)`` of the original image.
        source: The original image, kept for the second pass at higher
            resolution (None: no second pass for this image).
    """

    image: np.ndarray
    scale: tuple[float, float]
    canvas: tuple[int, int]
    size: tuple[int, int]
    source: np.ndarray | None = None


@dataclass
class Detections:
    """The faces found in one image, in original image pixels.

    Coordinates follow OpenCV (pixel centres at integers). Boxes are not
    clipped to the image: a face cut by the border keeps its full extent.

    Attributes:
        boxes: ``(N, 4)`` float32, x1, y1, x2, y2.
        kps: ``(N, 5, 2)`` float32 landmarks: left eye, right eye, nose tip,
            left and right mouth corner ("left" is the image's left).
        scores: ``(N,)`` float32 face scores in [0, 1].
    """

    boxes: np.ndarray
    kps: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros((0,), np.float32))
