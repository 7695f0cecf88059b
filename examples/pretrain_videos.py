"""Pretrain a PCL model on a folder of videos (or of frame folders), from scratch or from a model.

    pip install "facepcl[train]"
    python examples/pretrain_videos.py my_videos/ -o runs/my-pcl [--every 5] [--steps 200] [--model pcl-demo]

Two steps:

1. Face tracks. Every --every-th frame of each video (or every image of each
   sub-folder of frames) is searched for its best face, which is aligned with
   the model template facepcl uses at inference and written to
   OUT/frames/<video>/track/NNNNNN.png (--frame-size px). That is the
   identity/video/frame layout of ``facepcl train``, each video counting as one
   identity. Frames without a face are skipped.
2. Training. ``facepcl.train.main`` runs the recipe (default ``smoke``: small
   batches, minutes on a CPU; ``pcl`` is the paper's) on those frames, for
   --steps iterations if given, and exports the model to OUT/model, which
   ``facepcl.load`` reads. --model continues from a model that has all four
   components (encoder, heads, decoder) instead of starting from random weights.

Any other training setting: --set key=value (repeatable), e.g. --set batch.rec=64;
see docs/training.md. The same training as one command:

    facepcl train smoke data.root=OUT/frames output_dir=OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

import facepcl
from facepcl.export import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS


def video_frames(path: Path, every: int):
    """Every ``every``-th frame of a video as RGB uint8, read with OpenCV."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot be opened as a video")
    index = 0
    try:
        while cap.grab():
            if index % every == 0:
                ok, bgr = cap.retrieve()
                if ok:
                    yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()


def sources(folder: Path, every: int):
    """``(name, frames)`` for each video file and each sub-folder of images under ``folder``."""
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix.lower() in VIDEO_EXTENSIONS:
            yield entry.stem, video_frames(entry, every)
        elif entry.is_dir():
            images = sorted(f for f in entry.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            if images:
                yield entry.name, (facepcl.load_image(f) for f in images[::every])


def extract_tracks(folder: Path, out: Path, every: int, size: int, device: str | None) -> int:
    """Write aligned face crops ``out/<video>/track/NNNNNN.png``; returns how many."""
    detector = facepcl.FaceDetector(device=device, max_faces=1)
    preprocess = facepcl.PCLConfig().preprocess  # the template every facepcl model uses at inference
    written = 0
    for name, frames in sources(folder, every):
        track = out / name / "track"
        count = 0
        for image in frames:
            found = detector.detect(image)
            if not len(found):
                continue
            crop = facepcl.align_faces(image, found.kps[:1], preprocess, crop_size=size)[0][0]
            track.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(track / f"{count:06d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            count += 1
        print(f"{name}: {count} face frames")
        written += count
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", type=Path, help="folder of video files and/or sub-folders of frames")
    p.add_argument("-o", "--output", type=Path, required=True, help="run folder (frames, checkpoints, logs, model)")
    p.add_argument("--recipe", default="smoke", help="training recipe: smoke (default), pcl, or a YAML file")
    p.add_argument("--steps", type=int, default=None, help="stop after this many iterations (default: the recipe's)")
    p.add_argument("--every", type=int, default=5, help="use every N-th frame of each video (default 5)")
    p.add_argument("--frame-size", type=int, default=128, help="side of the aligned face frames (default 128)")
    p.add_argument("--model", default=None, help="continue from this model (all four components); default: random")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any other training setting, e.g. batch.rec=64 (repeatable)")
    args = p.parse_args(argv)
    try:
        from facepcl.train import main as train
    except ImportError as e:
        p.error(str(e))

    frames = args.output / "frames"
    count = extract_tracks(args.videos, frames, args.every, args.frame_size, args.device)
    if count == 0:
        p.error(f"{args.videos}: no face found in any video or frame folder")
    overrides = [f"data.root={frames}", f"output_dir={args.output}"]
    overrides += [f"train.max_steps={args.steps}"] if args.steps else []
    overrides += [f"model.init={args.model}"] if args.model else []
    overrides += [f"device={args.device}"] if args.device else []
    code = train([args.recipe, *overrides, *args.overrides])
    if code:
        return code
    model = facepcl.load(args.output / "model", device=args.device, components="all")
    first = next(frames.rglob("*.png"))
    result = facepcl.embed(str(first), model=model, detect=False)
    print(f"model in {args.output / 'model'}: components {model.config.components}; "
          f"a training frame gives face/pose/trunk of {result.face.shape[1]} floats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
