"""Search queries from the command line's words: photos, rows of an export, or raw vectors (.npy)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..export._state import MANIFESTS, RUN_FILE

#: Separates an export folder from the rows wanted as queries: ``faces/#0,3``.
ROW_MARK = "#"


@dataclass
class Query:
    """One query vector and where it came from.

    Attributes:
        label: How the query is called in output ("group.jpg face 2", "faces/ row 7", "q.npy[0]").
        vector: ``(D,)`` float32 vector of the searched feature.
        crop: ``(S, S, 3)`` uint8 aligned face crop for pictures, or None (raw vectors).
        source: Provenance of the query (path, face_index, bbox ...), for JSON output.
    """

    label: str
    vector: np.ndarray
    crop: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)


def is_export(path: str) -> bool:
    """Whether ``path`` is an output folder of ``facepcl embed``."""
    return os.path.isdir(path) and (os.path.exists(os.path.join(path, RUN_FILE))
                                    or os.path.isdir(os.path.join(path, MANIFESTS)))


def split_rows(spec: str) -> tuple[str, list[int] | None]:
    """``"faces/#0,3"`` -> ``("faces/", [0, 3])``; a plain path -> ``(path, None)``."""
    if ROW_MARK in spec:
        base, _, rows = spec.rpartition(ROW_MARK)
        if is_export(base):
            try:
                return base, [int(r) for r in rows.split(",") if r.strip()]
            except ValueError:
                raise ValueError(f"{spec}: rows after {ROW_MARK!r} must be comma-separated numbers, "
                                 f"e.g. {base}{ROW_MARK}0,3") from None
    return spec, None


def vector_queries(path: str, dim: int) -> list[Query]:
    """Rows of a ``.npy`` file, ``(D,)`` or ``(Q, D)``."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read it as a .npy array ({e}); save vectors with numpy.save") from e
    arr = np.atleast_2d(np.asarray(arr, dtype=np.float32))
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{path}: holds an array of shape {arr.shape}; the index needs (Q, {dim}) or ({dim},)")
    name = os.path.basename(path)
    return [Query(f"{name}[{i}]", v, None, {"vectors": path, "row": i}) for i, v in enumerate(arr)]


def export_queries(folder: str, rows: Sequence[int] | None, by: str, dim: int) -> tuple[list[Query], list[str]]:
    """Rows of an export (all, or the given row numbers in input order) with their crops re-made for pictures."""
    from ..export import read_embeddings, read_metadata
    from ..export._writers import from_arrow
    from ..viz._thumbs import load_thumbnails

    meta = read_metadata(folder)
    if by not in meta.get("features", []):
        raise ValueError(f"{folder}: the export has no {by!r} features (it holds {meta.get('features')})")
    if int(meta.get("feature_dim", dim)) != dim:
        raise ValueError(f"{folder}: its vectors have length {meta.get('feature_dim')}, the index holds {dim}")
    cols = from_arrow(read_embeddings(folder, columns=["path", "frame", "face_index", "width", "height", "bbox",
                                                       "kps", by]))
    n = len(cols["path"])
    wanted = list(range(n)) if rows is None else list(rows)
    bad = [r for r in wanted if not 0 <= r < n]
    if bad:
        raise ValueError(f"{folder}: has rows 0..{n - 1}, not {bad}")
    sizes = np.stack([cols["height"], cols["width"]], axis=1)
    crops, problems = load_thumbnails(wanted, cols["path"], cols["frame"], cols["kps"].reshape(-1, 5, 2), sizes,
                                      meta, int(meta.get("crop_size", 64)))
    name = os.path.basename(os.path.normpath(folder))
    out = [Query(f"{name} row {r}", cols[by][r], crops.get(r),
                 {"export": os.path.abspath(folder), "row": r, "path": cols["path"][r],
                  "frame": int(cols["frame"][r]), "face_index": int(cols["face_index"][r]),
                  "bbox": [round(float(v), 2) for v in cols["bbox"][r]]}) for r in wanted]
    return out, problems


def image_queries(paths: Sequence[str], by: str, embedder) -> tuple[list[Query], list[str]]:
    """Every detected face of each image is one query; unreadable or face-less images become problems."""
    res = embedder.embed(list(paths))
    problems = [f.reason if f.reason.startswith(f.input) else f"{f.input}: {f.reason}" for f in res.failures]
    problems += [f"{paths[i]}: no face found (lower --det-threshold, or pass an aligned crop with --no-detect)"
                 for i in res.no_face]
    out = []
    for r in range(len(res)):
        i = int(res.image_index[r])
        face = int(np.sum(res.image_index[:r] == i))
        out.append(Query(f"{os.path.basename(paths[i])} face {face}", getattr(res, by)[r],
                         None if res.crops is None else res.crops[r],
                         {"path": paths[i], "face_index": face,
                          "bbox": [round(float(v), 2) for v in res.bbox[r]],
                          "det_score": round(float(res.det_score[r]), 4)}))
    return out, problems


def resolve_queries(specs: Sequence[str], by: str, dim: int, make_embedder) -> tuple[list[Query], list[str]]:
    """Queries from command-line words, in the order given.

    Args:
        specs: Image files, export folders (``EXPORT`` or ``EXPORT#ROW,ROW``), or ``.npy`` files.
        by: The feature searched.
        dim: Vector length of the index.
        make_embedder: Called once, when the first image needs embedding; returns a :class:`~facepcl.FaceEmbedder`.

    Returns:
        ``(queries, problems)``: problems name the input and why it gave no query.
    """
    queries: list[Query] = []
    problems: list[str] = []
    images: list[str] = []

    def flush() -> None:
        if images:
            q, p = image_queries(images, by, make_embedder())
            queries.extend(q)
            problems.extend(p)
            images.clear()

    for spec in specs:
        base, rows = split_rows(spec)
        if is_export(base):
            flush()
            q, p = export_queries(base, rows, by, dim)
            queries.extend(q)
            problems.extend(p)
        elif base.lower().endswith(".npy"):
            flush()
            queries.extend(vector_queries(base, dim))
        elif os.path.isdir(base):
            raise ValueError(f"{base}: a folder that is not a `facepcl embed` output; pass image files, an export "
                             "folder or a .npy file of vectors")
        else:
            images.append(base)
    flush()
    return queries, problems
