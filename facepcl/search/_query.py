"""Search queries from the command line's words: photos, rows of an export, or raw vectors (.npy)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.inputs import display_path
from ._exports import export_api

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
    api = export_api()
    return os.path.isdir(path) and (os.path.exists(os.path.join(path, api.RUN_FILE))
                                    or os.path.isdir(os.path.join(path, api.MANIFESTS)))


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


def read_vectors(path: str) -> np.ndarray:
    """A ``.npy`` file of numbers, its header checked against the file's size before anything is loaded.

    Raises:
        ValueError: The file is not a ``.npy`` array of numbers, or its header
            promises more (or less) data than the file holds.
    """
    fix = "save vectors with numpy.save"
    try:
        with open(os.fsencode(path), "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            data = os.fstat(f.fileno()).st_size - f.tell()
            if dtype.hasobject or dtype.kind not in "biuf":
                raise ValueError(f"{path}: holds {dtype} values, not numbers; {fix}")
            expected = math.prod(shape) * dtype.itemsize
            if expected != data:
                raise ValueError(f"{path}: its header describes a {shape} {dtype} array ({_size(expected)}) but the "
                                 f"file holds {_size(data)} of data: it is damaged or not a vector file; {fix}")
            f.seek(0)
            arr = np.lib.format.read_array(f, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError) as e:
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path}: cannot read it as a .npy array ({e}); {fix}") from None
    return arr


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def vector_queries(path: str, dim: int) -> list[Query]:
    """Rows of a ``.npy`` file, ``(D,)`` or ``(Q, D)``."""
    arr = np.atleast_2d(np.asarray(read_vectors(path), dtype=np.float32))
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{path}: holds an array of shape {arr.shape}; the index needs (Q, {dim}) or ({dim},)")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad):
        raise ValueError(f"{path}: row {int(bad[0])} holds NaN or infinite values, which no search can rank")
    name = display_path(os.path.basename(path))
    return [Query(f"{name}[{i}]", v, None, {"vectors": display_path(path), "row": i}) for i, v in enumerate(arr)]


def export_queries(folder: str, rows: Sequence[int] | None, by: str, dim: int,
                   encoder_sha256: str | None = None) -> tuple[list[Query], list[str]]:
    """Rows of an export (all, or the given row numbers in input order) with their crops re-made for pictures.

    Raises:
        ValueError: The export lacks the feature, has vectors of another length,
            or (``encoder_sha256`` given) was made with another encoder.
    """
    from ..export import read_embeddings, read_metadata
    from ..viz._thumbs import load_thumbnails

    meta = read_metadata(folder)
    if by not in meta.get("features", []):
        raise ValueError(f"{folder}: the export has no {by!r} features (it holds {meta.get('features')})")
    if int(meta.get("feature_dim", dim)) != dim:
        raise ValueError(f"{folder}: its vectors have length {meta.get('feature_dim')}, the index holds {dim}")
    if encoder_sha256 and meta.get("encoder_sha256") != encoder_sha256:
        raise ValueError(f"{folder}: made with encoder_sha256 {meta.get('encoder_sha256')}, the index with "
                         f"{encoder_sha256}: its codes are not comparable; query with rows of an export of the "
                         "index's model")
    columns = ["path", "frame", "face_index", "width", "height", "bbox", "kps", by]
    cols = export_api().from_arrow(read_embeddings(folder, columns=columns))
    n = len(cols["path"])
    wanted = list(range(n)) if rows is None else list(rows)
    bad = [r for r in wanted if not 0 <= r < n]
    if bad:
        raise ValueError(f"{folder}: has rows 0..{n - 1}, not {bad}")
    sizes = np.stack([cols["height"], cols["width"]], axis=1)
    crops, problems = load_thumbnails(wanted, cols["path"], cols["frame"], cols["kps"].reshape(-1, 5, 2), sizes,
                                      meta, int(meta.get("crop_size", 64)))
    name = display_path(os.path.basename(os.path.normpath(folder)))
    out = [Query(f"{name} row {r}", cols[by][r], crops.get(r),
                 {"export": display_path(os.path.abspath(folder)), "row": r, "path": cols["path"][r],
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
        out.append(Query(f"{display_path(os.path.basename(paths[i]))} face {face}", getattr(res, by)[r],
                         None if res.crops is None else res.crops[r],
                         {"path": display_path(paths[i]), "face_index": face,
                          "bbox": [round(float(v), 2) for v in res.bbox[r]],
                          "det_score": round(float(res.det_score[r]), 4)}))
    return out, problems


def resolve_queries(specs: Sequence[str], by: str, dim: int, make_embedder,
                    encoder_sha256: str | None = None) -> tuple[list[Query], list[str]]:
    """Queries from command-line words, in the order given.

    Args:
        specs: Image files, export folders (``EXPORT`` or ``EXPORT#ROW,ROW``), or ``.npy`` files.
        by: The feature searched.
        dim: Vector length of the index.
        make_embedder: Called once, when the first image needs embedding; returns a :class:`~facepcl.FaceEmbedder`
            (and refuses a model whose encoder is not the index's).
        encoder_sha256: The index's encoder digest: export rows of another encoder are refused.

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
            q, p = export_queries(base, rows, by, dim, encoder_sha256)
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
