"""Shard files of ``facepcl embed``: one row per face, in Parquet, NumPy ``.npz`` or safetensors.

Columns (every format, same names):

============ ====================== =====================================================
column       type                   meaning
============ ====================== =====================================================
item         int64                  position of the input in the stream of all inputs
path         string                 the input file, as given or joined from a folder/list
frame        int64                  video frame number (0-based); -1 for still images
timestamp    float64                video frame time in seconds; NaN for still images
face_index   int32                  face number within its image or frame (0-based)
width        int32                  width of the decoded (upright) image in pixels
height       int32                  height of the decoded (upright) image in pixels
bbox         float32[4]             x1, y1, x2, y2 in image pixels
kps          float32[10]            5 landmarks x1, y1, ..., x5, y5 (left eye, right eye,
                                    nose, left and right mouth corner); reshape to (5, 2)
det_score    float32                detector score; NaN when detection was off
yaw          float32                approximate head yaw in degrees from the landmarks (NaN without)
pitch        float32                approximate head pitch in degrees (NaN without landmarks)
roll         float32                head roll in degrees: the eye line's angle (NaN without landmarks)
sharpness    float32                variance of the Laplacian of the face's box region at 64 px
track_id     int64                  the face's track in its video, unique within the export;
                                    -1 for still images (and with --no-track)
face         float32[D]             F_f, the face (pose-unrelated) feature
pose         float32[D]             F_p, the pose feature
trunk        float32[D]             F, the trunk feature
============ ====================== =====================================================

``face``/``pose``/``trunk`` are present as chosen with ``--features``; D is
``feature_dim`` in the metadata (2048 for 64 px models). In Parquet the
vector columns are ``fixed_size_list<float32>``; in ``.npz`` and safetensors
they are 2-D float32 arrays. The run's metadata (model id, revision, config
hash, facepcl version, preprocessing, ...) is stored as JSON: Parquet schema
metadata key ``facepcl``, safetensors metadata key ``facepcl`` (with the
paths as a JSON list under ``path``), and the ``__metadata__`` entry of an
``.npz`` (whose ``path`` is a unicode array, so ``allow_pickle`` stays off).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._utils.constants import FEATURES

KPS_DIM = 10
SCALARS = {
    "item": np.int64, "frame": np.int64, "timestamp": np.float64, "face_index": np.int32,
    "width": np.int32, "height": np.int32, "det_score": np.float32, "yaw": np.float32, "pitch": np.float32,
    "roll": np.float32, "sharpness": np.float32, "track_id": np.int64,
}
ORDER = ("item", "path", "frame", "timestamp", "face_index", "width", "height", "bbox", "kps", "det_score", "yaw",
         "pitch", "roll", "sharpness", "track_id")
METADATA_KEY = "facepcl"
#: Columns a writer may be given without: their value when absent (rows of still images, or rows made by hand).
DEFAULTS = {"yaw": np.nan, "pitch": np.nan, "roll": np.nan, "sharpness": np.nan, "track_id": -1}


def with_defaults(cols: dict[str, Any]) -> dict[str, Any]:
    """``cols`` with every absent :data:`DEFAULTS` column filled for its rows."""
    n = len(cols["path"])
    missing = {k: np.full(n, v, SCALARS[k]) for k, v in DEFAULTS.items() if k not in cols}
    return {**cols, **missing} if missing else cols


def column_names(features: Sequence[str]) -> list[str]:
    """Column names in file order for the chosen features."""
    return [*ORDER, *[f for f in FEATURES if f in features]]


class RowBuffer:
    """Rows of the shard in flight, kept as lists of column blocks until the shard is written.

    Args:
        features: Which of "face", "pose", "trunk" are stored.
        dim: Feature length D.
    """

    def __init__(self, features: Sequence[str], dim: int) -> None:
        self.features = [f for f in FEATURES if f in features]
        self.dim = dim
        self._blocks: dict[str, list] = {c: [] for c in column_names(self.features)}
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def add(self, block: dict[str, Any]) -> None:
        """Append rows given as columns (arrays of equal length; ``path`` a list of str; :data:`DEFAULTS` optional)."""
        n = len(block["path"])
        if n == 0:
            return
        block = with_defaults(block)
        for name in self._blocks:
            value = block[name]
            if name != "path" and len(value) != n:
                raise ValueError(f"column {name!r} has {len(value)} rows, expected {n}")
            self._blocks[name].append(value)
        self._rows += n

    def columns(self) -> dict[str, Any]:
        """All buffered rows as columns (numpy arrays; ``path`` a list); the buffer keeps them.

        A shard whose write fails keeps its rows, so they are never lost or
        committed as an empty shard.
        """
        return concat(self._blocks, self.features, self.dim)

    def take(self) -> dict[str, Any]:
        """All buffered rows as columns (see :meth:`columns`), and an empty buffer."""
        cols = self.columns()
        self._blocks = {c: [] for c in self._blocks}
        self._rows = 0
        return cols


def concat(blocks: dict[str, list], features: Sequence[str], dim: int) -> dict[str, Any]:
    """Concatenate column blocks into typed columns (shapes ``(N,)``, ``(N, 4)``, ``(N, 10)``, ``(N, D)``)."""
    out: dict[str, Any] = {"path": [p for b in blocks["path"] for p in b]}
    for name, dtype in SCALARS.items():
        out[name] = np.concatenate(blocks[name]).astype(dtype) if blocks[name] else np.zeros(0, dtype)
    for name, width in (("bbox", 4), ("kps", KPS_DIM), *((f, dim) for f in features)):
        parts = [np.asarray(b, dtype=np.float32).reshape(-1, width) for b in blocks[name]]
        out[name] = np.concatenate(parts) if parts else np.zeros((0, width), np.float32)
    return out


def arrow_schema(features: Sequence[str], dim: int, metadata: dict | None = None):
    """The Parquet/Arrow schema of a shard."""
    import pyarrow as pa

    types = {"item": pa.int64(), "path": pa.string(), "frame": pa.int64(), "timestamp": pa.float64(),
             "face_index": pa.int32(), "width": pa.int32(), "height": pa.int32(),
             "bbox": pa.list_(pa.float32(), 4), "kps": pa.list_(pa.float32(), KPS_DIM),
             "det_score": pa.float32(), "yaw": pa.float32(), "pitch": pa.float32(), "roll": pa.float32(),
             "sharpness": pa.float32(), "track_id": pa.int64()}
    for f in features:
        types[f] = pa.list_(pa.float32(), dim)
    meta = {METADATA_KEY: json.dumps(metadata, sort_keys=True)} if metadata is not None else None
    return pa.schema([pa.field(c, types[c], nullable=False) for c in column_names(features)], metadata=meta)


def to_arrow(cols: dict[str, Any], features: Sequence[str], dim: int, metadata: dict | None = None):
    """Columns (as made by :class:`RowBuffer`) to a ``pyarrow.Table``."""
    import pyarrow as pa

    schema = arrow_schema(features, dim, metadata)
    cols = with_defaults(cols)
    arrays = []
    for field in schema:
        value = cols[field.name]
        if pa.types.is_fixed_size_list(field.type):
            flat = pa.array(np.ascontiguousarray(value, dtype=np.float32).reshape(-1), type=pa.float32())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, field.type.list_size))
        else:
            arrays.append(pa.array(value, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def from_arrow(table) -> dict[str, Any]:
    """A ``pyarrow.Table`` of shard rows back to numpy columns."""
    import pyarrow as pa

    cols: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
            cols[name] = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
        elif name == "path":
            cols[name] = col.to_pylist()
        else:
            cols[name] = col.to_numpy(zero_copy_only=False)
    return cols


class ParquetFormat:
    """Parquet shards (the default): one row group per shard, zstd-compressed."""

    name = "parquet"
    suffix = ".parquet"

    def write(self, cols: dict[str, Any], dest: str, features: Sequence[str], dim: int, metadata: dict) -> None:
        import pyarrow.parquet as pq

        table = to_arrow(cols, features, dim, metadata)
        # Dictionary-encode only the paths: embedding floats do not repeat, so a dictionary would only cost time.
        pq.write_table(table, dest, compression="zstd", use_dictionary=["path"], row_group_size=max(1, len(table)))

    def read(self, path: Any, columns: Sequence[str] | None = None) -> tuple[dict[str, Any], dict]:
        """Rows and provenance of a shard: a path, or a binary file object (read with seeks)."""
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=list(columns) if columns is not None else None)
        return from_arrow(table), json.loads((table.schema.metadata or {}).get(METADATA_KEY.encode(), b"{}"))

    def metadata(self, path: str) -> dict:
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta.get(METADATA_KEY.encode(), b"{}"))


class NpzFormat:
    """Uncompressed ``.npz`` shards: every column is an array; ``path`` is a unicode array."""

    name = "npz"
    suffix = ".npz"

    def write(self, cols: dict[str, Any], dest: str, features: Sequence[str], dim: int, metadata: dict) -> None:
        arrays = {k: (np.asarray(v, dtype=str) if k == "path" else v) for k, v in with_defaults(cols).items()}
        if not cols["path"]:
            arrays["path"] = np.zeros(0, dtype="<U1")
        arrays["__metadata__"] = np.asarray(json.dumps(metadata, sort_keys=True))
        with open(dest, "wb") as f:  # a file object, so numpy does not append ".npz" to the temporary name
            np.savez(f, **arrays)

    def read(self, path: Any, columns: Sequence[str] | None = None) -> tuple[dict[str, Any], dict]:
        """Rows and provenance of a shard: a path, or a binary file object (read with seeks)."""
        with np.load(path, allow_pickle=False) as z:  # members are read lazily: unread columns cost nothing
            cols = {k: z[k] for k in z.files if k != "__metadata__" and (columns is None or k in columns)}
            meta = json.loads(str(z["__metadata__"][()]))
        if "path" in cols:
            cols["path"] = [str(p) for p in cols["path"]]
        return cols, meta

    def metadata(self, path: str) -> dict:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["__metadata__"][()]))


class SafetensorsFormat:
    """safetensors shards: numeric columns as tensors; metadata and the paths as JSON strings."""

    name = "safetensors"
    suffix = ".safetensors"

    def write(self, cols: dict[str, Any], dest: str, features: Sequence[str], dim: int, metadata: dict) -> None:
        from safetensors.numpy import save_file

        tensors = {k: np.ascontiguousarray(v) for k, v in with_defaults(cols).items() if k != "path"}
        save_file(tensors, dest, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True),
                                           "path": json.dumps(list(cols["path"]))})

    def read(self, path: str, columns: Sequence[str] | None = None) -> tuple[dict[str, Any], dict]:
        from safetensors import safe_open

        with safe_open(path, framework="np") as f:
            meta = f.metadata() or {}
            cols: dict[str, Any] = {k: f.get_tensor(k) for k in f.keys()  # noqa: SIM118 (safe_open has no iter)
                                    if columns is None or k in columns}
        if columns is None or "path" in columns:
            cols["path"] = json.loads(meta.get("path", "[]"))
        return cols, json.loads(meta.get(METADATA_KEY, "{}"))

    def metadata(self, path: str) -> dict:
        from safetensors import safe_open

        with safe_open(path, framework="np") as f:
            return json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))


FORMATS = {f.name: f for f in (ParquetFormat(), NpzFormat(), SafetensorsFormat())}


def get_format(name: str):
    """The shard format called ``name`` ("parquet", "npz" or "safetensors")."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; choose from {sorted(FORMATS)}") from None


def read_shard(path: str, columns: Sequence[str] | None = None) -> tuple[dict[str, Any], dict]:
    """One shard file of any format as numpy columns (``path`` a list of str) and its provenance.

    It is not checked against its manifest: list shards with
    :func:`facepcl.export.committed_shards` (which does) first.
    """
    suffix = os.path.splitext(path)[1].lstrip(".")
    return get_format(suffix).read(path, columns)
