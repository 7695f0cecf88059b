"""``facepcl download MODEL``: fill the cache for offline use later."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("download", help="download a model into the cache for later offline use")
    p.add_argument("model", help="registered name, ORG/NAME Hub id or hf-hub:ORG/NAME")
    p.add_argument("--revision", default=None, help="branch, tag or commit to pin")
    p.add_argument("--cache-dir", default=None, help="Hub cache folder (default: huggingface_hub's)")
    p.add_argument("--force", action="store_true", help="download again even if cached")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import download, load_folder

    resolved = download(args.model, revision=args.revision, cache_dir=args.cache_dir, force_download=args.force)
    load_folder(resolved, device="cpu")  # proves the files are complete and match the network
    rev = f" @ {resolved.revision}" if resolved.revision else ""
    print(f"{args.model}{rev}: ready in {resolved.folder}")
    return 0
