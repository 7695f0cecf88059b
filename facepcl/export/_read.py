"""Read a ``facepcl embed`` output folder back: all shards of all ranks as one table."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

from ._dataset import committed_shards, iter_errors
from ._formats import FEATURES, RowBuffer, from_arrow, get_format, to_arrow
from ._layout import MANIFESTS, RUN_FILE, read_json


def _shard_files(out: str, verify: bool = True) -> tuple[list[str], str]:
    """Data files of the committed shards (verified against their manifests) and their format.

    Raises:
        FileNotFoundError: ``out`` is not an export folder.
        ExportStateError: A shard is damaged (the message names it and says to ``--resume``).
    """
    if not os.path.isdir(out):
        raise FileNotFoundError(f"{out}: no such folder; pass the OUT folder of `facepcl embed`")
    files = [s.path for s in committed_shards(out, verify=verify)]
    if not files and not os.path.isdir(os.path.join(out, MANIFESTS)):
        # shards copied somewhere without their bookkeeping: every shard file is a finished one
        files = sorted(f for ext in ("parquet", "npz", "safetensors")
                       for f in glob.glob(os.path.join(glob.escape(out), f"part-r*-*.{ext}")))
    if not files:
        if not os.path.exists(os.path.join(out, RUN_FILE)):
            raise FileNotFoundError(f"{out} is not a facepcl embed output folder (it has no {RUN_FILE})")
        return [], _run_format(out)
    return files, os.path.splitext(files[0])[1].lstrip(".")


def _run_format(out: str) -> str:
    return read_json(os.path.join(out, RUN_FILE)).get("format", "parquet")


def read_metadata(out: str | os.PathLike) -> dict[str, Any]:
    """The provenance stored with the shards (model id, revision, config hash, preprocessing, ...)."""
    out = os.fspath(out)
    files, fmt = _shard_files(out, verify=False)  # the provenance only: read_embeddings verifies the rows
    if not files:
        return read_json(os.path.join(out, RUN_FILE))
    return get_format(fmt).metadata(files[0])


def read_embeddings(out: str | os.PathLike, columns: Sequence[str] | None = None, *, sort: bool = True,
                    verify: bool = True):
    """All rows of an export, from every shard of every rank, as one ``pyarrow.Table``.

    Works for every ``--format``. Vector columns (bbox, kps, face, pose,
    trunk) are ``fixed_size_list<float32>``; turn one into a numpy matrix with
    :func:`column_to_numpy`, or call ``.to_pandas()`` on the table.

    Args:
        out: The output folder of ``facepcl embed``.
        columns: Columns to read (default: all).
        sort: Order rows by (item, frame, face_index), i.e. input order, so a
            torchrun export reads exactly like a single-process one.
        verify: Check every shard against the size and SHA-256 its manifest
            recorded before reading it (False skips the hashing).

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

    out = os.fspath(out)
    files, fmt = _shard_files(out, verify=verify)
    f_obj = get_format(fmt)
    wanted = list(columns) if columns is not None else None
    read_cols = None if wanted is None else sorted(set(wanted) | ({"item", "frame", "face_index"} if sort else set()))
    tables = []
    for path in files:
        if fmt == "parquet":
            tables.append(pq.read_table(path, columns=read_cols))
        else:
            cols, meta = f_obj.read(path)
            table = to_arrow(cols, meta["features"], meta["feature_dim"], meta)
            tables.append(table if read_cols is None else table.select(read_cols))
    if not tables:
        meta = read_metadata(out)
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


def read_errors(out: str | os.PathLike) -> list[dict]:
    """Every skipped input or frame of an export with its reason, in input order (what ``_errors.jsonl`` holds)."""
    return list(iter_errors(os.fspath(out)))
