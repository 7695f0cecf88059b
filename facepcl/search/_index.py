"""``FaceIndex``: face, pose and trunk vectors of ``facepcl embed`` exports, searchable, with their provenance.

An index is a folder (``v`` is the version, one more at every save; see :mod:`._files`)::

    index.json          what is inside: features, model identity, exports with their shards and row counts,
                        settings, and the current version's files with their size and SHA-256
    rows.v{v}.parquet   one row per face: export number, item, path, frame, timestamp, face_index, width,
                        height, bbox, kps, det_score (the export's own provenance columns, same names)
    face.v{v}.npy ...   (N, D) float16 unit vectors, one file per feature (memory-mapped when loaded)
    face.v{v}.ivf.faiss the approximate (IVF) index of a feature, once it has ``exact_below`` rows or more
    .facepcl.lock       held by the one process writing the index

A save writes the new version's files, then replaces ``index.json`` (the
commit), then deletes the previous version's files: a writer killed at any
point leaves the previous index readable. Readers check each file against
its record before using it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._utils.constants import FEATURES
from .._utils.folders import FolderLock
from . import _files as files
from ._backend import EXACT_BELOW, Backend, normalize
from ._exports import check_codes, export_api, list_shards, merge_shards, read_shard

INDEX_FILE = files.INDEX_FILE
FORMAT_VERSION = files.FORMAT_VERSION
#: Provenance columns kept for every row (the export's names).
ROW_COLUMNS = ("item", "path", "frame", "timestamp", "face_index", "width", "height", "bbox", "kps", "det_score",
               "track_id")
#: What :meth:`FaceIndex.search` can group neighbours by: one result per face track of a video.
GROUPS = ("track",)
#: Export metadata that must agree between exports of one index (same encoder, same crops -> comparable vectors).
IDENTITY = ("encoder_sha256", "config_hash", "feature_dim", "preprocess")
#: Columns a search result reports for each neighbour.
RESULT_COLUMNS = ("path", "frame", "timestamp", "face_index", "bbox")
_KEYS = ("item", "frame", "face_index")


@dataclass
class SearchResult:
    """Neighbours of Q queries.

    Attributes:
        scores: ``(Q, k)`` cosine similarities, best first (-inf where the index has fewer than k rows).
        rows: ``(Q, k)`` row numbers in the index (-1: none).
        by: The feature searched ("face", "pose" or "trunk").
        records: Per query, per neighbour: ``{"rank", "score", "row", "export", "path", "frame",
            "timestamp", "face_index", "bbox", "track_id"}`` (timestamp None for still images, track_id
            None for faces not in a track); grouped by track, each record is the track's best row,
            with ``"matches"``: how many of the track's rows were among the neighbours looked at.
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
        self._folder: str | None = None  # where a loaded index's files are (opened and checked on first use)
        self._stored: dict[str, dict[str, Any]] = {}  # file records of that folder not opened yet
        self._version: int | None = None  # the version of that folder's index.json they belong to

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

    @property
    def encoder_sha256(self) -> str | None:
        """The encoder digest of the exports (:func:`facepcl._utils.digest.encoder_digest`)."""
        return self.identity.get("encoder_sha256") if self.identity else None

    def kinds(self) -> dict[str, str]:
        """Per feature, "exact" or "ivf" (approximate)."""
        planned = "ivf" if len(self) >= self.exact_below else "exact"
        out = {}
        for f in self.features or []:
            out[f] = (self._backends[f].kind if f in self._backends
                      else "ivf" if f"{f}.ivf" in self._stored else planned)
        return out

    # -- building ------------------------------------------------------------------------------------------

    def add(self, export: str | os.PathLike) -> int:
        """Add the rows of a ``facepcl embed`` output folder that the index does not hold yet.

        An export added before contributes the rows of its new shards (a
        resumed or extended export). An export whose indexed shards changed or
        vanished was written again (``facepcl embed --overwrite``): its rows in
        the index are replaced by its current rows.

        Args:
            export: The output folder of ``facepcl embed`` (Parquet, npz or safetensors shards).

        Returns:
            The number of rows added (``len(index)`` tells how many were replaced).

        Raises:
            ValueError: The export lacks an indexed feature, was made with another
                encoder or preprocessing than the exports already indexed, holds
                NaN, infinite or all-zero codes, or a shard differs from its manifest.
        """
        from ..export import read_metadata

        folder = os.path.abspath(os.fspath(export))
        meta = read_metadata(folder)
        have = [f for f in meta.get("features", FEATURES) if f in FEATURES]
        features = self.features or have
        missing = [f for f in features if f not in have]
        if missing:
            raise ValueError(f"{export}: the export has no {missing} features (it holds {have}); re-export with "
                             f"--features {','.join(features)} or build the index with fewer features")
        ident = self._check_identity(folder, meta)
        shards = list_shards(folder)
        current = {s.file: s.identity() for s in shards}
        known = next((e.get("shards", {}) for e in self.exports if e["export"] == folder), {})
        rewritten = any(current.get(name) != rec for name, rec in known.items())
        parts = []
        for s in shards:
            if rewritten or s.file not in known:
                s.check(folder)
                cols = read_shard(folder, s, [*ROW_COLUMNS, *features])
                check_codes(folder, s, cols, features)
                parts.append(cols)
        # everything read and checked: only now does the index change
        self.identity = self.identity or ident
        number = self._export_number(folder, meta)
        if rewritten:
            self._drop_export(number)
        self.features = features
        self.exports[number]["shards"] = current
        if not parts:
            return 0
        cols = merge_shards(parts, _KEYS)
        new = self._new_rows(number, cols)
        if not new.any():
            return 0
        return self._append(number, cols, new)

    def _append(self, number: int, cols: dict[str, Any], new: np.ndarray) -> int:
        self._open_all()
        added = int(new.sum())
        for name in ROW_COLUMNS:
            value = cols[name]
            part = [p for p, keep in zip(value, new, strict=True) if keep] if name == "path" else np.asarray(value)[new]
            self.rows[name] = self.rows[name] + part if name == "path" else _cat(self.rows[name], part)
        self.rows["export"] = _cat(self.rows["export"], np.full(added, number, np.int32))
        self.exports[number]["rows"] += added
        for f in self.features or []:
            fresh = normalize(cols[f][new]).astype(np.float16)
            old = self.vectors.get(f)
            self.vectors[f] = fresh if old is None else np.concatenate([np.asarray(old), fresh])
            if f in self._backends:
                self._backends[f].extend(self.vectors[f], fresh)
        return added

    def _drop_export(self, number: int) -> None:
        """Remove every row of one export (its number stays; searches are rebuilt on next use)."""
        for f in self.features or []:
            self._vectors(f)
            self._stored.pop(f"{f}.ivf", None)
        keep = self.rows["export"] != number
        for name in ("export", *ROW_COLUMNS):
            value = self.rows[name]
            self.rows[name] = [p for p, k in zip(value, keep, strict=True) if k] if name == "path" else value[keep]
        for f in list(self.vectors):
            self.vectors[f] = np.asarray(self.vectors[f])[keep]
        self.exports[number]["rows"] = 0
        self._backends.clear()

    def _check_identity(self, folder: str, meta: dict[str, Any]) -> dict[str, Any]:
        """The export's identity, if it may join the index."""
        ident = {k: meta.get(k) for k in (*IDENTITY, "model_id", "revision")}
        if not ident["encoder_sha256"]:
            raise ValueError(f"{folder}: its metadata has no encoder_sha256 (it was written by an older facepcl), so "
                             "the model its vectors come from cannot be checked: re-export it with "
                             "`facepcl embed ... --overwrite`")
        if self.identity is None:
            return ident
        differ = [k for k in IDENTITY if self.identity.get(k) != ident.get(k)]
        if differ:
            first = self.exports[0]["export"] if self.exports else "the index"
            what = "; ".join(f"{k} {ident.get(k)} vs {self.identity.get(k)}" for k in differ)
            raise ValueError(f"{folder}: made with another encoder or preprocessing than {first}, already in the "
                             f"index ({what}); vectors of different models are not comparable: build one index per "
                             "model")
        return ident

    def _export_number(self, folder: str, meta: dict[str, Any]) -> int:
        for i, e in enumerate(self.exports):
            if e["export"] == folder:
                return i
        self.exports.append({"export": folder, "rows": 0, "cwd": meta.get("cwd"),
                             "preprocess": meta.get("preprocess"), "format": meta.get("format"), "shards": {}})
        return len(self.exports) - 1

    def _new_rows(self, number: int, cols: dict[str, Any]) -> np.ndarray:
        """Which rows of an export the index lacks, by (item, frame, face_index)."""
        n = len(cols["path"])
        mine = self.rows["export"] == number
        if not mine.any():
            return np.ones(n, bool)
        held = set(zip(*(self.rows[k][mine].tolist() for k in _KEYS), strict=True))
        keys = zip(*(cols[k].tolist() for k in _KEYS), strict=True)
        return np.fromiter((k not in held for k in keys), bool, count=n)

    # -- searching -----------------------------------------------------------------------------------------

    def _backend(self, feature: str) -> Backend:
        if feature not in self._backends:
            b = Backend(self.dim, exact_below=self.exact_below, nprobe=self.nprobe)
            rec = self._stored.pop(f"{feature}.ivf", None)
            if rec is not None:
                path = files.verify(self._folder, rec, self._version)
                try:
                    b.read(path)
                except RuntimeError as e:
                    raise files.IndexFileError(f"{path}: FAISS cannot read it ({str(e).strip()[:200]}); "
                                               f"{files.rebuild_fix(self._folder)}") from None
            else:
                b.build(self._vectors(feature))
            self._backends[feature] = b
        return self._backends[feature]

    def _vectors(self, feature: str) -> np.ndarray:
        """``(N, D)`` float16 unit vectors of a feature (empty before any row was added)."""
        rec = self._stored.pop(feature, None)
        if rec is not None:
            path = files.verify(self._folder, rec, self._version)
            try:
                vec = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise files.IndexFileError(f"{path}: cannot read it ({e}); {files.rebuild_fix(self._folder)}") from None
            if vec.shape != (len(self), self.dim):
                raise files.IndexFileError(f"{path}: holds {vec.shape} vectors, index.json says ({len(self)}, "
                                           f"{self.dim}); {files.rebuild_fix(self._folder)}")
            self.vectors[feature] = vec
        return self.vectors.get(feature, np.zeros((0, self.dim), np.float16))

    def _open_all(self) -> None:
        """Open (and check) every stored file before the rows change: IVF indexes are extended, not rebuilt."""
        for f in self.features or []:
            self._vectors(f)
            if f"{f}.ivf" in self._stored:
                self._backend(f)

    def search(self, queries: np.ndarray, *, by: str = "face", k: int = 10, group: str | None = None
               ) -> SearchResult:
        """The ``k`` nearest faces of each query vector by cosine similarity.

        Args:
            queries: ``(Q, D)`` or ``(D,)`` vectors of the same kind as ``by``
                (e.g. the ``face`` output of :func:`facepcl.embed` with the index's model).
            by: "face" (F_f: who, whatever the pose), "pose" (F_p: head pose, whoever) or "trunk" (F).
            k: Neighbours per query.
            group: "track": the ``k`` nearest *tracks* instead (each video face track once, by its
                best-scoring row; faces that are in no track count as their own). The search looks at
                more rows until it has ``k`` groups or has seen every row.

        Returns:
            A :class:`SearchResult`.

        Raises:
            ValueError: Unknown feature, k < 1, queries of another length or with NaN/infinite values.
            IndexFileError: A file of a loaded index is missing or differs from its record.
        """
        if by not in (self.features or []):
            raise ValueError(f"this index holds {self.features or 'no'} features, not {by!r}; choose one of those")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        q = np.asarray(queries, dtype=np.float32)
        q = q[None] if q.ndim == 1 else q
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries have shape {q.shape}; this index needs (Q, {self.dim}) vectors")
        bad = np.flatnonzero(~np.isfinite(q).all(axis=1))
        if len(bad):
            raise ValueError(f"queries {bad[:10].tolist()} hold NaN or infinite values; no search can rank them")
        if group is not None:
            if group not in GROUPS:
                raise ValueError(f"group must be one of {GROUPS} (or None), got {group!r}")
            return self._by_track(q, by, k)
        scores, rows = self._backend(by).search(q, k)
        return SearchResult(scores, rows, by, [[self.record(int(r), float(s), j + 1)
                                                for j, (r, s) in enumerate(zip(rr, ss, strict=True)) if r >= 0]
                                               for rr, ss in zip(rows, scores, strict=True)])

    def _by_track(self, q: np.ndarray, by: str, k: int) -> SearchResult:
        """The ``k`` best tracks per query (see :meth:`search`)."""
        backend, total = self._backend(by), len(self)
        out_scores = np.full((len(q), k), -np.inf, np.float32)
        out_rows = np.full((len(q), k), -1, np.int64)
        records: list[list[dict[str, Any]]] = []
        exports, tracks = self.rows["export"], self.rows["track_id"]
        for i in range(len(q)):
            fetch = min(total, max(8 * k, 64))
            while True:
                scores, rows = backend.search(q[i:i + 1], fetch)
                best: dict[tuple, list] = {}  # group -> [row, score, matches], in rank order
                for r, s in zip(rows[0], scores[0], strict=True):
                    if r < 0:
                        continue
                    tid = int(tracks[r])
                    key = (int(exports[r]), tid) if tid >= 0 else ("row", int(r))
                    if key in best:
                        best[key][2] += 1
                    else:
                        best[key] = [int(r), float(s), 1]
                if len(best) >= k or fetch >= total:
                    break
                fetch = min(total, fetch * 4)
            chosen = list(best.values())[:k]
            recs = []
            for j, (r, s, n) in enumerate(chosen):
                out_scores[i, j], out_rows[i, j] = s, r
                recs.append({**self.record(r, s, j + 1), "matches": n})
            records.append(recs)
        return SearchResult(out_scores, out_rows, by, records)

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
        tid = int(self.rows["track_id"][row])
        out["track_id"] = tid if tid >= 0 else None
        return out

    # -- files ---------------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike, *, locked: bool = False) -> None:
        """Write the index to ``folder`` (created) as a new version, committed by replacing ``index.json``.

        Args:
            folder: The index folder.
            locked: The caller holds ``FolderLock(folder, "index")`` (as ``facepcl
                index`` does for its whole read-modify-write); otherwise ``save``
                takes it for the write.

        Raises:
            FolderLockedError: Another process is writing the index.
            OutputError: The folder cannot be written (full, read-only); the
                previous version stays the current one.
        """
        folder = os.fspath(folder)
        lock = None if locked else FolderLock(folder, "index").acquire()
        try:
            self._save(folder)
        finally:
            if lock is not None:
                lock.release()

    def _save(self, folder: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            old = files.read_settings(folder)
        except (FileNotFoundError, files.IndexFileError):
            old = None
        version = files.next_version(folder, old)
        files.sweep(folder, files.named(old))  # what an interrupted writer left
        table = pa.table({"export": pa.array(self.rows["export"], pa.int32()),
                          **{c: files.arrow_column(self.rows[c]) for c in ROW_COLUMNS}})
        written: dict[str, dict[str, Any]] = {}
        kinds = {}
        try:
            written["rows"] = files.write_file(folder, files.file_name("rows", version),
                                               lambda p: pq.write_table(table, p, compression="zstd"))
            for f in self.features or []:
                vec = np.asarray(self._vectors(f), dtype=np.float16)
                written[f] = files.write_npy(folder, files.file_name(f, version), vec)
                b = self._backend(f)
                kinds[f] = b.kind
                if b.kind == "ivf":
                    written[f"{f}.ivf"] = files.write_file(folder, files.file_name(f"{f}.ivf", version), b.write)
            manifest = {"format_version": FORMAT_VERSION, "version": version, "features": self.features,
                        "rows": len(self), "exact_below": self.exact_below, "nprobe": self.nprobe, "search": kinds,
                        "identity": self.identity, "exports": self.exports, "files": written}
            files.write_manifest(folder, manifest)
        except OSError as e:
            files.sweep(folder, files.named(old))
            raise files.write_error(e, folder) from None
        files.sweep(folder, files.named(manifest))

    @classmethod
    def load(cls, folder: str | os.PathLike, *, nprobe: int | None = None) -> FaceIndex:
        """Read an index written by :meth:`save`.

        Only the files ``index.json`` names are read, each checked against its
        record (size and SHA-256) when first used; vectors are memory-mapped.

        Raises:
            FileNotFoundError: ``folder`` holds no index.
            IndexFileError: A file is missing, damaged or of another format
                (the message gives the ``facepcl index --rebuild`` command).
        """
        import pyarrow.parquet as pq

        folder = os.fspath(folder)
        for attempt in range(3):
            manifest = files.read_manifest(folder)
            problem = files.check_sizes(folder, manifest)
            if problem is None:
                break
            if attempt == 2 or files.read_settings(folder).get("version") == manifest.get("version"):
                raise files.IndexFileError(f"{os.path.join(folder, problem)}; the index is damaged: "
                                           f"{files.rebuild_fix(folder)}")
            # else a writer committed a new version while this one was being opened: open that one
        index = cls(manifest["features"], exact_below=manifest["exact_below"],
                    nprobe=nprobe if nprobe is not None else manifest.get("nprobe"))
        index.identity = manifest["identity"]
        index.exports = manifest["exports"]
        path = files.verify(folder, manifest["files"]["rows"])
        try:
            cols = export_api().from_arrow(pq.read_table(path))
        except (OSError, ValueError) as e:
            raise files.IndexFileError(f"{path}: cannot read it ({e}); {files.rebuild_fix(folder)}") from None
        if "track_id" not in cols:  # an index built before exports had tracks
            cols["track_id"] = np.full(len(cols["export"]), -1, np.int64)
        index.rows = {c: cols[c] for c in ("export", *ROW_COLUMNS)}
        if len(index) != manifest["rows"]:
            raise files.IndexFileError(f"{path}: holds {len(index)} rows, index.json says {manifest['rows']}; "
                                       f"{files.rebuild_fix(folder)}")
        index._folder, index._version = folder, manifest["version"]
        index._stored = {k: v for k, v in manifest["files"].items() if k != "rows"}
        return index


def _cat(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    return np.asarray(new) if len(old) == 0 else np.concatenate([old, new])
