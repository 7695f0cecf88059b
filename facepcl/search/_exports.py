"""What an index reads from a ``facepcl embed`` output folder: its shards, each identified and checked."""

from __future__ import annotations

import functools
import glob
import json
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from .._utils.folders import check_file, file_record

SHARD_SUFFIXES = (".parquet", ".npz", ".safetensors")


@functools.cache
def export_api() -> SimpleNamespace:
    """The parts of :mod:`facepcl.export` that search uses, imported in this one place.

    Returns:
        ``MANIFESTS`` and ``RUN_FILE`` (names inside an export folder),
        ``from_arrow`` (a ``pyarrow.Table`` of shard rows to numpy columns) and
        ``read_shard`` (one shard file as ``(columns, metadata)``).
    """
    from ..export import MANIFESTS, RUN_FILE, from_arrow, read_shard

    return SimpleNamespace(MANIFESTS=MANIFESTS, RUN_FILE=RUN_FILE, from_arrow=from_arrow, read_shard=read_shard)


@dataclass
class Shard:
    """One committed data file of an export.

    Attributes:
        file: Its name in the export folder (``part-r00000-000000.parquet``).
        path: Its path.
        manifest: The record (``size``, ``sha256``) the export's manifest keeps of it, if any.
    """

    file: str
    path: str
    manifest: dict[str, Any] | None = None

    def identity(self) -> dict[str, Any]:
        """``{"size", "sha256"}`` of the shard: the manifest's record, else computed from the file."""
        if self.manifest is not None:
            return dict(self.manifest)
        return file_record(self.path)

    def check(self, export: str) -> None:
        """Check the shard against its manifest record (when the manifest keeps one).

        Raises:
            ValueError: The file differs from its record.
        """
        if self.manifest is None:
            return
        problem = check_file(self.path, self.manifest)
        if problem:
            raise ValueError(f"{self.path}: {problem}; the export {export} is damaged: re-export it "
                             "(`facepcl embed ... --overwrite`) before indexing it")


def list_shards(folder: str) -> list[Shard]:
    """The committed shards of an export, in (rank, shard) order.

    A shard is committed when its manifest and its data file both exist; a
    folder of shards copied without their manifests counts every shard file.
    """
    api = export_api()
    mdir = os.path.join(folder, api.MANIFESTS)
    if not os.path.isdir(mdir):
        return [Shard(os.path.basename(p), p) for p in sorted(
            p for s in SHARD_SUFFIXES for p in glob.glob(os.path.join(glob.escape(folder), f"part-r*-*{s}")))]
    shards = []
    for name in sorted(os.listdir(mdir)):
        if not (name.startswith("part-r") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(mdir, name), encoding="utf-8") as f:
                man = json.load(f)
            file = man["file"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{os.path.join(mdir, name)}: cannot read this shard manifest ({e}); the export "
                             f"{folder} is damaged: re-export it before indexing it") from None
        path = os.path.join(folder, file)
        if os.path.exists(path):  # else the shard was in flight: not committed
            has = isinstance(man.get("sha256"), str) and isinstance(man.get("size"), int)
            shards.append(Shard(file, path, {"size": man["size"], "sha256": man["sha256"]} if has else None))
    return shards


def read_shard(export: str, shard: Shard, columns: list[str]) -> dict[str, Any]:
    """Numpy columns of one shard.

    Raises:
        ValueError: The shard cannot be read, or misses a column.
    """
    try:
        cols, _ = export_api().read_shard(shard.path, columns)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ValueError(f"{shard.path}: cannot read this shard of {export} ({e}); re-export it") from None
    missing = [c for c in columns if c not in cols]
    if missing:
        raise ValueError(f"{shard.path}: this shard of {export} has no {missing} columns; re-export it")
    return cols


def check_codes(export: str, shard: Shard, cols: dict[str, Any], features: list[str]) -> None:
    """Refuse vectors that cannot be searched: NaN or infinite values, or all zeros.

    Raises:
        ValueError: Names the export, the shard, the row (and its path) and the feature.
    """
    for f in features:
        v = np.asarray(cols[f], dtype=np.float32)
        finite = np.isfinite(v).all(axis=1)
        usable = finite & (v != 0).any(axis=1)
        if usable.all():
            continue
        r = int(np.argmin(usable))
        what = "NaN or infinite values" if not finite[r] else "only zeros"
        raise ValueError(f"{export}: shard {shard.file}, row {r} ({cols['path'][r]}, face {cols['face_index'][r]}) "
                         f"has a {f} code with {what}, which no search can rank; the export was written by a "
                         "broken model or damaged: re-export it, or index without it")


def merge_shards(parts: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """Shards' columns as one set of columns, sorted by ``keys`` (input order: item, frame, face_index)."""
    cols = {k: ([p for part in parts for p in part[k]] if k == "path" else np.concatenate([part[k] for part in parts]))
            for k in parts[0]}
    order = np.lexsort([cols[k] for k in reversed(keys)])
    return {k: [v[i] for i in order] if k == "path" else v[order] for k, v in cols.items()}
