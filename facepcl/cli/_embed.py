"""``facepcl embed INPUT... -o OUT``: bulk face / pose / trunk embeddings with provenance, resumable, torchrun-ready."""

from __future__ import annotations

import argparse

from .._utils.paths import refuse_url

EPILOG = """\
inputs: files, folders (walked recursively, sorted), glob patterns ('photos/**/*.jpg'), @list.txt files
(one path per line, relative to the list's folder) and videos (every --every-th frame).

output: OUT holds shards part-rRRRRR-SSSSSS.<format> (one row per face), _run.json, _manifests/ and
_errors.jsonl (every skipped input or frame with its reason). Read it back in one line:
  pyarrow.parquet.read_table(OUT)   pandas.read_parquet(OUT)   facepcl.export.read_embeddings(OUT)
  (pandas: pip install "facepcl[pandas]")

resume: a killed or interrupted run loses at most the shard in flight; run the same command with --resume.
scale out: torchrun --nproc-per-node N -m facepcl embed ... (each process takes every N-th input).
exit codes: 0 done (skipped inputs included), 1 fatal error, 2 usage error, 130/143 interrupted (resumable).
See docs/cli.md for details."""


def _features(value: str) -> list[str]:
    from ..export._writers import FEATURES

    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in FEATURES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(FEATURES)}, got {value!r}")
    return names


def add_parser(sub) -> None:
    p = sub.add_parser("embed", help="embed every face of many images and videos into Parquet/npz/safetensors",
                       description="Detect, align and embed every face of files, folders, patterns, @lists and "
                                   "videos; write one row per face with its provenance, in shards that survive "
                                   "crashes and can be resumed.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="file, folder, glob pattern or @list.txt")
    p.add_argument("-o", "--output", dest="out", required=True, metavar="OUT",
                   help="output folder (created; one dataset for all ranks)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None,
                   help="facepcl.load name, Hub id or folder (default: $FACEPCL_MODEL, else pcl-demo)")
    m.add_argument("--revision", default=None, help="Hub branch, tag or commit to pin")
    m.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if "
                                                  "available, else cpu; under torchrun cuda:LOCAL_RANK)")
    m.add_argument("--dtype", default=None, help="encoder compute dtype: float32 (default, exact), bf16 or fp16; "
                                                 "stored embeddings are float32 either way")
    m.add_argument("--compile", action="store_true",
                   help="torch.compile the encoder (one compilation, 10-60 s on a CPU, serves every batch size); "
                        "pays off on long runs where encoding dominates, e.g. with --no-detect")
    m.add_argument("--detector-dtype", default=None,
                   help="detector compute dtype: float32 (default) or bf16 (faster, but landmarks move by up to a "
                        "pixel, which can take embeddings below cosine 0.999 of the exact path)")
    m.add_argument("--fast", action="store_true", default=None,
                   help="the fast path (the default): a bf16 encoder where the hardware computes it natively "
                        "(CUDA, or a CPU with AVX512-BF16/AMX), channels_last, and a BatchNorm-folded float32 "
                        "detector (ONNX Runtime on a CPU); embeddings stay within cosine 0.999 of the exact path "
                        "(see docs/benchmarks.md). --dtype and --detector-dtype override its choices")
    m.add_argument("--exact", dest="fast", action="store_false", default=None,
                   help="the exact path: the float32 encoder and detector as published, in torch, bit for bit")
    f = p.add_argument_group("faces")
    f.add_argument("--no-detect", dest="detect", action="store_false",
                   help="inputs are already aligned face crops: no detection, one row per image")
    f.add_argument("--max-faces", type=int, default=None, help="keep at most N faces per image (highest scores)")
    f.add_argument("--on-no-face", choices=("skip", "full_image", "error"), default="skip",
                   help="image without a face: skip it and record it in _errors.jsonl (default), embed the "
                        "whole image as one face (det_score NaN), or stop with exit code 1")
    f.add_argument("--det-threshold", dest="det_threshold", type=float, default=None,
                   help="detector score threshold (default: the model config's)")
    f.add_argument("--min-face-size", type=float, default=0.0, help="ignore faces smaller than this (pixels)")
    f.add_argument("--every", type=int, default=1, metavar="N", help="videos: embed every N-th frame (default 1)")
    o = p.add_argument_group("output")
    o.add_argument("--features", type=_features, default=["face", "pose", "trunk"],
                   help="comma-separated subset of face,pose,trunk (default: all three)")
    o.add_argument("--format", choices=("parquet", "npz", "safetensors"), default="parquet",
                   help="shard format (default parquet)")
    o.add_argument("--shard-size", type=int, default=2048, metavar="ROWS",
                   help="close a shard once it holds this many rows or skip records (default 2048)")
    o.add_argument("--shard-seconds", type=float, default=300.0, metavar="S",
                   help="close a shard at the first batch after S seconds (default 300): bounds what a crash loses")
    o.add_argument("--resume", action="store_true",
                   help="continue the export in OUT where it stopped (also fine when OUT is new or empty)")
    o.add_argument("--overwrite", action="store_true",
                   help="delete the export already in OUT (its shards, manifests, _run.json, _errors.jsonl, "
                        "index.csv; nothing else) and start over")
    r = p.add_argument_group("run")
    r.add_argument("--batch-size", type=int, default=32,
                   help="images per batch and crops per encoder forward (default 32); the exact detector on a CPU "
                        "takes images one at a time, measured fastest")
    r.add_argument("--num-workers", type=int, default=None,
                   help="decoding threads per process (default: cores / processes on this machine, at most 4)")
    r.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (it is also off when stderr is not a terminal)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary; errors only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_url(args.inputs, "INPUT")
    refuse_url(args.out, "-o")
    from ..export._runner import EmbedOptions, run_embed

    opts = EmbedOptions(
        inputs=list(args.inputs), out=args.out, model=args.model, revision=args.revision, device=args.device,
        dtype=args.dtype, compile=args.compile, fast=args.fast, detector_dtype=args.detector_dtype,
        batch_size=args.batch_size, num_workers=args.num_workers, max_faces=args.max_faces,
        on_no_face=args.on_no_face, features=args.features, format=args.format, every=args.every,
        detect=args.detect, det_threshold=args.det_threshold, min_face_size=args.min_face_size,
        shard_size=args.shard_size, shard_seconds=args.shard_seconds, resume=args.resume, overwrite=args.overwrite,
        progress=args.progress, quiet=args.quiet)
    return run_embed(opts)
