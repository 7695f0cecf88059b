"""Swap poses between two faces with PCL's decoder, and save the grid.

    python examples/swap_poses.py examples/images/astronaut.jpg examples/images/grace_hopper.jpg -o grid.png

The grid shows, for the first face of each image (or the faces chosen with
--faces-a / --faces-b): the two aligned faces, then the decoder's pictures of
face A + pose A, face A + pose B, face B + pose A and face B + pose B. With a
trained model (the default pcl-demo) the middle two show each face in the
other's pose. The same as one command:

    facepcl swap A B -o grid.png
"""

from __future__ import annotations

import argparse

from facepcl.viz import swap_faces


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="first image")
    p.add_argument("b", help="second image")
    p.add_argument("-o", "--output", default="grid.png", help="picture to write (default grid.png)")
    p.add_argument("--model", default=None, help="a model with its decoder (default: $FACEPCL_MODEL, else pcl-demo)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--faces-a", default="0", help="faces of A: indices such as 0,1, or all (default 0)")
    p.add_argument("--faces-b", default="0", help="faces of B (default 0)")
    args = p.parse_args(argv)

    def faces(text: str):
        return "all" if text == "all" else [int(i) for i in text.split(",")]

    swaps = swap_faces(args.a, args.b, args.model, faces_a=faces(args.faces_a), faces_b=faces(args.faces_b),
                       device=args.device)
    grid = swaps.grid(scale=3)
    grid.save(args.output)
    print(f"{len(swaps)} pair(s) of faces -> {args.output} ({grid.width}x{grid.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
