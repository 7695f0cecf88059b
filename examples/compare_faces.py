"""Compare the faces of two images: cosine similarity of their face and of their pose embeddings.

    python examples/compare_faces.py examples/images/astronaut.jpg examples/images/pair.jpg [--model pcl-demo]

Prints one line per pair of faces (A's faces x B's faces; faces are numbered by
detector score). The face embedding (F_f) is meant to stay the same for one
person whatever the pose; the pose embedding (F_p) to follow the pose whoever
the person. Cosine similarity is 1 for the same direction, 0 for unrelated.
"""

from __future__ import annotations

import argparse

import facepcl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="first image")
    p.add_argument("b", help="second image")
    p.add_argument("--model", default=None, help="model name, Hub id or folder (default: $FACEPCL_MODEL or pcl-demo)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    args = p.parse_args(argv)

    embedder = facepcl.FaceEmbedder(args.model, device=args.device)
    ra, rb = embedder(args.a), embedder(args.b)
    for name, r in ((args.a, ra), (args.b, rb)):
        if len(r) == 0:
            print(f"{name}: no face found")
            return 1
    # Cosine similarity of every row (face) of A with every row of B: (faces of A, faces of B) matrices.
    face, pose = facepcl.similarity(ra, rb), facepcl.similarity(ra, rb, feature="pose")
    print(f"A = {args.a} ({len(ra)} face{'s' * (len(ra) != 1)}), B = {args.b} ({len(rb)} face{'s' * (len(rb) != 1)})")
    print(f"{'pair':<10}{'face similarity':>17}{'pose similarity':>17}")
    for i in range(len(ra)):
        for j in range(len(rb)):
            print(f"A{i} - B{j}{'':<3}{face[i, j]:>17.3f}{pose[i, j]:>17.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
