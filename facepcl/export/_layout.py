"""Names in an export folder, and reading its JSON bookkeeping (manifests, ``_run.json``) with clear errors.

See :mod:`facepcl.export._folder` for the layout and what each file holds.
"""

from __future__ import annotations

import os
import re
from typing import Any

from .._utils.settings import SettingsError, read_settings
from ..io.storage import Store, open_store
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


def read_json(path: str, store: Store | None = None) -> dict[str, Any]:
    """A manifest or ``_run.json``: a local path, or a name in ``store``.

    Raises:
        ExportStateError: The file is not a JSON object (garbage, truncated),
            naming it and the fix.
        FileNotFoundError: It does not exist.
    """
    label = path if store is None else store.url(path)
    try:
        value = read_settings(label, FIX_DAMAGED, None if store is None else lambda: store.read_bytes(path))
    except SettingsError as e:
        raise ExportStateError(str(e)) from None
    if value is None:
        raise FileNotFoundError(f"{label}: no such file")
    return value


#: What reading a shard needs from its manifest, and what resuming after it needs.
READ_KEYS = ("file",)
RESUME_KEYS = ("file", "rows", "start", "end", "stats", "errors")


def read_manifest(path: str, need: tuple[str, ...] = READ_KEYS, store: Store | None = None) -> dict[str, Any]:
    """A shard manifest (a local path, or a name in ``store``), checked for the keys the caller needs.

    Args:
        path: The manifest.
        need: :data:`READ_KEYS` or :data:`RESUME_KEYS`.
        store: The export's store, when ``path`` is a name in it.

    Raises:
        ExportStateError: It is damaged (not JSON, or without a needed key).
    """
    man = read_json(path, store)
    missing = [k for k in need if k not in man]
    if missing:
        label = path if store is None else store.url(path)
        raise ExportStateError(f"{label} is damaged (it lacks {', '.join(missing)}); {FIX_DAMAGED}")
    return man


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an output folder of ``facepcl embed`` (it has ``_run.json`` or ``_manifests/``)."""
    path = os.fspath(path)
    return os.path.isdir(path) and (os.path.exists(os.path.join(path, RUN_FILE))
                                    or os.path.isdir(os.path.join(path, MANIFESTS)))


def any_shards(out: str | Store, rank: int | None = None) -> bool:
    """Whether ``out`` (a folder, URL or store) holds any committed or half-committed shard (of one rank, or of any)."""
    store = open_store(out)
    prefix = "part-r" if rank is None else f"part-r{rank:05d}-"
    return (any(n.startswith(prefix) and n.endswith(".json") for n in store.names(MANIFESTS))
            or any(n.startswith(prefix) for n in store.names()))
