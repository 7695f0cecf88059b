"""``facepcl serve``: face, pose and trunk codes over HTTP on 127.0.0.1 (the ``[serve]`` extra)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from ..serve import DEFAULT_HOST, DEFAULT_PORT, MAX_BODY

    p = sub.add_parser("serve", help="HTTP server: POST /embed an image, get face/pose/trunk codes as JSON",
                       description="Serve POST /embed (multipart field 'file'; query features, max_faces, "
                                   "det_threshold) and GET /health. Binds 127.0.0.1 unless --host says otherwise. "
                                   'Needs pip install "facepcl[serve]". See docs/serve.md.')
    p.add_argument("--model", default=None, help="facepcl.load name, Hub id or folder (default: $FACEPCL_MODEL, "
                                                 "else pcl-demo)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine "
                                                        "only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--max-body-mb", type=float, default=MAX_BODY / 2**20,
                   help=f"largest request body in MiB (default {MAX_BODY // 2**20}); larger bodies get 413")
    p.add_argument("--concurrency", type=int, default=1,
                   help="requests computed at the same time (default 1: torch already uses every core)")
    p.add_argument("--queue-timeout", type=float, default=30.0,
                   help="seconds a request waits for its turn before a 503 (default 30)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..serve import serve

    serve(args.model, host=args.host, port=args.port, device=args.device, max_body=int(args.max_body_mb * 2**20),
          concurrency=args.concurrency, queue_timeout=args.queue_timeout)
    return 0
