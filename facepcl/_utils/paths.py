"""Where facepcl keeps files (never inside site-packages or the working directory), and which paths it takes."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # facepcl/
BUNDLED_WEIGHTS = PACKAGE_DIR / "weights"


def hf_home() -> Path:
    """The Hugging Face home, read from ``HF_HOME`` at call time (default ``~/.cache/huggingface``)."""
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()


def facepcl_home() -> Path:
    """facepcl's own cache: ``$FACEPCL_HOME``, else ``$HF_HOME/facepcl``.

    Holds converted detector weights, converted official checkpoints and
    cached features. Created on first use.
    """
    env = os.environ.get("FACEPCL_HOME")
    return Path(env).expanduser() if env else hf_home() / "facepcl"


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def refuse_url(path: str | os.PathLike | Iterable[str | os.PathLike] | None, what: str) -> None:
    """Refuse a ``scheme://`` path (``s3://``, ``gs://``, ``https://``, ...) before anything is read or written.

    Commands other than ``facepcl embed`` (whose INPUT and -o take object-store
    URLs, see :mod:`facepcl.io.storage`) read and write local files only;
    without this check ``s3://b/x`` would be taken as a local folder named ``s3:``.

    Args:
        path: One path, several paths, or None (nothing to check).
        what: How the command line calls the argument, named in the message (e.g. ``"-o"``, ``"INPUT"``).

    Raises:
        ValueError: A path starts with ``scheme://``; the message names it and says what to do.
    """
    if path is None:
        return
    for p in [path] if isinstance(path, (str, os.PathLike)) else path:
        text = os.fspath(p)
        if isinstance(text, str) and _URL.match(text):
            scheme = text.split("://", 1)[0]
            raise ValueError(f"{what} {text!r}: this command reads and writes local files only ({scheme}:// "
                             "URLs are taken by `facepcl embed` INPUT and -o); copy the data to a local folder and "
                             "pass its path")
