"""Action unit detection on DISFA: 8 AUs, present at intensity >= 2, F1 per AU and mean, 3-fold
subject-independent cross-validation.

DISFA ships videos: extract frames first (e.g. ``ffmpeg -i LeftVideoSN001_comp.avi frames/SN001/%d.jpg``,
which numbers frames from 1 like the label files), ideally aligned face crops. Then::

    python examples/au_detection.py --labels ~/data/DISFA/ActionUnit_Labels --frames ~/data/DISFA/frames \\
        --model ORG/NAME

A tiny generated run::

    python examples/au_detection.py --demo

The same as one command: ``facepcl evaluate --dataset disfa --data LABELS --frames FRAMES``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import facepcl
from facepcl.eval.datasets import read_disfa
from facepcl.eval.protocols import PROTOCOLS, RunOptions, run_protocol


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", help="DISFA ActionUnit_Labels folder")
    p.add_argument("--frames", help="folder of extracted frames (FRAMES/SN001/1.jpg, ...)")
    p.add_argument("--frame-pattern", default="{subject}/{frame}.jpg")
    p.add_argument("--model", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--demo", action="store_true", help="generate tiny DISFA-format files and a random-weight model")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.demo:
            from facepcl.eval import demo

            labels, frames = demo.make_disfa(Path(tmp) / "disfa", subjects=6, frames=15)
            facepcl.PCLModel(facepcl.PCLConfig()).save_pretrained(Path(tmp) / "model")
            args.labels, args.frames, args.model = str(labels), str(frames), str(Path(tmp) / "model")
            args.epochs = args.epochs or 15
        if not (args.labels and args.frames):
            p.error("--labels and --frames are required (or --demo)")
        data = {"all": read_disfa(args.labels, args.frames, frame_pattern=args.frame_pattern)}
        options = RunOptions(cache_dir=Path(tmp) / "features" if args.demo else None,
                             input_size=64 if args.demo else None)  # the demo runs at 64 px to stay quick
        if args.epochs:
            options.train = dataclasses.replace(PROTOCOLS["au"].train, epochs=args.epochs)
        result = run_protocol(facepcl.load(args.model), "au", data, "disfa", options)
        print(result.report.table())
        per_au = {k[3:]: round(100 * v, 1) for k, v in result.report.metrics.items() if k.startswith("f1_AU")}
        print("F1 per AU (%):", per_au)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
