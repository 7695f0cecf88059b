"""``facepcl demo``: a local web page to try a model on a photo (needs ``pip install "facepcl[demo]"``)."""

from __future__ import annotations

import argparse

from .._utils.paths import refuse_url

EPILOG = """\
the page: upload or drop a photo -> detected faces with boxes and landmarks, aligned crops, per-face embeddings
to download (.npz), a pose-swap grid between two chosen faces (models with a decoder), task-head predictions
(models with heads) and, with --index, each face's nearest neighbours in that index.
the server listens on 127.0.0.1 only unless --host says otherwise. photos over --max-upload-mb (32) are refused;
uploads are deleted once analysed.
example: facepcl demo --index faces.index --port 7860"""


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="local web page to try a model on photos (Gradio; the [demo] extra)",
                       description="Start a local Gradio page that runs the model on uploaded photos.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="facepcl.load name, Hub id or folder (default: $FACEPCL_MODEL, else pcl-demo)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit to pin")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--index", default=None, metavar="INDEX", help="index from `facepcl index`: show neighbours")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("-k", type=int, default=5, help="neighbours shown per face with --index (default 5)")
    p.add_argument("--max-upload-mb", type=float, default=32.0, metavar="MB",
                   help="largest photo the page takes, in MB (default 32); larger uploads are refused")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_url(args.index, "--index")
    from ..demo import build_demo

    limit = int(args.max_upload_mb * 2**20)
    app = build_demo(args.model, revision=args.revision, device=args.device, index=args.index, k=args.k,
                     max_upload_bytes=limit)
    print(f"facepcl demo: http://{args.host}:{args.port}  (Ctrl+C stops it)")
    app.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_error=True,
               max_file_size=limit)
    return 0
