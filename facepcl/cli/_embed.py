"""``facepcl embed INPUT... -o OUT``: bulk face / pose / trunk embeddings with provenance, resumable, torchrun-ready."""

from __future__ import annotations

import argparse

from .._utils.constants import parse_features
from .._utils.paths import refuse_url
from ..io.storage import parse_options

EPILOG = """\
inputs: files, folders (walked recursively, sorted), glob patterns ('photos/**/*.jpg'), @list.txt files
(one path per line, relative to the list's folder) and videos (every --every-th frame).

output: OUT holds shards part-rRRRRR-SSSSSS.<format> (one row per face), _run.json, _manifests/ and
_errors.jsonl (every skipped input or frame with its reason). Read it back in one line:
  pyarrow.parquet.read_table(OUT)   pandas.read_parquet(OUT)   facepcl.export.read_embeddings(OUT)
  (pandas: pip install "facepcl[pandas]")

object stores: INPUT and OUT may be fsspec URLs (s3://, gs://, az://, ...): pip install "facepcl[s3]";
credentials come from the filesystem's own configuration (AWS_* variables) or --storage-options JSON.

resume: a killed or interrupted run loses at most the shard in flight; run the same command with --resume.
scale out: torchrun --nproc-per-node N -m facepcl embed ... (each process takes every N-th input), or
--engine ray [--ray-address ADDR] on a Ray cluster (docs/ray.md).
exit codes: 0 done (skipped inputs included), 1 fatal error, 2 usage error, 130/143 interrupted (resumable).
See docs/cli.md for details."""


def _storage_options(value: str) -> dict:
    try:
        return parse_options(value)
    except ValueError as e:  # argparse would repeat the value, which may hold a secret
        raise argparse.ArgumentTypeError(str(e)) from None


def _features(value: str) -> list[str]:
    try:
        return parse_features(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class OwnedGroup:
    """An argparse group whose flags set the options of one owner, each under the owner's own parameter name.

    ``add_argument(*flags, dest=NAME, ...)`` declares the flag of the
    owner's option NAME (stored in the namespace as ``"<owner>.NAME"``, so
    that two owners may both have a ``dtype``); :func:`owned` collects them.
    """

    def __init__(self, parser: argparse.ArgumentParser, owner: str, title: str) -> None:
        self.owner = owner
        self.group = parser.add_argument_group(title)

    def add_argument(self, *flags: str, dest: str, **kwargs) -> argparse.Action:
        """``argparse``'s ``add_argument`` for the owner's option ``dest`` (its metavar: ``dest`` in capitals)."""
        if kwargs.get("action") not in ("store_true", "store_false") and "choices" not in kwargs:
            kwargs.setdefault("metavar", dest.upper())
        return self.group.add_argument(*flags, dest=f"{self.owner}.{dest}", **kwargs)


def owned(args: argparse.Namespace, owner: str) -> dict:
    """The options of ``owner`` that the command line set (flags left out, default None, are not passed on)."""
    prefix = f"{owner}."
    return {k.removeprefix(prefix): v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def add_parser(sub) -> None:
    p = sub.add_parser("embed", help="embed every face of many images and videos into Parquet/npz/safetensors",
                       description="Detect, align and embed every face of files, folders, patterns, @lists and "
                                   "videos; write one row per face with its provenance, in shards that survive "
                                   "crashes and can be resumed.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="file, folder, glob pattern, @list.txt, or object-store URL (s3://bucket/photos)")
    p.add_argument("-o", "--output", dest="out", required=True, metavar="OUT",
                   help="output folder or object-store URL (created; one dataset for all ranks)")
    x = OwnedGroup(p, "export", "model and output (the export's own options)")
    x.add_argument("--model", dest="model", default=None,
                   help="facepcl.load name, Hub id or folder (default: $FACEPCL_MODEL, else pcl-demo)")
    x.add_argument("--revision", dest="revision", default=None, help="Hub branch, tag or commit to pin")
    x.add_argument("--features", dest="features", type=_features, default=["face", "pose", "trunk"],
                   help="comma-separated subset of face,pose,trunk (default: all three)")
    x.add_argument("--format", dest="format", choices=("parquet", "npz", "safetensors"), default="parquet",
                   help="shard format (default parquet)")
    x.add_argument("--every", dest="every", type=int, default=1, metavar="N",
                   help="videos: embed every N-th frame (default 1)")
    x.add_argument("--sequences", dest="sequences", action="store_true",
                   help="each folder of images is the frames of one video (sorted by name): tracked like a video")
    x.add_argument("--no-track", dest="track", action="store_false",
                   help="videos: no tracking (by default every video row gets a track_id and OUT/_tracks.parquet "
                        "summarises each track; see docs/tracking.md)")
    x.add_argument("--shard-size", dest="shard_size", type=int, default=2048, metavar="ROWS",
                   help="close a shard once it holds this many rows or skip records (default 2048)")
    x.add_argument("--shard-seconds", dest="shard_seconds", type=float, default=300.0, metavar="S",
                   help="close a shard at the first batch after S seconds (default 300): bounds what a crash loses")
    x.add_argument("--resume", dest="resume", action="store_true",
                   help="continue the export in OUT where it stopped (also fine when OUT is new or empty)")
    x.add_argument("--overwrite", dest="overwrite", action="store_true",
                   help="delete the export already in OUT (its shards, manifests, _run.json, _errors.jsonl, "
                        "index.csv, _tracks.parquet; nothing else) and start over")
    x.add_argument("--storage-options", dest="storage_options", type=_storage_options, default=None,
                   metavar="JSON",
                   help="fsspec filesystem arguments for URL inputs and OUT, as a JSON object (default: the "
                        "filesystem's own configuration, e.g. AWS_* variables); never printed or stored. See "
                        "docs/object-stores.md")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default): decode threads and the model in this process (torchrun for more "
                        "processes); ray: the same export on a Ray cluster, images and videos, on actor pools "
                        '(pip install "facepcl[ray]"; see docs/ray.md)')
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="--engine ray: the cluster to join (default: a running Ray, else a new local one)")
    p.add_argument("--ray-stages", default="auto", choices=("auto", "1", "2"),
                   help="--engine ray: 2: decode and detect on CPU actors, then encode on the model's actors (a GPU "
                        "each); 1: all in the model's actors; auto (default): 2 when the cluster has GPUs")
    x.add_argument("--num-workers", dest="num_workers", type=int, default=None,
                   help="decoding threads per process (default: cores / processes on this machine, at most 4)")
    x.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (it is also off when stderr is not a terminal)")
    x.add_argument("-q", "--quiet", dest="quiet", action="store_true", help="no progress bar, no summary; errors only")
    e = OwnedGroup(p, "embedder", "embedding (FaceEmbedder options)")
    e.add_argument("--mode", dest="mode", choices=("fast", "exact"), default=None,
                   help="fast (default): a bf16 encoder where the hardware computes it natively (CUDA, or a CPU "
                        "with AVX512-BF16/AMX), channels_last, and a BatchNorm-folded float32 detector (ONNX Runtime "
                        "on a CPU); embeddings stay within cosine 0.999 of the exact mode (docs/benchmarks.md). "
                        "exact: the float32 encoder and detector as published, in torch. --dtype and "
                        "--detector-dtype override the mode's choices")
    e.add_argument("--device", dest="device", default=None,
                   help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available, else cpu; under torchrun "
                        "cuda:LOCAL_RANK)")
    e.add_argument("--dtype", dest="dtype", default=None,
                   help="encoder compute dtype: float32, bf16 or fp16 (default: the mode's); stored embeddings are "
                        "float32 either way")
    e.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="torch.compile the encoder (one compilation serves every batch size); pays off on long "
                        "runs where encoding dominates, e.g. with --no-detect")
    e.add_argument("--encoder-runtime", dest="encoder_runtime",
                   choices=("auto", "torch", "onnxruntime", "onnxruntime-int8"), default=None,
                   help="what runs the fast encoder on a CPU: auto (default: the fastest of torch, ONNX Runtime "
                        "float32 and, where bf16 is not native and the model carries a calibration that passed its "
                        "gate, ONNX Runtime int8; measured once per CPU and model), or one of them (docs/embedding.md)")
    e.add_argument("--crop-size", dest="crop_size", type=int, default=None,
                   help="aligned crop side in pixels (default: the model config's)")
    e.add_argument("--no-detect", dest="detect", action="store_false", default=None,
                   help="inputs are already aligned face crops: no detection, one row per image")
    e.add_argument("--on-no-face", dest="on_no_face", choices=("skip", "full_image", "error"), default=None,
                   help="image without a face: skip it and record it in _errors.jsonl (default), embed the "
                        "whole image as one face (det_score NaN), or stop with exit code 1")
    e.add_argument("--batch-size", dest="batch_size", type=int, default=None,
                   help="images per batch and crops per encoder forward (default 32)")
    d = OwnedGroup(p, "detector", "face detection (FaceDetector options; default: the model config's)")
    d.add_argument("--detector", dest="name", default=None,
                   help="retinaface_mobile0.25 (bundled) or retinaface_resnet50 (downloaded once)")
    d.add_argument("--detector-weights", dest="weights", default=None, help="local detector weights file")
    d.add_argument("--no-download", dest="download", action="store_false", default=None,
                   help="never download detector weights (an error if they are not cached)")
    d.add_argument("--detector-dtype", dest="dtype", default=None,
                   help="detector compute dtype: float32 (default) or bf16 (faster, but landmarks move by up to a "
                        "pixel, which can take embeddings below cosine 0.999 of the exact mode)")
    d.add_argument("--det-threshold", dest="det_threshold", type=float, default=None,
                   help="detector score threshold")
    d.add_argument("--nms-threshold", dest="nms_threshold", type=float, default=None,
                   help="IoU above which a lower-scored box is suppressed")
    d.add_argument("--detect-size", dest="max_size", type=int, default=None,
                   help="longer image side, in pixels, that detection works at")
    d.add_argument("--min-face-size", dest="min_face_size", type=float, default=None,
                   help="ignore faces whose box's shorter side is below this (pixels)")
    d.add_argument("--max-faces", dest="max_faces", type=int, default=None,
                   help="keep at most N faces per image (the first by --sort-by)")
    d.add_argument("--sort-by", dest="sort_by", choices=("score", "size"), default=None,
                   help="order of an image's faces: score (default) or size")
    d.add_argument("--detector-batch-size", dest="batch_size", type=int, default=None,
                   help="images per detector forward (default: 1 for the exact detector on a CPU, else 8)")
    d.add_argument("--canvas-step", dest="canvas_step", type=int, default=None,
                   help="detector canvas sides are multiples of this (a multiple of 32; default 32)")
    d.add_argument("--detector-runtime", dest="runtime", choices=("torch", "onnxruntime"), default=None,
                   help="what runs the detector (default: onnxruntime for the fast detector on a CPU, else torch)")
    d.add_argument("--rescue-threshold", dest="rescue_threshold", type=float, default=None,
                   help="second pass for faces that shrinking hid, from this score (default 0.2; 0 turns it off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import EmbedOptions, run_embed

    detector = owned(args, "detector")
    refuse_url(detector.get("weights"), "--detector-weights")
    if detector.get("rescue_threshold") == 0:
        detector["rescue_threshold"] = None
    embedder = owned(args, "embedder") | ({"detector": detector} if detector else {})
    opts = EmbedOptions(inputs=list(args.inputs), out=args.out, embedder=embedder, **owned(args, "export"))
    if args.engine == "local":
        for flag, value, default in (("--ray-address", args.ray_address, None), ("--ray-stages", args.ray_stages,
                                                                                  "auto")):
            if value != default:
                raise ValueError(f"{flag} works with --engine ray only; add --engine ray or drop {flag}")
        return run_embed(opts)
    from ..ray import RayEngine, require_ray

    try:
        require_ray()
    except ImportError as e:  # a usage problem with a fix, not a crash
        raise ValueError(f"--engine ray: {e}") from None
    split = None if args.ray_stages == "auto" else args.ray_stages == "2"
    with RayEngine(args.ray_address, split=split) as engine:
        return run_embed(opts, engine)
