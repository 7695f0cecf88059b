"""The whole export, all ranks together: its verified shards, and the files merged from their manifests.

Readers (:func:`facepcl.export.read_embeddings`, the search index) and the
final step of a run (``_errors.jsonl``, ``index.csv``) see the folder
through :func:`committed_shards`, which lists the committed shards of every
rank in order and, when asked, proves each data file is the one its
manifest recorded.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..io.storage import Store, open_store
from ._formats import get_format, read_shard
from ._layout import ERRORS_FILE, INDEX_FILE, MANIFESTS, SHARD_RE, read_manifest
from ._types import ExportStateError, Stats

INDEX_COLUMNS = ("item", "path", "frame", "timestamp", "face_index")


@dataclass(frozen=True)
class Shard:
    """One committed shard of an export.

    Attributes:
        rank: The torchrun rank that wrote it.
        number: Its number within the rank.
        path: Its data file (a local path, or a URL on an object store).
        manifest: Its manifest (``rows``, ``data`` record, ``start``/``end`` cursors, ``stats``, ``errors``, ...).
        store: The export's store (:func:`facepcl.io.storage.open_store`).
    """

    rank: int
    number: int
    path: str
    manifest: dict[str, Any]
    store: Store | None = field(default=None, compare=False, repr=False)

    def read(self, columns: Sequence[str] | None = None) -> tuple[dict[str, Any], dict]:
        """Its rows as numpy columns and its provenance (see :func:`facepcl.export.read_shard`)."""
        if self.store is None or not self.store.object_store:
            return read_shard(self.path, columns)
        name = self.manifest["file"]
        if name.endswith((".parquet", ".npz")):  # read in place: the footer and the columns asked for
            with self.store.open(name) as f:
                return get_format(os.path.splitext(name)[1].lstrip(".")).read(f, columns)
        with self.store.local(name) as path:
            return read_shard(path, columns)


def damaged_shard(path: str, problem: str) -> ExportStateError:
    """The error of a shard whose data does not match its manifest (it names the fix: ``--resume``)."""
    return ExportStateError(f"{path} is damaged ({problem}); run the same facepcl embed command with --resume to "
                            "redo it (and every later shard of its rank)")


def committed_shards(out: str | os.PathLike | Store, verify: bool = True) -> list[Shard]:
    """The committed shards of every rank, ordered by (rank, number).

    A shard is committed when its manifest and its data file both exist; the
    last manifest of a rank without its data file is a shard that was in
    flight when a run stopped, and is left out. Data files without a manifest
    (an object-store upload that never finished) are not shards.

    Args:
        out: The export folder: a local path, a URL (the filesystem's default
            credentials), or a store (:func:`facepcl.io.storage.open_store`).
        verify: Check every data file against its manifest's size and SHA-256.

    Raises:
        ExportStateError: A data file is damaged or missing (with ``verify``,
            or missing from the middle of a rank), or a manifest is damaged;
            the message names the file and says to run ``--resume``.
    """
    store = open_store(out)
    per_rank: dict[int, list[tuple[int, str]]] = {}
    for name in store.names(MANIFESTS):
        m = SHARD_RE.match(name)
        if m and name.endswith(".json"):
            per_rank.setdefault(int(m.group(1)), []).append((int(m.group(2)), f"{MANIFESTS}/{name}"))
    present = set(store.names()) if per_rank else set()
    shards: list[Shard] = []
    for rank, found in sorted(per_rank.items()):
        found.sort()
        for k, (number, name) in enumerate(found):
            man = read_manifest(name, store=store)
            data = store.url(man["file"])
            if man["file"] not in present:
                if k == len(found) - 1:
                    continue  # in flight when a run stopped
                problem: str | None = "missing"
            elif verify and "sha256" in man:
                problem = store.check(man["file"], man)
            else:
                problem = None
            if problem is not None:
                raise damaged_shard(data, problem)
            shards.append(Shard(rank, number, data, man, store))
    return shards


def _per_rank(shards: list[Shard]) -> list[list[Shard]]:
    ranks: dict[int, list[Shard]] = {}
    for s in shards:
        ranks.setdefault(s.rank, []).append(s)
    return list(ranks.values())


def iter_errors(out: str | Store, verify: bool = False, shards: list[Shard] | None = None) -> Iterator[dict]:
    """Every error record of the committed shards of all ranks (``shards`` when given), ordered by (item, frame)."""

    def rank_errors(shards: list[Shard]) -> Iterator[tuple[int, int, dict]]:
        for s in shards:
            for rec in s.manifest.get("errors", []):
                yield rec["item"], rec.get("frame", -1), rec

    shards = committed_shards(out, verify) if shards is None else shards
    streams = [rank_errors(r) for r in _per_rank(shards)]
    for _, _, rec in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
        yield rec


def write_errors(out: str | Store, shards: list[Shard] | None = None) -> int:
    """Rebuild ``_errors.jsonl`` from the manifests (of ``shards`` when given); returns the number of records."""
    store = open_store(out)
    n = 0

    def write(tmp: str) -> None:
        nonlocal n
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in iter_errors(store, shards=shards):
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1

    store.write_file(ERRORS_FILE, write)
    return n


def dataset_totals(out: str | Store) -> tuple[Stats, int]:
    """Counts and rows summed over the committed shards of all ranks."""
    stats, rows = Stats(), 0
    for s in committed_shards(out, verify=False):
        stats.add(Stats(**s.manifest.get("stats", {})))
        rows += s.manifest.get("rows", 0)
    return stats, rows


def write_index(out: str | Store, fmt: str, shards: list[Shard] | None = None) -> None:
    """Write ``index.csv`` (file, row, item, path, frame, timestamp, face_index) for npz/safetensors shards
    (the committed ones, or ``shards`` when given)."""
    import csv

    store = open_store(out)
    get_format(fmt)  # an unknown format fails before anything is written

    def rank_rows(shards: list[Shard]) -> Iterator[tuple[int, int, int, list]]:
        for s in shards:
            name = s.manifest["file"]
            cols, _ = s.read(INDEX_COLUMNS)
            for row in range(len(cols["path"])):
                item, frame, face = int(cols["item"][row]), int(cols["frame"][row]), int(cols["face_index"][row])
                yield item, frame, face, [name, row, item, cols["path"][row], frame,
                                          repr(float(cols["timestamp"][row])), face]

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "row", "item", "path", "frame", "timestamp", "face_index"])
            listed = committed_shards(store, verify=False) if shards is None else shards
            streams = [rank_rows(r) for r in _per_rank(listed)]
            for *_, row in heapq.merge(*streams, key=lambda t: t[:3]):
                w.writerow(row)

    store.write_file(INDEX_FILE, write)
