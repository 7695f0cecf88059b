"""``facepcl prepare INPUT... -o OUT``: videos, frame folders and images -> aligned face tracks for training."""

from __future__ import annotations

import argparse
import sys

from .._utils.paths import refuse_url

EPILOG = """\
inputs: video files, image files and folders, walked in sorted order. Every video below a folder, and every
folder holding images (the frames of one video), is one source; OUT/identity/video is named from its path:
identity = first folder below INPUT, video = the rest joined with '-'. VoxCeleb as downloaded:
  facepcl prepare vox2/dev/mp4 -o vox2_tracks --every 5
      id00012/21Uxsk56VDQ/00001.mp4 -> vox2_tracks/id00012/21Uxsk56VDQ-00001/NNNNNN.png
  facepcl prepare vox1/frames -o vox1_tracks
      id10001/1zcIwhmdeo4/00001/*.jpg -> vox1_tracks/id10001/1zcIwhmdeo4-00001/NNNNNN.png

output: OUT/identity/video/NNNNNN.png (NNNNNN: source frame number), one face per source: the main one, followed
across frames by box overlap; frames without it are skipped. OUT/identity/video/track.json records the source,
frame numbers, boxes, landmarks and scores. Then: facepcl train smoke data.root=OUT

resume: run the same command again after a crash or kill; finished tracks are kept, the one in flight is redone.
scale out: torchrun --nproc-per-node N -m facepcl prepare ..., or --shard-index/--shard-count on several machines.
Unreadable inputs are logged and recorded in OUT/_prepare/ledger-*.jsonl; they never stop the run.
See docs/training.md."""


def add_parser(sub) -> None:
    p = sub.add_parser("prepare", help="turn videos and frame folders into aligned face tracks for facepcl train",
                       description="Detect, track and align the main face of every video or folder of frames; "
                                   "write OUT/identity/video/NNNNNN.png, the layout facepcl train reads.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video file, image file or folder")
    p.add_argument("-o", "--output", dest="out", required=True, metavar="OUT", help="output folder (data.root)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="use every N-th frame (default 1)")
    p.add_argument("--frame-size", type=int, default=None, metavar="PX",
                   help="side of the aligned frames (default 160: the 0.4 face patches of training then keep "
                        "64 px of detail)")
    p.add_argument("--device", default=None, help="detector device (default: cuda if available; torchrun: per rank)")
    p.add_argument("--detect-size", type=int, default=640, metavar="PX",
                   help="longer side the detector works at (default 640; smaller is faster)")
    p.add_argument("--min-face-size", type=float, default=0.0, metavar="PX",
                   help="ignore faces smaller than this (source pixels)")
    p.add_argument("--min-iou", type=float, default=0.3, help="box overlap that continues a track (default 0.3)")
    p.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    p.add_argument("--all-tracks", type=int, default=None, metavar="N",
                   help="also keep every other face track of at least N frames, each as an identity of its own "
                        "(OUT/IDENTITY-tNNN/VIDEO); default: the main face only")
    p.add_argument("--shard-index", type=int, default=None, help="this machine's shard (default: RANK, else 0)")
    p.add_argument("--shard-count", type=int, default=None, help="number of shards (default: WORLD_SIZE, else 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_url(args.inputs, "INPUT")
    refuse_url(args.out, "-o")
    from ..prepare import prepare_tracks

    if (args.shard_index is None) != (args.shard_count is None):
        print("facepcl prepare: error: give both --shard-index and --shard-count, or neither", file=sys.stderr)
        return 2
    size = {} if args.frame_size is None else {"frame_size": args.frame_size}
    s = prepare_tracks(args.inputs, args.out, every=args.every, **size,
                       shard_index=args.shard_index, shard_count=args.shard_count, device=args.device,
                       detect_size=args.detect_size, min_face_size=args.min_face_size, min_iou=args.min_iou,
                       workers=args.workers, all_tracks=args.all_tracks)
    print(f"{args.out}: {s.tracks} tracks ({s.frames} frames) written, {s.resumed} done before, {s.no_face} "
          f"without a face, {len(s.errors)} unreadable, of {s.sources} sources in {s.seconds:.1f} s")
    for path, reason in s.errors[:10]:
        print(f"  skipped {path}: {reason}", file=sys.stderr)
    return 0
