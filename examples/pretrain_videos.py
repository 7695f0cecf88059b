"""Pretrain a PCL model on a folder of videos (or of frame folders), from scratch or from a model.

    pip install "facepcl[train]"
    python examples/pretrain_videos.py my_videos/ -o runs/my-pcl [--every 5] [--steps 200] [--model pcl-demo]

Two steps:

1. Face tracks, with ``facepcl.prepare.prepare_tracks`` (the library behind
   ``facepcl prepare``): every --every-th frame of each video (or of each
   folder of frames) is searched for faces, the main face is followed across
   frames by box overlap, aligned with the model template facepcl uses at
   inference and written to OUT/frames/<identity>/<video>/NNNNNN.png
   (--frame-size px) with its provenance in track.json. That is the
   identity/video/frame layout of ``facepcl train``. Frames without that face
   are skipped; running again after an interruption continues.
2. Training. ``facepcl.train.main`` runs the recipe (default ``smoke``: small
   batches, minutes on a CPU; ``pcl`` is the paper's) on those frames, for
   --steps iterations if given, and exports the model to OUT/model, which
   ``facepcl.load`` reads. --model continues from a model that has all four
   components (encoder, heads, decoder) instead of starting from random weights.

Any other training setting: --set key=value (repeatable), e.g. --set batch.rec=64;
see docs/training.md. The same as two commands:

    facepcl prepare my_videos/ -o OUT/frames --every 5
    facepcl train smoke data.root=OUT/frames output_dir=OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import facepcl
from facepcl.prepare import prepare_tracks, read_manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", type=Path, help="folder of video files and/or sub-folders of frames")
    p.add_argument("-o", "--output", type=Path, required=True, help="run folder (frames, checkpoints, logs, model)")
    p.add_argument("--recipe", default="smoke", help="training recipe: smoke (default), pcl, or a YAML file")
    p.add_argument("--steps", type=int, default=None, help="stop after this many iterations (default: the recipe's)")
    p.add_argument("--every", type=int, default=5, help="use every N-th frame of each video (default 5)")
    p.add_argument("--frame-size", type=int, default=160, help="side of the aligned face frames (default 160)")
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
    prepare_tracks([args.videos], frames, every=args.every, frame_size=args.frame_size, device=args.device)
    tracks = read_manifest(frames)
    for t in tracks:
        print(f"{t['identity']}/{t['video']}: {len(t['frames'])} face frames")
    if not tracks:
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
