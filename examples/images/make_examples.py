"""Regenerate the example images in this folder from public-domain originals.

- ``astronaut.jpg``: NASA portrait of astronaut Eileen Collins (public domain,
  a work of the U.S. federal government), as shipped in scikit-image's data.
- ``grace_hopper.jpg``: U.S. Navy portrait of Rear Admiral Grace Hopper
  (public domain, a work of the U.S. federal government), as shipped in
  matplotlib's sample data.
- ``pair.jpg``: the two side by side, one of them mirrored, composed by this
  script (two faces in one picture).

The originals are fetched from the package index into facepcl's sample cache
(``tests/_samples.py``); run ``python examples/images/make_examples.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageOps

# The sample photos are test support (tests/_samples.py), not part of the package: put the repository
# root on sys.path so this dev script can say ``from tests import _samples``.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests import _samples

HERE = Path(__file__).resolve().parent


def main() -> None:
    astro = Image.open(_samples.astronaut()).convert("RGB")  # 512x512
    hopper = Image.open(_samples.grace_hopper()).convert("RGB")  # 512x600
    astro.resize((384, 384), Image.LANCZOS).save(HERE / "astronaut.jpg", quality=90)
    hopper.resize((320, 375), Image.LANCZOS).save(HERE / "grace_hopper.jpg", quality=90)
    h = 360
    left = astro.resize((h, h), Image.LANCZOS)
    right = ImageOps.mirror(hopper).resize((round(hopper.width * h / hopper.height), h), Image.LANCZOS)
    pair = Image.new("RGB", (left.width + right.width, h), (255, 255, 255))
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    pair.save(HERE / "pair.jpg", quality=90)


if __name__ == "__main__":
    main()
