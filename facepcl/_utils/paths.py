"""Where facepcl keeps files: never inside site-packages or the working directory."""

from __future__ import annotations

import os
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
