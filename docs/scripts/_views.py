"""Synthetic head turns of the two public-domain example portraits, for the documentation's maps.

We may only publish pictures of public-domain faces, and there are two:
``examples/images/astronaut.jpg`` (Eileen Collins, NASA) and
``examples/images/grace_hopper.jpg`` (U.S. Navy). To get several poses of
each, every portrait's head is turned about its vertical axis (a cylindrical
warp, yaw -30 to +30 degrees), mirrored or not (mirroring flips
the yaw; PCL learns pose from exactly this flip), in two lightings. The
result is a folder ``root/<person>/<view>.jpg`` and ``root/labels.csv``
(``path,person,yaw,mirrored``) for ``facepcl plot --labels``.

The turn maps the head onto a vertical cylinder (centred between the eyes,
as wide as the detected face box) and rotates it: the near side of the face
widens, the far side narrows, the way a turning head looks. It is not a real
head turn, but its landmarks move the way a turning head's do, which is what
the pose code should follow.
"""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path

import cv2
import numpy as np

from facepcl.io import load_image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
PEOPLE = {"astronaut": EXAMPLES / "astronaut.jpg", "grace_hopper": EXAMPLES / "grace_hopper.jpg"}
YAWS = (-30, -15, 0, 15, 30)


@functools.cache
def face_axis(person: str) -> tuple[float, float]:
    """``(x, radius)`` of a portrait: the vertical axis between the eyes of its face, and the face box's width."""
    from facepcl.detection import FaceDetector

    det = FaceDetector(device="cpu", max_faces=1).detect(load_image(PEOPLE[person]))
    if not len(det):
        raise ValueError(f"no face found in {PEOPLE[person]}")
    box = det.boxes[0]
    return float(det.kps[0][:2, 0].mean()), float(box[2] - box[0])


def turn(image: np.ndarray, yaw_degrees: float, axis_x: float, radius: float) -> np.ndarray:
    """The picture with the head turned by ``yaw_degrees`` about the vertical line ``x = axis_x``.

    Columns within ``radius`` of the axis lie on a cylinder seen from afar
    (orthographic): output column x shows the cylinder angle
    ``asin((x - axis_x) / radius) - yaw``. Columns farther out are unchanged.
    """
    h, w = image.shape[:2]
    xs = np.arange(w, dtype=np.float64)
    angle_out = np.arcsin(np.clip((xs - axis_x) / radius, -1.0, 1.0))
    angle_src = angle_out - math.radians(yaw_degrees)
    inside = (np.abs(xs - axis_x) < radius) & (np.abs(angle_src) < math.pi / 2)
    map_x = np.where(inside, axis_x + radius * np.sin(angle_src), xs).astype(np.float32)
    map_x = np.repeat(map_x[None], h, axis=0)
    map_y = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, axis=1)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def turned_portrait(person: str, yaw_degrees: float) -> np.ndarray:
    """One of the example portraits, turned."""
    return turn(load_image(PEOPLE[person]), yaw_degrees, *face_axis(person))


def make_views(root: str | Path) -> Path:
    """Write the views and ``labels.csv`` under ``root``; returns the labels file."""
    root = Path(root)
    rows = []
    for person, source in PEOPLE.items():
        image = load_image(source)
        axis = face_axis(person)
        folder = root / person
        folder.mkdir(parents=True, exist_ok=True)
        for yaw in YAWS:
            turned = turn(image, yaw, *axis)
            for mirrored in (False, True):
                view = turned[:, ::-1] if mirrored else turned
                for light, gain in (("day", 1.0), ("dim", 0.7)):
                    out = np.clip(view.astype(np.float32) * gain, 0, 255).astype(np.uint8)
                    name = f"yaw{yaw:+03d}{'_mirrored' if mirrored else ''}_{light}.jpg"
                    cv2.imwrite(str(folder / name), cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 92])
                    # mirroring turns a face turned to one side into one turned to the other
                    rows.append((str(folder / name), person, -yaw if mirrored else yaw, int(mirrored)))
    labels = root / "labels.csv"
    with open(labels, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "person", "yaw", "mirrored"])
        w.writerows(rows)
    return labels
