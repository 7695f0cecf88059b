"""Names in an export folder, and reading its JSON bookkeeping (manifests, ``_run.json``) with clear errors.

See :mod:`facepcl.export._folder` for the layout and what each file holds.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

from .._utils.settings import SettingsError, read_settings
from ._types import ExportStateError

RUN_FILE = "_run.json"
MANIFESTS = "_manifests"
ERRORS_FILE = "_errors.jsonl"
INDEX_FILE = "index.csv"
SHARD_RE = re.compile(r"part-r(\d{5})-(\d{6})")
FIX_DAMAGED = "run with --overwrite or restore it"


def shard_name(rank: int, shard: int) -> str:
    """``part-r{rank:05d}-{shard:06d}`` (no suffix)."""
    return f"part-r{rank:05d}-{shard:06d}"


def read_json(path: str) -> dict[str, Any]:
    """A manifest or ``_run.json``.

    Raises:
        ExportStateError: The file is not a JSON object (garbage, truncated),
            naming it and the fix.
        FileNotFoundError: It does not exist.
    """
    try:
        value = read_settings(path, FIX_DAMAGED)
    except SettingsError as e:
        raise ExportStateError(str(e)) from None
    if value is None:
        raise FileNotFoundError(f"{path}: no such file")
    return value


#: What reading a shard needs from its manifest, and what resuming after it needs.
READ_KEYS = ("file",)
RESUME_KEYS = ("file", "rows", "start", "end", "stats", "errors")


def read_manifest(path: str, need: tuple[str, ...] = READ_KEYS) -> dict[str, Any]:
    """A shard manifest, checked for the keys the caller needs (:data:`READ_KEYS` or :data:`RESUME_KEYS`).

    Raises:
        ExportStateError: It is damaged (not JSON, or without a needed key).
    """
    man = read_json(path)
    missing = [k for k in need if k not in man]
    if missing:
        raise ExportStateError(f"{path} is damaged (it lacks {', '.join(missing)}); {FIX_DAMAGED}")
    return man


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an output folder of ``facepcl embed`` (it has ``_run.json`` or ``_manifests/``)."""
    path = os.fspath(path)
    return os.path.isdir(path) and (os.path.exists(os.path.join(path, RUN_FILE))
                                    or os.path.isdir(os.path.join(path, MANIFESTS)))


def any_shards(out: str, rank: int | None = None) -> bool:
    """Whether ``out`` holds any committed or half-committed shard (of one rank, or of any)."""
    pattern = "part-r*" if rank is None else f"part-r{rank:05d}-*"
    return bool(glob.glob(os.path.join(glob.escape(out), MANIFESTS, pattern + ".json"))
                or glob.glob(os.path.join(glob.escape(out), pattern)))
