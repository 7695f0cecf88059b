"""Draw the documentation's track strips with ``facepcl plot CLIP --tracks``.

The clip is made from the two public-domain example portraits only (the
sample videos the tests use have unclear licences, so no picture of them is
published): Eileen Collins turning from one side to the other while tilting
her head, then a cut to Grace Hopper turning back. ``facepcl plot --tracks``
follows the faces and draws one strip per track: ``docs/img/tracks.png``.
To draw a real video of your own::

    facepcl plot my_clip.mp4 --tracks --every 2 -o strips.png

Run this with a trained model (default: the bundled ``pcl-demo``)::

    python docs/scripts/make_track_figure.py [--model pcl-demo] [--out docs/img/tracks.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from facepcl.cli import main as facepcl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _views import turned_portrait

OUT = Path(__file__).resolve().parents[1] / "img" / "tracks.png"


def clip_frames(steps: int = 12) -> list[np.ndarray]:
    """RGB frames: the astronaut turning and tilting, then Grace Hopper turning back (a cut between them)."""
    frames = []
    for person, yaws in (("astronaut", np.linspace(-30, 30, steps)), ("grace_hopper", np.linspace(30, -30, steps))):
        for i, yaw in enumerate(yaws):
            image = turned_portrait(person, float(yaw))
            h, w = image.shape[:2]
            roll = 12 * np.sin(2 * np.pi * i / steps) if person == "astronaut" else 0.0
            m = cv2.getRotationMatrix2D((w / 2, h / 2), float(roll), 1.0)
            frames.append(cv2.resize(cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT), (256, 256)))
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 8.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames[0].shape[1::-1])
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pcl-demo", help="model (default pcl-demo)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.avi", clip_frames())
        return facepcl(["plot", str(clip), "--tracks", "--model", args.model, "-o", str(args.out)])


if __name__ == "__main__":
    raise SystemExit(main())
