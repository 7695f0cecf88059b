"""Embedding maps: an export's face, pose or trunk features in 2-D, coloured by any column or label."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._utils.constants import FEATURES
from ._draw import MISSING_COLOUR, PALETTE, ramp
from ._project import Projection, project_2d

FEATURE_NAMES = {"face": "face features F_f", "pose": "pose features F_p", "trunk": "trunk features F"}
#: Columns of an export that can colour a map, besides the derived ones and labels.
TABLE_COLUMNS = ("path", "item", "frame", "timestamp", "face_index", "width", "height", "det_score")
#: Colourings computed from the path: the name of the folder holding the file, and the file name.
DERIVED_COLUMNS = ("dirname", "file")
MAX_CATEGORIES = 20
NO_LABEL = "(no label)"
_NEEDED = ("item", "path", "frame", "face_index", "kps", "width", "height")


@dataclass
class Colouring:
    """Colours of the points of a map and their legend.

    Attributes:
        name: The column the colours show.
        kind: "categorical" or "continuous".
        colours: ``(N, 3)`` uint8 RGB, one per point.
        values: ``(N,)`` the value of each point (strings for categorical ones).
        legend: Categorical: ``(label, colour, count)`` per category, in legend order.
        limits: Continuous: ``(min, max)`` of the values.
    """

    name: str
    kind: str
    colours: np.ndarray
    values: np.ndarray
    legend: list[tuple[str, tuple[int, int, int], int]] = field(default_factory=list)
    limits: tuple[float, float] = (0.0, 1.0)


@dataclass
class EmbeddingMap:
    """A 2-D map of the faces of an export, ready to draw.

    Attributes:
        projection: The 2-D coordinates and the method that made them.
        features: "face", "pose" or "trunk".
        colouring: Point colours and legend.
        paths: ``(N,)`` stored path of each point.
        frames: ``(N,)`` video frame (-1 for images).
        face_index: ``(N,)`` face number in its image.
        item: ``(N,)`` input position in the export.
        kps: ``(N, 5, 2)`` landmarks (for thumbnails).
        sizes: ``(N, 2)`` image (height, width) as embedded.
        total: Faces in the source before ``max_points`` sampling.
        metadata: The export's provenance (model, preprocessing, working directory).
        notes: What was decided on the way (method choice, sampling, unmatched labels).
    """

    projection: Projection
    features: str
    colouring: Colouring
    paths: np.ndarray
    frames: np.ndarray
    face_index: np.ndarray
    item: np.ndarray
    kps: np.ndarray
    sizes: np.ndarray
    total: int
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def title(self) -> str:
        """One line: what, how, how many, which model."""
        model = self.metadata.get("model_name") or self.metadata.get("model_id") or "unknown model"
        method = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}[self.projection.method]
        count = f"{len(self)} faces" + (f" (sample of {self.total})" if self.total > len(self) else "")
        return f"{FEATURE_NAMES[self.features]} · {method} · {count} · model {model}"

    def save_coords(self, path: str | os.PathLike) -> None:
        """Write ``item,path,frame,face_index,x,y,<colour column>`` as CSV, one row per point."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["item", "path", "frame", "face_index", "x", "y", self.colouring.name])
            for i in range(len(self)):
                x, y = self.projection.coords[i]
                w.writerow([int(self.item[i]), self.paths[i], int(self.frames[i]), int(self.face_index[i]),
                            f"{x:.6g}", f"{y:.6g}", self.colouring.values[i]])


def read_table(source: Any, columns: list[str]):
    """An export as a pyarrow Table with ``columns``: a ``facepcl embed`` folder, a .parquet file or a Table."""
    import pyarrow as pa

    if isinstance(source, pa.Table):
        missing = [c for c in columns if c not in source.column_names]
        if missing:
            raise ValueError(f"the table has no column {missing[0]!r}; it has {source.column_names}")
        return source.select(columns)
    path = os.fspath(source)
    if os.path.isdir(path):
        from ..export import read_embeddings

        available = _folder_columns(path)
        _check_columns(columns, available, path)
        return read_embeddings(path, columns)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder; pass the OUT folder of `facepcl embed` "
                                "or one of its .parquet files")
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: not a Parquet file ({e}); pass the OUT folder of `facepcl embed` "
                         "or one of its .parquet files") from e
    _check_columns(columns, schema.names, path)
    return pq.read_table(path, columns=columns)


def _folder_columns(path: str) -> list[str]:
    from ..export import read_metadata

    meta = read_metadata(path)
    return [*_NEEDED, "timestamp", "bbox", "det_score", *meta.get("features", FEATURES)]


def _check_columns(columns: list[str], available: list[str], where: str) -> None:
    missing = [c for c in columns if c not in available]
    if missing:
        feats = [c for c in available if c in FEATURES]
        hint = f" (this export holds the features {feats})" if missing[0] in FEATURES else ""
        raise ValueError(f"{where}: no column {missing[0]!r}{hint}")


def table_metadata(table) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(b"facepcl")
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}


def read_labels(path: str | os.PathLike) -> tuple[dict[str, dict[str, str]], list[str]]:
    """A labels CSV: a header with a ``path`` column and any label columns.

    Returns:
        ``(by_key, columns)``: every lookup key of each row (the path as
        written, normalised, and made absolute from the current directory
        and from the CSV's folder) -> the row's labels, and the label column names.
    """
    path = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: cannot read the labels CSV ({e})") from e
    if "path" not in header:
        raise ValueError(f"{path}: the labels CSV needs a header with a 'path' column (found {header}); "
                         "e.g. 'path,person' then one line per image")
    columns = [c for c in header if c != "path"]
    if not columns:
        raise ValueError(f"{path}: the labels CSV has no label column besides 'path'")
    base = os.path.dirname(os.path.abspath(path))
    by_key: dict[str, dict[str, str]] = {}
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        p = (row.get("path") or "").strip()
        if not p:
            raise ValueError(f"{path}:{line}: empty path")
        if p in seen:
            raise ValueError(f"{path}:{line}: {p!r} is listed twice (first on line {seen[p]})")
        seen[p] = line
        labels = {c: (row.get(c) or "").strip() for c in columns}
        for key in _keys(p, os.getcwd(), base):
            by_key.setdefault(key, labels)
    return by_key, columns


def _keys(p: str, *bases: str | None) -> set[str]:
    keys = {p, os.path.normpath(p)}
    for b in bases:
        if b and not os.path.isabs(p):
            keys.add(os.path.normpath(os.path.join(b, p)))
    if os.path.isabs(p):
        keys.add(os.path.normpath(p))
    return keys


def derived_values(paths: np.ndarray, name: str) -> np.ndarray:
    if name == "dirname":
        return np.array([os.path.basename(os.path.dirname(os.path.normpath(p))) or "." for p in paths], dtype=object)
    return np.array([os.path.basename(p) for p in paths], dtype=object)


def colour_points(values: np.ndarray, name: str) -> Colouring:
    """Colours for ``values``: categories (strings, or at most 20 distinct integers) or a continuous ramp."""
    vals = np.asarray(values, dtype=object)
    missing = np.array([v is None or (isinstance(v, str) and v == "") or (isinstance(v, float) and math.isnan(v))
                        for v in vals])
    numeric = _as_numbers(vals[~missing])
    if numeric is not None:
        distinct = np.unique(numeric)
        integral = bool(np.all(np.equal(np.mod(distinct, 1), 0)))
        if not (integral and len(distinct) <= MAX_CATEGORIES):
            nums = np.full(len(vals), np.nan)
            nums[~missing] = numeric
            lo, hi = (float(distinct.min()), float(distinct.max())) if len(distinct) else (0.0, 1.0)
            t = (nums - lo) / (hi - lo) if hi > lo else np.where(np.isnan(nums), np.nan, 0.5)
            return Colouring(name, "continuous", ramp(t), nums, limits=(lo, hi))
        labels = np.array([_fmt(v) for v in numeric], dtype=object)
        order_key = {_fmt(v): float(v) for v in distinct}
    else:
        labels = np.array([str(v) for v in vals[~missing]], dtype=object)
        order_key = None
    text = np.full(len(vals), NO_LABEL, dtype=object)
    text[~missing] = labels
    uniq, counts = np.unique(labels, return_counts=True) if len(labels) else (np.array([]), np.array([]))
    count = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
    cats = sorted(count, key=(lambda c: order_key[c]) if order_key else _natural)
    if len(cats) > MAX_CATEGORIES:
        keep = set(sorted(cats, key=lambda c: (-count[c], _natural(c)))[: MAX_CATEGORIES - 1])
        other = sum(count[c] for c in cats if c not in keep)
        n_other = len(cats) - len(keep)
        cats = [c for c in cats if c in keep]
        other_label = f"other ({n_other} values)"
        text = np.array([t if t in keep or t == NO_LABEL else other_label for t in text], dtype=object)
        count = {c: count[c] for c in cats}
        count[other_label] = other
        cats.append(other_label)
    colour_of = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(cats)}
    legend = [(c, colour_of[c], count[c]) for c in cats]
    if missing.any():
        colour_of[NO_LABEL] = MISSING_COLOUR
        legend.append((NO_LABEL, MISSING_COLOUR, int(missing.sum())))
    colours = np.array([colour_of[t] for t in text], dtype=np.uint8).reshape(-1, 3)
    return Colouring(name, "categorical", colours, text, legend=legend)


def _as_numbers(vals: np.ndarray) -> np.ndarray | None:
    try:
        out = np.array([float(v) for v in vals], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out).all() else None


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _natural(s: str) -> tuple:
    import re

    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", s))


def embedding_map(source: Any, *, features: str = "face", color_by: str | None = None,
                  labels: str | os.PathLike | None = None, method: str = "auto", seed: int = 0,
                  normalize: bool = True, max_points: int | None = 10000, perplexity: float | None = None,
                  n_neighbors: int | None = None) -> EmbeddingMap:
    """Project an export's embeddings to 2-D and colour them.

    Args:
        source: The output folder of ``facepcl embed`` (any ``--format``), one
            of its ``.parquet`` files, or a ``pyarrow.Table`` of its rows.
        features: "face" (F_f), "pose" (F_p) or "trunk" (F).
        color_by: A column: ``path``, ``item``, ``frame``, ``timestamp``,
            ``face_index``, ``width``, ``height``, ``det_score``; ``dirname``
            (the folder holding each file) or ``file`` (its name); or a column
            of ``labels``. Default: the first label column when ``labels`` is
            given, else ``dirname`` if the files lie in several folders, else ``path``.
        labels: A CSV with a header, a ``path`` column and label columns,
            joined on the stored paths (as written, or resolved from the
            current directory or from the CSV's folder).
        method: "auto", "pca", "tsne" or "umap" (see :func:`project_2d`).
        seed: Seed for sampling and projection.
        normalize: L2-normalise embeddings before projecting.
        max_points: Project at most this many faces (a seeded random sample; None: all).
        perplexity: t-SNE perplexity.
        n_neighbors: UMAP neighbours.

    Returns:
        An :class:`EmbeddingMap`.
    """
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    label_rows, label_cols = read_labels(labels) if labels is not None else ({}, [])
    if color_by is None:
        color_by = label_cols[0] if label_cols else "dirname"
        default_colour = True
    else:
        default_colour = False
    known = [*TABLE_COLUMNS, *DERIVED_COLUMNS, *label_cols]
    if color_by not in known:
        hint = "" if labels is not None else " (pass labels=CSV / --labels for label columns)"
        raise ValueError(f"cannot colour by {color_by!r}; choose from {', '.join(known)}{hint}")
    table_cols = list(dict.fromkeys([*_NEEDED, features, *([color_by] if color_by in TABLE_COLUMNS else [])]))
    table = read_table(source, table_cols)
    meta = table_metadata(table)
    total = table.num_rows
    if total == 0:
        raise ValueError(f"{_describe(source)}: holds no faces; nothing to plot")
    notes: list[str] = []
    rows = np.arange(total)
    if max_points is not None and total > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(total, int(max_points), replace=False))
        notes.append(f"plotted a random sample of {len(rows)} of {total} faces (max_points)")
        table = table.take(rows)
    x = _matrix(table, features)
    col = {name: table.column(name).to_numpy(zero_copy_only=False) for name in ("item", "path", "frame",
                                                                                  "face_index", "width", "height")}
    paths = np.asarray(col["path"], dtype=object)
    if color_by in TABLE_COLUMNS:
        values = np.asarray(table.column(color_by).to_numpy(zero_copy_only=False), dtype=object)
    elif color_by in DERIVED_COLUMNS:
        values = derived_values(paths, color_by)
        if default_colour and len(set(values)) < 2:
            color_by, values = "path", paths
    else:
        cwd = meta.get("cwd")
        found = [_lookup(label_rows, p, cwd) for p in paths]
        values = np.array([None if f is None else f[color_by] for f in found], dtype=object)
        unmatched = sum(f is None for f in found)
        if unmatched == len(found):
            raise ValueError(f"{labels}: no path of the labels CSV matches a path of the export (export path "
                             f"example: {paths[0]!r}); write the paths as given to `facepcl embed`")
        if unmatched:
            notes.append(f"{unmatched} of {len(found)} faces have no row in {os.fspath(labels)} (shown as {NO_LABEL})")
    projection = project_2d(x, method, seed=seed, normalize=normalize, perplexity=perplexity, n_neighbors=n_neighbors)
    if projection.note:
        notes.insert(0, projection.note)
    kps = _matrix(table, "kps").reshape(-1, 5, 2)
    sizes = np.stack([np.asarray(col["height"]), np.asarray(col["width"])], axis=1)
    return EmbeddingMap(projection=projection, features=features, colouring=colour_points(values, color_by),
                        paths=paths, frames=np.asarray(col["frame"]), face_index=np.asarray(col["face_index"]),
                        item=np.asarray(col["item"]), kps=kps, sizes=sizes, total=total, metadata=meta, notes=notes)


def _lookup(by_key: dict[str, dict[str, str]], path: str, cwd: str | None) -> dict[str, str] | None:
    for key in (path, os.path.normpath(path), *(_keys(path, cwd, os.getcwd()))):
        if key in by_key:
            return by_key[key]
    return None


def _matrix(table, name: str) -> np.ndarray:
    column = table.column(name).combine_chunks()
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), width).astype(np.float32)


def _describe(source: Any) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
