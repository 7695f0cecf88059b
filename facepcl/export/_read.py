"""Read a ``facepcl embed`` output folder back: all shards of all ranks as one table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .._utils.folders import check_file
from ..io.storage import Store, open_store
from ._dataset import Shard, committed_shards, damaged_shard, iter_errors
from ._formats import FEATURES, RowBuffer, from_arrow, get_format, to_arrow
from ._layout import MANIFESTS, RUN_FILE, read_json


def _shard_files(store: Store, verify: bool = True) -> tuple[list[Shard], str]:
    """The committed shards (verified against their manifests) and their format.

    Raises:
        FileNotFoundError: ``store`` is not an export folder.
        ExportStateError: A shard is damaged (the message names it and says to ``--resume``).
    """
    if not store.object_store and not os.path.isdir(store.location):
        raise FileNotFoundError(f"{store.location}: no such folder; pass the OUT folder of `facepcl embed`")
    shards = committed_shards(store, verify=verify)
    if not shards and not _has_bookkeeping(store):
        # shards copied somewhere without their bookkeeping: every shard file is a finished one
        shards = [Shard(-1, -1, store.url(n), {"file": n}, store) for n in store.names()
                  if n.startswith("part-r") and os.path.splitext(n)[1] in (".parquet", ".npz", ".safetensors")]
    if not shards:
        if not store.exists(RUN_FILE):
            raise FileNotFoundError(f"{store.location} is not a facepcl embed output folder (it has no {RUN_FILE})")
        return [], _run_format(store)
    return shards, os.path.splitext(shards[0].path)[1].lstrip(".")


def _has_bookkeeping(store: Store) -> bool:
    """Whether ``store`` holds an export's own files, not only copied shards.

    An object-store export has ``_run.json`` before its first data object, whose manifest may never have come
    (the upload died): those objects are not rows.
    """
    if store.object_store:
        return store.exists(RUN_FILE) or bool(store.names(MANIFESTS))
    return os.path.isdir(store.url(MANIFESTS))


def _run_format(store: Store) -> str:
    return read_json(RUN_FILE, store).get("format", "parquet")


def read_metadata(out: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance stored with the shards (model id, revision, config hash, preprocessing, ...).

    Args:
        out: The export: a local folder or an object-store URL.
        storage_options: fsspec filesystem arguments for a URL (default: the filesystem's own configuration).
    """
    store = open_store(os.fspath(out), storage_options)
    shards, fmt = _shard_files(store, verify=False)  # the provenance only: read_embeddings verifies the rows
    if not shards:
        return read_json(RUN_FILE, store)
    with store.local(shards[0].manifest["file"]) as path:
        return get_format(fmt).metadata(path)


def read_embeddings(out: str | os.PathLike, columns: Sequence[str] | None = None, *, sort: bool = True,
                    verify: bool = True, storage_options: dict[str, Any] | None = None):
    """All rows of an export, from every shard of every rank, as one ``pyarrow.Table``.

    Works for every ``--format``. Vector columns (bbox, kps, face, pose,
    trunk) are ``fixed_size_list<float32>``; turn one into a numpy matrix with
    :func:`column_to_numpy`, or call ``.to_pandas()`` on the table.

    Args:
        out: The output folder of ``facepcl embed``: a local folder or an
            object-store URL (``s3://bucket/faces``; docs/object-stores.md).
        columns: Columns to read (default: all).
        sort: Order rows by (item, frame, face_index), i.e. input order, so a
            torchrun export reads exactly like a single-process one.
        verify: Check every shard against the size and SHA-256 its manifest
            recorded before reading it (False skips the hashing).
        storage_options: fsspec filesystem arguments for a URL (default: the filesystem's own configuration).

    Returns:
        A ``pyarrow.Table`` whose schema metadata holds the provenance JSON under ``b"facepcl"``.

    Raises:
        FileNotFoundError: ``out`` is not an export folder.
        ExportStateError: A shard's data file does not match its manifest
            (truncated, partially copied, changed); the message names it and
            says to run the export again with ``--resume``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = open_store(os.fspath(out), storage_options)
    shards, fmt = _shard_files(store, verify=verify and not store.object_store)
    f_obj = get_format(fmt)
    wanted = list(columns) if columns is not None else None
    read_cols = None if wanted is None else sorted(set(wanted) | ({"item", "frame", "face_index"} if sort else set()))
    tables = []
    for shard in shards:
        with store.local(shard.manifest["file"]) as path:
            if verify and store.object_store and "sha256" in shard.manifest:
                # the downloaded copy is the one checked and read
                problem = check_file(path, shard.manifest)
                if problem is not None:
                    raise damaged_shard(shard.path, problem)
            if fmt == "parquet":
                tables.append(pq.read_table(path, columns=read_cols))
            else:
                cols, meta = f_obj.read(path)
                table = to_arrow(cols, meta["features"], meta["feature_dim"], meta)
                tables.append(table if read_cols is None else table.select(read_cols))
    if not tables:
        meta = read_metadata(out, storage_options)
        features, dim = meta.get("features", list(FEATURES)), meta.get("feature_dim", 0)
        empty = to_arrow(RowBuffer(features, dim).take(), features, dim, meta)
        return empty if wanted is None else empty.select(wanted)
    table = pa.concat_tables(tables)
    if sort:
        table = table.sort_by([("item", "ascending"), ("frame", "ascending"), ("face_index", "ascending")])
    return table if wanted is None else table.select(wanted)


def column_to_numpy(table, name: str):
    """A ``fixed_size_list`` column as an ``(N, width)`` numpy array (``kps``: reshape to ``(N, 5, 2)``)."""
    return from_arrow(table.select([name]))[name]


def read_errors(out: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> list[dict]:
    """Every skipped input or frame of an export with its reason, in input order (what ``_errors.jsonl`` holds)."""
    return list(iter_errors(open_store(os.fspath(out), storage_options)))
