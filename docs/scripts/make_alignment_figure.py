"""Draw docs/img/alignment.png: detection and alignment on scikit-image's astronaut photo.

The astronaut (Eileen Collins, NASA) is in the public domain. The photo is
fetched from the scikit-image wheel by ``tests/_samples.py`` (once, into the
sample cache). Panels: the photo with the detected box and 5 landmarks; the
aligned crops at 64 px (PCL's pretraining size) and 112 px with the template
points drawn on them.

Usage::

    python docs/scripts/make_alignment_figure.py [--out docs/img/alignment.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facepcl import PCLConfig
from facepcl.align import align_faces, template
from facepcl.detection import FaceDetector
from facepcl.io import load_image

# The sample photos are test support (tests/_samples.py), not part of the package: put the repository
# root on sys.path so this dev script can say ``from tests import _samples``.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests import _samples

OUT = Path(__file__).resolve().parents[1] / "img" / "alignment.png"
PANEL = 320  # every panel is PANEL x PANEL pixels
# left eye, right eye, nose, left mouth corner, right mouth corner (RGB)
COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]


def _label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((34, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (8, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([img, bar], axis=0)


def _photo_panel(image: np.ndarray, box: np.ndarray, kps: np.ndarray) -> np.ndarray:
    # Show the region around the face, enlarged to the panel size.
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = 1.1 * max(box[2] - box[0], box[3] - box[1])
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
    x1, y1 = int(min(image.shape[1], cx + half)), int(min(image.shape[0], cy + half))
    crop = image[y0:y1, x0:x1]
    s = PANEL / max(crop.shape[:2])
    view = cv2.resize(crop, (round(crop.shape[1] * s), round(crop.shape[0] * s)), interpolation=cv2.INTER_AREA)
    canvas = np.full((PANEL, PANEL, 3), 255, np.uint8)
    canvas[:view.shape[0], :view.shape[1]] = view

    def to_view(x: float, y: float) -> tuple[int, int]:
        return round((x - x0 + 0.5) * s - 0.5), round((y - y0 + 0.5) * s - 0.5)

    cv2.rectangle(canvas, to_view(box[0], box[1]), to_view(box[2], box[3]), (255, 255, 255), 2, cv2.LINE_AA)
    for (x, y), colour in zip(kps, COLOURS, strict=True):
        cv2.circle(canvas, to_view(x, y), 5, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, to_view(x, y), 5, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def _crop_panel(crop: np.ndarray, points: np.ndarray) -> np.ndarray:
    size = crop.shape[0]
    s = PANEL / size
    view = cv2.resize(crop, (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)  # show the real pixels
    for (x, y), colour in zip(points, COLOURS, strict=True):
        centre = (round((x + 0.5) * s - 0.5), round((y + 0.5) * s - 0.5))
        cv2.drawMarker(view, centre, colour, cv2.MARKER_CROSS, 18, 2, cv2.LINE_AA)
    return view


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    image = load_image(_samples.astronaut())
    det = FaceDetector(device="cpu").detect(image)
    if len(det) != 1:
        raise SystemExit(f"expected one face in the astronaut photo, found {len(det)}")
    pre = PCLConfig().preprocess
    panels = [_label(_photo_panel(image, det.boxes[0], det.kps[0]), "detection: box + 5 landmarks")]
    for size in (64, 112):
        crop = align_faces(image, det.kps, pre, crop_size=size)[0][0]
        panels.append(_label(_crop_panel(crop, template(pre, size)), f"aligned {size} px, + = template"))
    gap = np.full((panels[0].shape[0], 12, 3), 255, np.uint8)
    figure = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(figure).save(args.out, optimize=True)
    print(f"wrote {args.out} ({figure.shape[1]}x{figure.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
