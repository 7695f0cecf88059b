"""What an export folder holds, what is done, and how a shard is committed.

Layout of ``OUT``::

    _run.json                          settings every rank and every resumed run must share
    part-r00000-000000.parquet         data shards: rank 0, shard 0 (.npz / .safetensors for other formats)
    _manifests/part-r00000-000000.json what each shard covers: end cursor, counts, skipped inputs
    _errors.jsonl                      every skipped input or frame with its reason (rebuilt from the manifests)
    index.csv                          (npz / safetensors only) file and row of every face

Names starting with ``_`` or ``.`` are ignored by Parquet dataset readers
(pyarrow, pandas, Spark), so ``OUT`` itself reads as one table.

A shard is committed in two atomic renames: its manifest first, then its
data file. The data file is the commit point: a manifest whose data file is
missing belongs to a shard that was in flight when the run died and is
deleted on resume. Each rank processes its inputs in stream order and commits
shards in order, so what a rank has done is a prefix of its inputs, described
by the end cursor of its last committed shard. Resuming continues right
after that cursor: nothing is repeated and nothing is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import heapq
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import FacePCLError
from ._writers import get_format, write_atomic

RUN_FILE = "_run.json"
MANIFESTS = "_manifests"
ERRORS_FILE = "_errors.jsonl"
INDEX_FILE = "index.csv"
_SHARD_RE = re.compile(r"part-r(\d{5})-(\d{6})")
INDEX_COLUMNS = ("item", "path", "frame", "timestamp", "face_index")
STAT_KEYS = ("inputs", "images", "videos", "frames", "faces", "skipped")


class ExportStateError(FacePCLError):
    """The output folder cannot be written or resumed as asked."""


def output_error(e: OSError, path: str) -> ExportStateError:
    """An OSError met while writing ``path`` in the output folder, as an error that says what to do."""
    why = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e):
        fix = ("the disk is full (or over quota): free space, or move the output folder to a disk with room, then "
               "run the same command with --resume; every shard written so far is kept and complete")
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "the output folder is not writable: fix its permissions or choose another -o folder"
    elif e.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file is in the way of the output folder: choose another -o folder"
    else:
        fix = "check the output folder, then run the same command with --resume"
    return ExportStateError(f"cannot write {path} ({why}); {fix}")


def shard_name(rank: int, shard: int) -> str:
    """``part-r{rank:05d}-{shard:06d}`` (no suffix)."""
    return f"part-r{rank:05d}-{shard:06d}"


@dataclass(frozen=True)
class Cursor:
    """How far one rank has got: the last unit it committed.

    Attributes:
        item: Index of the last input touched (-1: nothing yet).
        frame: Last video frame committed when the video is not finished; -1 otherwise.
        complete: Whether input ``item`` is finished.
        digest: The input stream's digest at ``item`` (see :mod:`._inputs`).
        path: The path of input ``item`` (for error messages).
    """

    item: int = -1
    frame: int = -1
    complete: bool = True
    digest: str = ""
    path: str = ""

    def done(self, index: int) -> bool:
        """Whether input ``index`` needs no more work."""
        return index < self.item or (index == self.item and self.complete)


@dataclass
class Stats:
    """Counts of one run, one rank or one shard."""

    inputs: int = 0
    images: int = 0
    videos: int = 0
    frames: int = 0
    faces: int = 0
    skipped: int = 0

    def add(self, other: Stats) -> None:
        for k in STAT_KEYS:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def as_list(self) -> list[int]:
        return [getattr(self, k) for k in STAT_KEYS]


@dataclass
class ResumePoint:
    """What a rank found on disk: where to continue and what is already there."""

    cursor: Cursor = field(default_factory=Cursor)
    next_shard: int = 0
    done: Stats = field(default_factory=Stats)
    rows: int = 0


def run_settings_check(out: str, settings: dict[str, Any], resume: bool, rank: int = 0,
                       overwrite: bool = False) -> None:
    """Write ``_run.json`` or check it against this run's settings.

    Args:
        out: The output folder (created if needed).
        settings: JSON-able settings that decide the rows (model, features, format, every, ...).
        resume: Whether ``--resume`` was given.
        rank: This process's rank. Only its own shards count as "a previous
            run": the other ranks of this same run may already be writing.
        overwrite: ``--overwrite``: the previous export is being cleared
            (:func:`clear_export`), so its settings are not compared.

    Raises:
        ExportStateError: The folder holds an export made with other
            settings, or holds this rank's shards and ``--resume`` was not given.
    """
    os.makedirs(os.path.join(out, MANIFESTS), exist_ok=True)
    if not overwrite:
        check_fresh(out, resume, rank)
    path = os.path.join(out, RUN_FILE)
    if not overwrite and os.path.exists(path) and any_shards(out):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            lines = "; ".join(f"{k}: was {old.get(k)!r}, now {settings.get(k)!r}" for k in diff)
            raise ExportStateError(f"{out} was written with other settings, so its rows would not match: {lines}. "
                                   "Resume with the same options (and the same number of torchrun processes), or "
                                   "write to a new folder")
        return
    text = json.dumps(settings, indent=2, sort_keys=True) + "\n"
    # Every rank writes the same bytes, so concurrent writers cannot leave a mixed file.
    write_atomic(path, lambda tmp: _write_text(tmp, text))


def check_fresh(out: str, resume: bool, rank: int) -> None:
    """Refuse to start over in a folder that holds this rank's shards, unless resuming."""
    if not resume and any_shards(out, rank):
        raise ExportStateError(f"{out} already holds shards of an export; pass --resume to continue it, "
                               "--overwrite to delete it and start over, or choose a new output folder")


def clear_export(out: str, rank: int, world_size: int) -> list[str]:
    """``--overwrite``: delete what an earlier export left in ``out``, and nothing else.

    Each rank deletes its own shards and manifests; rank 0 also deletes the
    shards of ranks this run does not have (an earlier run with more
    processes) and the folder-level files (``_run.json``, ``_errors.jsonl``,
    ``index.csv``), which this run writes again. No rank touches another
    live rank's files, so the ranks need not wait for one another. Files
    that are not part of an export are left alone.

    Args:
        out: The output folder.
        rank: This process's rank (hold its lock first: :meth:`RankState.lock`).
        world_size: Number of processes of this run.

    Returns:
        The paths deleted.
    """
    doomed: list[str] = []
    for path in glob.glob(os.path.join(glob.escape(out), "part-r*")) + glob.glob(
            os.path.join(glob.escape(out), MANIFESTS, "part-r*")):
        m = _SHARD_RE.match(os.path.basename(path))
        if m and (int(m.group(1)) == rank or (rank == 0 and int(m.group(1)) >= world_size)):
            doomed.append(path)
    if rank == 0:
        doomed += [p for p in (os.path.join(out, n) for n in (RUN_FILE, ERRORS_FILE, INDEX_FILE)) if os.path.exists(p)]
    for path in doomed:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    return doomed


def any_shards(out: str, rank: int | None = None) -> bool:
    """Whether ``out`` holds any committed or half-committed shard (of one rank, or of any)."""
    pattern = "part-r*" if rank is None else f"part-r{rank:05d}-*"
    return bool(glob.glob(os.path.join(glob.escape(out), MANIFESTS, pattern + ".json"))
                or glob.glob(os.path.join(glob.escape(out), pattern)))


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


class RankState:
    """The shards of one rank in an output folder: scanning for resume, and committing new ones.

    Args:
        out: Output folder.
        rank: This process's rank.
        fmt: Shard format name.
    """

    def __init__(self, out: str, rank: int, fmt: str) -> None:
        self.out = out
        self.rank = rank
        self.format = get_format(fmt)
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Make sure no other process writes this rank's shards into the same folder.

        Raises:
            ExportStateError: Another ``facepcl embed`` holds the lock.
        """
        import fcntl

        path = os.path.join(self.out, MANIFESTS, f".lock-r{self.rank:05d}")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise output_error(e, path) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ExportStateError(f"another facepcl embed is writing rank {self.rank} of {self.out}; wait for it "
                                   "to finish, or stop it, before running again on this folder") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _manifest_path(self, shard: int) -> str:
        return os.path.join(self.out, MANIFESTS, shard_name(self.rank, shard) + ".json")

    def _data_path(self, shard: int) -> str:
        return os.path.join(self.out, shard_name(self.rank, shard) + self.format.suffix)

    def scan(self) -> ResumePoint:
        """Clean what a killed run left half-written and find where to continue.

        Raises:
            ExportStateError: Shards are missing from the middle, a data file
                has no manifest, or files of another format are present.
        """
        prefix = shard_name(self.rank, 0)[: len("part-r00000-")]
        for tmp in (glob.glob(os.path.join(glob.escape(self.out), f".{prefix}*.tmp-*"))
                    + glob.glob(os.path.join(glob.escape(self.out), MANIFESTS, f".{prefix}*.tmp-*"))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        data = {}
        for path in glob.glob(os.path.join(glob.escape(self.out), prefix + "*")):
            m = _SHARD_RE.match(os.path.basename(path))
            if not m:
                continue
            if not path.endswith(self.format.suffix):
                raise ExportStateError(f"{path} is not a {self.format.name} shard, but this run writes "
                                       f"{self.format.name}; resume with the format the folder was written in")
            data[int(m.group(2))] = path
        manifests = {}
        for path in glob.glob(os.path.join(glob.escape(self.out), MANIFESTS, prefix + "*.json")):
            m = _SHARD_RE.match(os.path.basename(path))
            if m:
                manifests[int(m.group(2))] = path
        for shard in sorted(set(manifests) - set(data)):
            os.unlink(manifests[shard])  # its data file never landed: the shard was in flight
            del manifests[shard]
        orphans = sorted(set(data) - set(manifests))
        if orphans:
            raise ExportStateError(f"{data[orphans[0]]} has no manifest in {os.path.join(self.out, MANIFESTS)}; "
                                   "the folder was changed by hand, so what is done cannot be known. Restore the "
                                   "manifests or start a new folder")
        point = ResumePoint()
        for expected, shard in enumerate(sorted(manifests)):
            if shard != expected:
                raise ExportStateError(f"shard {shard_name(self.rank, expected)} of {self.out} is missing while "
                                       f"later shards exist; its rows would be lost. Restore it or start a new "
                                       "folder")
            man = read_manifest(manifests[shard])
            if Cursor(**man["start"]) != point.cursor:
                raise ExportStateError(f"{manifests[shard]} does not continue where the shard before it ended; the "
                                       "folder was changed by hand. Start a new folder")
            point.cursor = Cursor(**man["end"])
            point.next_shard = shard + 1
            point.done.add(Stats(**man["stats"]))
            point.rows += man["rows"]
        return point

    def commit(self, shard: int, cols: dict[str, Any], features: list[str], dim: int, metadata: dict,
               start: Cursor, end: Cursor, stats: Stats, errors: list[dict],
               inputs: list[list[int]] | None = None) -> None:
        """Write one shard: manifest first, then the data file (the commit point).

        The data file is written whole under a temporary name, fsynced and
        renamed into place; only then is the shard committed. The manifest
        holds the cursor (the inputs it finishes) and is ignored, and removed
        by :meth:`scan`, until its data file exists: an input is marked
        finished only together with its rows.

        Args:
            inputs: ``[item, size, mtime_ns]`` of each input this shard
                finishes, so that ``--resume`` notices changed files.

        Raises:
            ExportStateError: The write failed (disk full, folder not
                writable); nothing of this shard is committed.
        """
        name = shard_name(self.rank, shard)
        manifest = {"shard": shard, "rank": self.rank, "file": name + self.format.suffix,
                    "rows": len(cols["path"]), "start": asdict(start), "end": asdict(end),
                    "stats": asdict(stats), "errors": errors, "inputs": inputs or []}
        text = json.dumps(manifest) + "\n"
        path = self._manifest_path(shard)
        try:
            write_atomic(path, lambda tmp: _write_text(tmp, text))
            path = self._data_path(shard)
            write_atomic(path, lambda tmp: self.format.write(cols, tmp, features, dim, metadata))
        except OSError as e:
            raise output_error(e, path) from e

    def iter_stamps(self) -> Iterator[tuple[int, int, int]]:
        """``(item, size, mtime_ns)`` of every input the committed shards finished, in input order."""
        prefix = shard_name(self.rank, 0)[: len("part-r00000-")]
        paths = sorted(glob.glob(os.path.join(glob.escape(self.out), MANIFESTS, prefix + "*.json")))
        for path in paths:
            if os.path.exists(os.path.join(self.out, os.path.basename(path)[:-len(".json")] + self.format.suffix)):
                yield from (tuple(stamp) for stamp in read_manifest(path).get("inputs", []))


def read_manifest(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def committed_manifests(out: str) -> dict[int, list[str]]:
    """Manifest paths of committed shards, per rank, in shard order."""
    per_rank: dict[int, list[tuple[int, str]]] = {}
    for path in glob.glob(os.path.join(glob.escape(out), MANIFESTS, "part-r*.json")):
        m = _SHARD_RE.match(os.path.basename(path))
        if not m:
            continue
        man = read_manifest(path)
        if os.path.exists(os.path.join(out, man["file"])):
            per_rank.setdefault(int(m.group(1)), []).append((int(m.group(2)), path))
    return {r: [p for _, p in sorted(v)] for r, v in sorted(per_rank.items())}


def iter_errors(out: str) -> Iterator[dict]:
    """Every error record of the committed shards of all ranks, ordered by (item, frame)."""

    def rank_errors(paths: list[str]) -> Iterator[tuple[int, int, dict]]:
        for path in paths:
            for rec in read_manifest(path)["errors"]:
                yield rec["item"], rec.get("frame", -1), rec

    streams = [rank_errors(p) for p in committed_manifests(out).values()]
    for _, _, rec in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
        yield rec


def write_errors(out: str) -> int:
    """Rebuild ``_errors.jsonl`` from the manifests; returns the number of records."""
    n = 0

    def write(tmp: str) -> None:
        nonlocal n
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in iter_errors(out):
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1

    write_atomic(os.path.join(out, ERRORS_FILE), write)
    return n


def dataset_totals(out: str) -> tuple[Stats, int]:
    """Counts and rows summed over the committed shards of all ranks."""
    stats, rows = Stats(), 0
    for paths in committed_manifests(out).values():
        for path in paths:
            man = read_manifest(path)
            stats.add(Stats(**man["stats"]))
            rows += man["rows"]
    return stats, rows


def write_index(out: str, fmt: str) -> None:
    """Write ``index.csv`` (file, row, item, path, frame, timestamp, face_index) for npz/safetensors shards."""
    import csv

    f_obj = get_format(fmt)

    def rank_rows(paths: list[str]) -> Iterator[tuple[int, int, int, list]]:
        for path in paths:
            name = read_manifest(path)["file"]
            cols, _ = f_obj.read(os.path.join(out, name), INDEX_COLUMNS)
            for row in range(len(cols["path"])):
                item, frame, face = int(cols["item"][row]), int(cols["frame"][row]), int(cols["face_index"][row])
                yield item, frame, face, [name, row, item, cols["path"][row], frame,
                                          repr(float(cols["timestamp"][row])), face]

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "row", "item", "path", "frame", "timestamp", "face_index"])
            streams = [rank_rows(p) for p in committed_manifests(out).values()]
            for *_, row in heapq.merge(*streams, key=lambda t: t[:3]):
                w.writerow(row)

    write_atomic(os.path.join(out, INDEX_FILE), write)
