"""The ``facepcl`` command: one subcommand per module ``facepcl/cli/_<name>.py``.

Each subcommand module defines ``add_parser(subparsers)`` (registering its
arguments and ``func``) and keeps heavy imports inside its ``run`` so that
``facepcl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from .._utils.version import __version__
from ..errors import FacePCLError
from ..runtime import set_wait_policy

# Order here is the order in `facepcl --help`.
SUBCOMMANDS = (
    "embed",
    "convert",
    "onnx",
    "models",
    "download",
    "info",
    "finetune",
    "evaluate",
    "prepare",
    "train",
    "swap",
    "plot",
    "index",
    "search",
    "demo",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="facepcl",
        description="Face, pose and trunk embeddings from PCL (CVPR 2023).",
    )
    parser.add_argument("--version", action="version", version=f"facepcl {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}._{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 fatal error, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (FacePCLError, FileNotFoundError, ValueError) as e:
        print(f"facepcl {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"facepcl {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console entry point (``facepcl`` and ``python -m facepcl``): :func:`main`, then exit with its code.

    An interrupted run (exit code 130 or 143) has already committed and fsynced
    everything it keeps before returning. Native thread pools (OpenMP, ONNX
    Runtime) can still be parked in a worker at that moment, and finalising the
    interpreter around them can abort the process ("terminate called without an
    active exception"), turning a clean, resumable stop into a crash code. So an
    interrupted run leaves without finalisation; every other exit is the normal one.
    """
    set_wait_policy()  # before anything imports torch: OpenMP reads it when torch loads
    code = main()
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)

