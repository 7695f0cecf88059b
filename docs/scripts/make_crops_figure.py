"""Draw docs/img/views.png: the aligned crops behind the documentation's maps.

The two public-domain example portraits in the synthetic views of
``_views.py`` (turned -30 to +30 degrees, mirrored or not), each detected and
aligned exactly as ``facepcl embed`` does, at 64 px (the model's input). No
model weights are involved: only the detector and the alignment template of
the model's config (default: the bundled ``pcl-demo``; any model with the
default template gives the same picture).

Usage::

    python docs/scripts/make_crops_figure.py [--model pcl-demo] [--out docs/img/views.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facepcl import PCLConfig
from facepcl.align import align_faces
from facepcl.detection import FaceDetector
from facepcl.hub import resolve
from facepcl.io import load_image
from facepcl.viz._draw import font, text_size

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _views import PEOPLE, YAWS, make_views

OUT = Path(__file__).resolve().parents[1] / "img" / "views.png"
TILE = 128  # 64 px crops shown at 2x, nearest neighbour: the real pixels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pcl-demo", help="model whose config gives the template (default pcl-demo)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    pre = PCLConfig.from_json_file(resolve(args.model).config_path).preprocess
    detector = FaceDetector(device="cpu", max_faces=1)
    rows: list[list[np.ndarray]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_views(tmp).parent
        for person in PEOPLE:
            for mirrored in ("", "_mirrored"):
                row = []
                for yaw in YAWS:
                    image = load_image(root / person / f"yaw{yaw:+03d}{mirrored}_day.jpg")
                    det = detector.detect(image)
                    if not len(det):
                        raise SystemExit(f"no face found in the {person} view yaw {yaw}{mirrored}")
                    row.append(align_faces(image, det.kps[:1], pre)[0][0])
                rows.append(row)
    fnt = font(15)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max(text_size(probe, f"{p}\n{m}", fnt)[0] for p in PEOPLE for m in ("turned", "mirrored")) + 16
    gap, head = 6, 28
    canvas = Image.new("RGB", (left + len(YAWS) * (TILE + gap), head + len(rows) * (TILE + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, yaw in enumerate(YAWS):
        draw.text((left + k * (TILE + gap) + TILE // 2 - 30, 6), f"turned {yaw:+d}°", fill=(0, 0, 0), font=fnt)
    for r, row in enumerate(rows):
        y = head + r * (TILE + gap)
        name = list(PEOPLE)[r // 2].replace("_", " ")
        draw.multiline_text((6, y + TILE // 2 - 16), f"{name}\n{'mirrored' if r % 2 else 'turned'}", fill=(0, 0, 0),
                            font=fnt)
        for k, crop in enumerate(row):
            canvas.paste(Image.fromarray(crop).resize((TILE, TILE), Image.Resampling.NEAREST),
                         (left + k * (TILE + gap), y))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, optimize=True)
    print(f"wrote {args.out} ({canvas.width}x{canvas.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
