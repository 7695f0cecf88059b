"""The files of an index folder and how a new version of them is committed.

Every save writes a new version ``v``: ``rows.v{v}.parquet``, ``face.v{v}.npy``
(one per feature) and ``face.v{v}.ivf.faiss`` (IVF features only), each
written under a temporary name, fsynced and renamed into place, with its
size and SHA-256 recorded. Then ``index.json``, which names the current
version's files with those records, is replaced atomically: that rename is
the commit. Only then are the previous version's files deleted. Readers open
only the files ``index.json`` names and check them against their records, so
a writer killed at any point leaves the previous index readable, and the
next writer deletes what the interrupted one left.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .._utils.atomic import atomic_write
from .._utils.folders import check_file, file_record
from ..errors import FacePCLError, OutputError

INDEX_FILE = "index.json"
FORMAT_VERSION = 2
#: Files an index writes (this version's and the unversioned names of format 1), and their temporary names.
_OURS = re.compile(r"(rows|face|pose|trunk)(\.v\d+)?\.(parquet|npy|ivf\.faiss)")
_TEMP = re.compile(r"\.(index\.json|(rows|face|pose|trunk)(\.v\d+)?\.(parquet|npy|ivf\.faiss))\.tmp-.*")
_VERSION = re.compile(r"\.v(\d+)\.")
_REQUIRED = ("version", "features", "rows", "exact_below", "search", "identity", "exports", "files")


class IndexFileError(FacePCLError, ValueError):
    """An index folder's file is missing, damaged, or of a format this facepcl does not read."""


def rebuild_fix(folder: str) -> str:
    """The fix for a damaged index, for messages."""
    return f"rebuild it from its exports with `facepcl index --rebuild -o {folder}`"


def file_name(key: str, version: int) -> str:
    """The file of ``key`` ("rows", a feature, or "<feature>.ivf") in version ``version``."""
    if key == "rows":
        return f"rows.v{version}.parquet"
    if key.endswith(".ivf"):
        return f"{key[:-4]}.v{version}.ivf.faiss"
    return f"{key}.v{version}.npy"


def read_manifest(folder: str) -> dict[str, Any]:
    """``index.json`` of an index folder of this format.

    Raises:
        FileNotFoundError: The folder holds no index.
        IndexFileError: ``index.json`` is unreadable or of another format.
    """
    manifest = read_settings(folder)
    path = os.path.join(folder, INDEX_FILE)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFileError(f"{path}: index format {manifest.get('format_version')}, this facepcl reads format "
                             f"{FORMAT_VERSION}; {rebuild_fix(folder)}")
    missing = [k for k in _REQUIRED if k not in manifest]
    files = manifest.get("files")
    if missing or not isinstance(files, dict) or "rows" not in files or not all(
            isinstance(r, dict) and {"name", "size", "sha256"} <= set(r) for r in files.values()):
        raise IndexFileError(f"{path}: incomplete (missing {missing or 'file records'}); {rebuild_fix(folder)}")
    return manifest


def read_settings(folder: str) -> dict[str, Any]:
    """``index.json`` as JSON, of any format version (what ``--rebuild`` needs: settings and exports).

    Raises:
        FileNotFoundError: The folder holds no index.
        IndexFileError: ``index.json`` cannot be read or parsed.
    """
    path = os.path.join(folder, INDEX_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder}: not a facepcl index (no {INDEX_FILE}); build one with "
                                "`facepcl index EXPORT -o INDEX`")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise IndexFileError(f"{path}: cannot be read ({e}); rebuild the index from its exports with "
                             f"`facepcl index EXPORT... --rebuild -o {folder}`") from None
    if not isinstance(manifest, dict):
        raise IndexFileError(f"{path}: not an index manifest; rebuild the index with "
                             f"`facepcl index EXPORT... --rebuild -o {folder}`")
    return manifest


def check_sizes(folder: str, manifest: dict[str, Any]) -> str | None:
    """The first named file that is missing or has another size than recorded (a cheap check), or None."""
    for rec in manifest["files"].values():
        problem = check_file(os.path.join(folder, rec["name"]), {"size": rec["size"]})
        if problem:
            return f"{rec['name']}: {problem}"
    return None


def verify(folder: str, record: dict[str, Any], version: int | None = None) -> str:
    """Check one named file against its record (size and SHA-256); returns its path.

    Args:
        folder: The index folder.
        record: The file's record in ``index.json``.
        version: The version the record belongs to: a file missing because a
            newer version was committed since is told apart from damage.

    Raises:
        IndexFileError: The file is missing or differs from its record.
    """
    path = os.path.join(folder, record["name"])
    problem = check_file(path, record)
    if problem == "missing" and version is not None:
        try:
            current = read_settings(folder).get("version")
        except (FileNotFoundError, IndexFileError):
            current = version
        if current != version:
            raise IndexFileError(f"{path}: replaced by a newer version of the index since it was loaded (by "
                                 "another `facepcl index`); load the index again")
    if problem:
        raise IndexFileError(f"{path}: {problem}; the index is damaged: {rebuild_fix(folder)}")
    return path


def next_version(folder: str, current: dict[str, Any] | None) -> int:
    """A version number above the current one and above any leftover of an interrupted writer."""
    seen = [int(current.get("version", 0))] if current else [0]
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            m = _VERSION.search(name)
            if m and (_OURS.fullmatch(name) or _TEMP.fullmatch(name)):
                seen.append(int(m.group(1)))
    return max(seen) + 1


def named(manifest: dict[str, Any] | None) -> set[str]:
    """The file names a manifest commits."""
    if not manifest or not isinstance(manifest.get("files"), dict):
        return set()
    return {rec["name"] for rec in manifest["files"].values()}


def sweep(folder: str, keep: Iterable[str]) -> None:
    """Delete index files (and temporary files of index writes) that ``keep`` does not name.

    Only names an index writes are touched; anything else in the folder stays.
    """
    keep = set(keep)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name not in keep and (_OURS.fullmatch(name) or _TEMP.fullmatch(name)):
            with contextlib.suppress(OSError):  # what cannot be deleted now is deleted by the next writer
                os.unlink(os.path.join(folder, name))


def write_file(folder: str, name: str, write: Callable[[str], object]) -> dict[str, Any]:
    """Write ``folder/name`` atomically with ``write(tmp_path)``; returns its record (name, size, sha256)."""
    record: dict[str, Any] = {}

    def run(tmp: str) -> None:
        write(tmp)
        record.update(file_record(tmp))

    atomic_write(os.path.join(folder, name), run)
    return {"name": name, **record}


class _Hashing:
    """A write-only file that hashes what passes through it."""

    def __init__(self, f) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.size += view.nbytes
        return self.f.write(view)


def write_npy(folder: str, name: str, array: np.ndarray) -> dict[str, Any]:
    """Write an array as ``.npy`` atomically, hashing it while it is written; returns its record."""
    record: dict[str, Any] = {}

    def run(tmp: str) -> None:
        with open(tmp, "wb") as f:
            out = _Hashing(f)
            np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)
        record.update(size=out.size, sha256=out.sha.hexdigest())

    atomic_write(os.path.join(folder, name), run)
    return {"name": name, **record}


def write_manifest(folder: str, manifest: dict[str, Any]) -> None:
    """Replace ``index.json`` atomically: the commit of the version it names."""
    text = json.dumps(manifest, indent=1)

    def run(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(os.path.join(folder, INDEX_FILE), run)


def write_error(e: OSError, folder: str) -> OutputError:
    """An OSError met while saving an index, as one line with the fix."""
    where = e.filename if isinstance(e.filename, str) else folder
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "the disk is full (or over quota): free space or write the index elsewhere with -o"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "the folder is not writable: fix its permissions or choose another -o folder"
    else:
        fix = "check the folder, or choose another -o folder"
    return OutputError(f"{where}: cannot write the index ({e.strerror or e}); {fix}; the index that was there "
                       "before, if any, is unchanged")


def arrow_column(value: Any):
    """A column of the rows table: strings, numbers, or ``(N, W)`` float32 fixed-size lists."""
    import pyarrow as pa

    if isinstance(value, list):
        return pa.array(value, pa.string())
    value = np.asarray(value)
    if value.ndim == 2:
        flat = pa.array(np.ascontiguousarray(value, np.float32).reshape(-1), pa.float32())
        return pa.FixedSizeListArray.from_arrays(flat, value.shape[1])
    return pa.array(value)


__all__ = ["FORMAT_VERSION", "INDEX_FILE", "IndexFileError", "arrow_column", "check_sizes", "file_name", "named",
           "next_version", "read_manifest", "read_settings", "rebuild_fix", "sweep", "verify", "write_error",
           "write_file", "write_manifest", "write_npy"]
