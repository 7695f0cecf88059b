"""Embed every face in a folder of images and save the embeddings to one .npz file.

    python examples/embed_folder.py examples/images -o faces.npz [--model pcl-demo] [--device cpu]

Every image under FOLDER (recursively) is read, its faces detected and aligned,
and their face, pose and trunk embeddings computed in batches. Unreadable files
and images without a face are reported and skipped; they never stop the rest.
The .npz holds one row per face: path, face_index, bbox, kps, det_score, face,
pose, trunk; load it with ``numpy.load("faces.npz")``.

For many thousands of images, or videos, use the command instead: it streams,
writes Parquet shards and resumes after a crash (docs/cli.md):

    facepcl embed FOLDER -o faces/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import facepcl
from facepcl.export import IMAGE_EXTENSIONS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="folder of images (searched recursively)")
    p.add_argument("-o", "--output", type=Path, default=Path("faces.npz"), help="output .npz (default faces.npz)")
    p.add_argument("--model", default=None, help="model name, Hub id or folder (default: $FACEPCL_MODEL or pcl-demo)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--max-faces", type=int, default=None, help="keep at most this many faces per image")
    args = p.parse_args(argv)

    paths = sorted(f for f in args.folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        p.error(f"{args.folder}: no image files found")
    embedder = facepcl.FaceEmbedder(args.model, device=args.device, detector={"max_faces": args.max_faces})
    result = embedder([str(f) for f in paths])  # a list: bad files are recorded, not raised

    for failure in result.failures:
        print(f"skipped (unreadable): {failure.input}: {failure.reason}")
    for i in result.no_face:
        print(f"skipped (no face): {paths[i]}")
    face_index = np.concatenate([np.arange(len(r)) for r in result.per_image()]) if len(result) else np.zeros(0, int)
    np.savez(args.output, path=np.array([str(paths[i]) for i in result.image_index], dtype=str),
             face_index=face_index, bbox=result.bbox, kps=result.kps, det_score=result.det_score,
             face=result.face, pose=result.pose, trunk=result.trunk)
    print(f"{len(result)} faces from {len(paths)} images -> {args.output} "
          f"(face, pose, trunk: {result.face.shape[1]} floats each; model {result.info['model_id']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
