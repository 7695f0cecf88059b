"""Draw the documentation's pose-swap grids with ``facepcl swap``.

Two grids, from the public-domain example portraits only:

- ``docs/img/swap.png``: Eileen Collins (A) and Grace Hopper (B) as photographed;
- ``docs/img/swap-turned.png``: the same two, turned 30 degrees to opposite
  sides (a cylindrical warp, see ``_views.py``), so that
  the two poses differ clearly.

The decoder only means something with trained weights, so run this with a
trained model (default: the bundled ``pcl-demo``)::

    python docs/scripts/make_swap_figure.py [--model pcl-demo] [--out-dir docs/img]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2

from facepcl.cli import main as facepcl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _views import PEOPLE, turned_portrait

OUT = Path(__file__).resolve().parents[1] / "img"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pcl-demo", help="a trained model with its decoder (default pcl-demo)")
    parser.add_argument("--out-dir", type=Path, default=OUT)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    common = ["--model", args.model] + (["--device", args.device] if args.device else [])
    a, b = str(PEOPLE["astronaut"]), str(PEOPLE["grace_hopper"])
    if facepcl(["swap", a, b, "-o", str(args.out_dir / "swap.png"), *common]):
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        turned = []
        for name, yaw in (("astronaut", -30), ("grace_hopper", 30)):
            path = Path(tmp) / f"{name}_yaw{yaw:+d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(turned_portrait(name, yaw), cv2.COLOR_RGB2BGR))
            turned.append(str(path))
        return facepcl(["swap", *turned, "-o", str(args.out_dir / "swap-turned.png"), *common])


if __name__ == "__main__":
    raise SystemExit(main())
