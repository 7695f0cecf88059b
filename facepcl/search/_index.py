"""``FaceIndex``: face, pose and trunk vectors of ``facepcl embed`` exports, searchable, with their provenance.

An index is a folder::

    index.json        what is inside: features, model identity, exports and their row counts, settings
    rows.parquet      one row per face: export number, item, path, frame, timestamp, face_index, width,
                      height, bbox, kps, det_score (the export's own provenance columns, same names)
    face.npy ...      (N, D) float16 unit vectors, one file per feature (memory-mapped when loaded)
    face.ivf.faiss    the approximate (IVF) index of a feature, once it has ``exact_below`` rows or more

Every file is written atomically; ``index.json`` is written last, so an
interrupted save leaves the previous index readable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._utils.atomic import atomic_write
from .._utils.constants import FEATURES
from ._backend import EXACT_BELOW, Backend, normalize

INDEX_FILE = "index.json"
ROWS_FILE = "rows.parquet"
FORMAT_VERSION = 1
#: Provenance columns kept for every row (the export's names).
ROW_COLUMNS = ("item", "path", "frame", "timestamp", "face_index", "width", "height", "bbox", "kps", "det_score")
#: Export metadata that must agree between exports of one index (same model, same crops -> comparable vectors).
IDENTITY = ("weights_sha256", "config_hash", "feature_dim", "preprocess")
#: Columns a search result reports for each neighbour.
RESULT_COLUMNS = ("path", "frame", "timestamp", "face_index", "bbox")


@dataclass
class SearchResult:
    """Neighbours of Q queries.

    Attributes:
        scores: ``(Q, k)`` cosine similarities, best first (-inf where the index has fewer than k rows).
        rows: ``(Q, k)`` row numbers in the index (-1: none).
        by: The feature searched ("face", "pose" or "trunk").
        records: Per query, per neighbour: ``{"rank", "score", "row", "export", "path", "frame",
            "timestamp", "face_index", "bbox"}`` (timestamp None for still images).
    """

    scores: np.ndarray
    rows: np.ndarray
    by: str
    records: list[list[dict[str, Any]]]


class FaceIndex:
    """A vector index over the face, pose and trunk features of one or more exports.

    Args:
        features: Which features to index (default: all three that the first export holds).
        exact_below: Exact search below this many rows, approximate (IVF, float16) from it on.
        nprobe: Inverted lists scanned per approximate query (None: 1/8 of them, at least 16).

    Example:
        >>> index = FaceIndex()
        >>> index.add("faces/")  # a `facepcl embed` output folder  # doctest: +SKIP
        >>> res = index.search(query_vectors, by="face", k=10)  # doctest: +SKIP
        >>> index.save("faces.index")  # doctest: +SKIP
    """

    def __init__(self, features: Sequence[str] | None = None, *, exact_below: int = EXACT_BELOW,
                 nprobe: int | None = None) -> None:
        if features is not None:
            bad = [f for f in features if f not in FEATURES]
            if bad or not features:
                raise ValueError(f"features must be a non-empty subset of {FEATURES}, got {list(features)}")
        self.features: list[str] | None = None if features is None else [f for f in FEATURES if f in features]
        self.exact_below = int(exact_below)
        self.nprobe = nprobe
        self.identity: dict[str, Any] | None = None
        self.exports: list[dict[str, Any]] = []
        self.rows: dict[str, Any] = {c: [] if c == "path" else np.zeros(0) for c in ("export", *ROW_COLUMNS)}
        self.vectors: dict[str, np.ndarray] = {}
        self._backends: dict[str, Backend] = {}

    def __len__(self) -> int:
        return len(self.rows["path"])

    def __repr__(self) -> str:
        return (f"FaceIndex({len(self)} faces from {len(self.exports)} export(s), features={self.features}, "
                f"search={self.kinds()})")

    @property
    def dim(self) -> int:
        """Vector length D (0 while empty)."""
        return int(self.identity["feature_dim"]) if self.identity else 0

    @property
    def model_id(self) -> str | None:
        """The model the exports were made with (what image queries must be embedded with)."""
        return self.identity.get("model_id") if self.identity else None

    def kinds(self) -> dict[str, str]:
        """Per feature, "exact" or "ivf" (approximate)."""
        planned = "ivf" if len(self) >= self.exact_below else "exact"
        return {f: self._backends[f].kind if f in self._backends else planned for f in self.features or []}

    # -- building ------------------------------------------------------------------------------------------

    def add(self, export: str | os.PathLike) -> int:
        """Add the rows of a ``facepcl embed`` output folder that the index does not hold yet.

        An export added before contributes only its new rows (a resumed or
        extended export); a new one all its rows.

        Args:
            export: The output folder of ``facepcl embed`` (Parquet, npz or safetensors shards).

        Returns:
            The number of rows added.

        Raises:
            ValueError: The export lacks an indexed feature, or was made with
                another model or preprocessing than the exports already indexed.
        """
        from ..export import read_embeddings, read_metadata
        from ..export._writers import from_arrow

        folder = os.path.abspath(os.fspath(export))
        meta = read_metadata(folder)
        have = [f for f in meta.get("features", FEATURES) if f in FEATURES]
        features = self.features or have
        missing = [f for f in features if f not in have]
        if missing:
            raise ValueError(f"{export}: the export has no {missing} features (it holds {have}); re-export with "
                             f"--features {','.join(features)} or build the index with fewer features")
        self._check_identity(folder, meta)
        table = read_embeddings(folder, columns=[*ROW_COLUMNS, *features])
        cols = from_arrow(table)
        number = self._export_number(folder, meta)
        new = self._new_rows(number, cols)
        self.features = features
        if not new.any():
            return 0
        added = int(new.sum())
        for name in ROW_COLUMNS:
            value = cols[name]
            part = [p for p, keep in zip(value, new, strict=True) if keep] if name == "path" else np.asarray(value)[new]
            self.rows[name] = self.rows[name] + part if name == "path" else _cat(self.rows[name], part)
        self.rows["export"] = _cat(self.rows["export"], np.full(added, number, np.int32))
        self.exports[number]["rows"] += added
        for f in features:
            fresh = normalize(cols[f][new]).astype(np.float16)
            old = self.vectors.get(f)
            self.vectors[f] = fresh if old is None else np.concatenate([np.asarray(old), fresh])
            if f in self._backends:
                self._backends[f].extend(self.vectors[f], fresh)
        return added

    def _check_identity(self, folder: str, meta: dict[str, Any]) -> None:
        ident = {k: meta.get(k) for k in (*IDENTITY, "model_id", "revision")}
        if self.identity is None:
            self.identity = ident
            return
        differ = [k for k in IDENTITY if self.identity.get(k) != ident.get(k)]
        if differ:
            first = self.exports[0]["export"] if self.exports else "the index"
            raise ValueError(f"{folder}: made with another model or preprocessing than {first} (differs in "
                             f"{differ}: {[ident.get(k) for k in differ]} vs {[self.identity.get(k) for k in differ]})"
                             "; vectors of different models are not comparable: build one index per model")

    def _export_number(self, folder: str, meta: dict[str, Any]) -> int:
        for i, e in enumerate(self.exports):
            if e["export"] == folder:
                return i
        self.exports.append({"export": folder, "rows": 0, "cwd": meta.get("cwd"),
                             "preprocess": meta.get("preprocess"), "format": meta.get("format")})
        return len(self.exports) - 1

    def _new_rows(self, number: int, cols: dict[str, Any]) -> np.ndarray:
        """Which rows of an export the index lacks, by (item, frame, face_index)."""
        n = len(cols["path"])
        mine = self.rows["export"] == number
        if not mine.any():
            return np.ones(n, bool)
        held = set(zip(self.rows["item"][mine].tolist(), self.rows["frame"][mine].tolist(),
                       self.rows["face_index"][mine].tolist(), strict=True))
        keys = zip(cols["item"].tolist(), cols["frame"].tolist(), cols["face_index"].tolist(), strict=True)
        return np.fromiter((k not in held for k in keys), bool, count=n)

    # -- searching -----------------------------------------------------------------------------------------

    def _backend(self, feature: str) -> Backend:
        if feature not in self._backends:
            b = Backend(self.dim, exact_below=self.exact_below, nprobe=self.nprobe)
            b.build(self._vectors(feature))
            self._backends[feature] = b
        return self._backends[feature]

    def _vectors(self, feature: str) -> np.ndarray:
        """``(N, D)`` float16 unit vectors of a feature (empty before any row was added)."""
        return self.vectors.get(feature, np.zeros((0, self.dim), np.float16))

    def search(self, queries: np.ndarray, *, by: str = "face", k: int = 10) -> SearchResult:
        """The ``k`` nearest faces of each query vector by cosine similarity.

        Args:
            queries: ``(Q, D)`` or ``(D,)`` vectors of the same kind as ``by``
                (e.g. the ``face`` output of :func:`facepcl.embed` with the index's model).
            by: "face" (F_f: who, whatever the pose), "pose" (F_p: head pose, whoever) or "trunk" (F).
            k: Neighbours per query.

        Returns:
            A :class:`SearchResult`.
        """
        if by not in (self.features or []):
            raise ValueError(f"this index holds {self.features or 'no'} features, not {by!r}; choose one of those")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        q = np.asarray(queries, dtype=np.float32)
        q = q[None] if q.ndim == 1 else q
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries have shape {q.shape}; this index needs (Q, {self.dim}) vectors")
        scores, rows = self._backend(by).search(q, k)
        return SearchResult(scores, rows, by, [[self.record(int(r), float(s), j + 1)
                                                for j, (r, s) in enumerate(zip(rr, ss, strict=True)) if r >= 0]
                                               for rr, ss in zip(rows, scores, strict=True)])

    def record(self, row: int, score: float | None = None, rank: int | None = None) -> dict[str, Any]:
        """One row's provenance under the export's column names (plus rank, score, row and export)."""
        ts = float(self.rows["timestamp"][row])
        out: dict[str, Any] = {} if rank is None else {"rank": rank}
        if score is not None:
            out["score"] = round(score, 6)
        out.update({"row": row, "export": self.exports[int(self.rows["export"][row])]["export"],
                    "path": self.rows["path"][row], "frame": int(self.rows["frame"][row]),
                    "timestamp": ts if np.isfinite(ts) else None,
                    "face_index": int(self.rows["face_index"][row]),
                    "bbox": [round(float(v), 2) for v in self.rows["bbox"][row]]})
        return out

    # -- files ---------------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> None:
        """Write the index to ``folder`` (created); ``index.json`` last, so a crash keeps the old index."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        table = pa.table({"export": pa.array(self.rows["export"], pa.int32()),
                          **{c: _arrow_column(self.rows[c]) for c in ROW_COLUMNS}})
        atomic_write(os.path.join(folder, ROWS_FILE), lambda p: pq.write_table(table, p, compression="zstd"))
        kinds = {}
        for f in self.features or []:
            vec = np.asarray(self._vectors(f), dtype=np.float16)
            atomic_write(os.path.join(folder, f"{f}.npy"), lambda p, v=vec: _save_npy(p, v))
            ivf = os.path.join(folder, f"{f}.ivf.faiss")
            b = self._backend(f)
            kinds[f] = b.kind
            if b.kind == "ivf":
                atomic_write(ivf, b.write)
            elif os.path.exists(ivf):
                os.unlink(ivf)
        manifest = {"format_version": FORMAT_VERSION, "features": self.features, "rows": len(self),
                    "exact_below": self.exact_below, "nprobe": self.nprobe, "search": kinds,
                    "identity": self.identity, "exports": self.exports}
        atomic_write(os.path.join(folder, INDEX_FILE), lambda p: _write_text(p, json.dumps(manifest, indent=1)))

    @classmethod
    def load(cls, folder: str | os.PathLike, *, nprobe: int | None = None) -> FaceIndex:
        """Read an index written by :meth:`save` (vectors are memory-mapped, not read into memory)."""
        import pyarrow.parquet as pq

        from ..export._writers import from_arrow

        folder = os.fspath(folder)
        path = os.path.join(folder, INDEX_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder}: not a facepcl index (no {INDEX_FILE}); build one with "
                                    "`facepcl index EXPORT -o INDEX`")
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{folder}: index format {manifest.get('format_version')}, this facepcl reads "
                             f"{FORMAT_VERSION}; rebuild it with `facepcl index`")
        index = cls(manifest["features"], exact_below=manifest["exact_below"],
                    nprobe=nprobe if nprobe is not None else manifest.get("nprobe"))
        index.identity = manifest["identity"]
        index.exports = manifest["exports"]
        cols = from_arrow(pq.read_table(os.path.join(folder, ROWS_FILE)))
        index.rows = {c: cols[c] for c in ("export", *ROW_COLUMNS)}
        for f in index.features:
            index.vectors[f] = np.load(os.path.join(folder, f"{f}.npy"), mmap_mode="r")
            if len(index.vectors[f]) != manifest["rows"]:
                raise ValueError(f"{folder}: {f}.npy has {len(index.vectors[f])} rows, index.json says "
                                 f"{manifest['rows']}; rebuild the index with `facepcl index`")
            ivf = os.path.join(folder, f"{f}.ivf.faiss")
            if manifest["search"].get(f) == "ivf":
                b = Backend(index.dim, exact_below=index.exact_below, nprobe=index.nprobe)
                b.read(ivf)
                index._backends[f] = b
        return index


def _cat(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    return np.asarray(new) if len(old) == 0 else np.concatenate([old, new])


def _arrow_column(value: Any):
    import pyarrow as pa

    if isinstance(value, list):
        return pa.array(value, pa.string())
    value = np.asarray(value)
    if value.ndim == 2:
        flat = pa.array(np.ascontiguousarray(value, np.float32).reshape(-1), pa.float32())
        return pa.FixedSizeListArray.from_arrays(flat, value.shape[1])
    return pa.array(value)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _save_npy(path: str, value: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object, so numpy keeps the temporary name as it is
        np.save(f, value)
