"""The output folder of ``facepcl embed``: its layout, its lock, its settings, resuming, and committing a shard.

Layout of ``OUT``::

    _run.json                          settings every rank and every resumed run must share
    part-r00000-000000.parquet         data shards: rank 0, shard 0 (.npz / .safetensors for other formats)
    _manifests/part-r00000-000000.json what each shard covers: ``file``, ``rows``, the data file's ``size``
                                       and ``sha256``, cursor range, counts, skipped inputs, input stamps
    _manifests/.lock-r00000            the writer lock of rank 0 (an ``flock`` locally, a leased object on
                                       object stores: :mod:`facepcl.io.storage`)
    _errors.jsonl                      every skipped input or frame with its reason (rebuilt from the manifests)
    index.csv                          (npz / safetensors only) file and row of every face

Names starting with ``_`` or ``.`` are ignored by Parquet dataset readers
(pyarrow, pandas, Spark), so ``OUT`` itself reads as one table.

Each rank processes its inputs in stream order and commits shards in order,
so what a rank has done is a prefix of its inputs, described by the end
cursor of its last good shard. Resuming continues right after that cursor:
nothing is repeated and nothing is skipped. See :meth:`ExportFolder.commit`
for the commit protocol and :meth:`ExportFolder.resume` for what counts as
a good shard.

``OUT`` is a local folder or an object-store URL (``s3://bucket/prefix``);
every file is named, written, listed and deleted through its
:class:`~facepcl.io.storage.Store`, which keeps the same guarantees on both
(docs/object-stores.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from .._utils.folders import FolderLockedError
from .._utils.settings import SettingsError, guard_settings
from ..errors import OutputError
from ..io.inputs import InputItem
from ..io.storage import StorageError, StorageLockedError, open_store
from ._dataset import committed_shards, write_errors, write_index
from ._formats import get_format
from ._layout import (
    ERRORS_FILE,
    FIX_DAMAGED,
    INDEX_FILE,
    MANIFESTS,
    RESUME_KEYS,
    RUN_FILE,
    SHARD_RE,
    any_shards,
    read_manifest,
    shard_name,
)
from ._resume import skip_done
from ._tracks import TRACKS_FILE, write_summary
from ._types import Cursor, ExportStateError, ResumePoint, Stats, output_error


class ExportFolder:
    """One rank's view of an export folder: the only code that names, writes or deletes its files.

    Args:
        out: The output folder: a local path or an object-store URL.
        fmt: Shard format name ("parquet", "npz", "safetensors").
        rank: This process's rank.
        world_size: Number of processes of this run.
        storage_options: fsspec filesystem arguments for an object-store URL (never written anywhere).
    """

    def __init__(self, out: str, fmt: str = "parquet", rank: int = 0, world_size: int = 1,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.out = out
        self.store = open_store(out, storage_options)
        self.format = get_format(fmt)
        self.rank = rank
        self.world_size = world_size
        self._lock = self.store.lock(f"{MANIFESTS}/.lock-r{rank:05d}", f"rank {rank} of a facepcl embed export")

    # layout

    def path(self, name: str) -> str:
        """A folder-level file (``RUN_FILE``, ``ERRORS_FILE``, ``INDEX_FILE``) or folder (``MANIFESTS``)."""
        return self.store.url(name)

    def data_name(self, shard: int) -> str:
        return shard_name(self.rank, shard) + self.format.suffix

    def manifest_name(self, shard: int) -> str:
        return f"{MANIFESTS}/{shard_name(self.rank, shard)}.json"

    def data_path(self, shard: int) -> str:
        return self.store.url(self.data_name(shard))

    def _prefix(self) -> str:
        return shard_name(self.rank, 0)[: len("part-r00000-")]

    # lock

    def lock(self) -> None:
        """Make sure no other process writes this rank's shards into the same folder (until :meth:`unlock`).

        Raises:
            ExportStateError: The folder cannot be created or written.
            FolderLockedError, StorageLockedError: Another process holds this rank's lock (the message names it).
        """
        try:
            self.store.makedirs(MANIFESTS)
        except OSError as e:
            raise output_error(e, self.path(MANIFESTS)) from e
        try:
            self._lock.acquire()
        except (FolderLockedError, StorageError):
            raise
        except OutputError as e:
            raise ExportStateError(f"{e}; the output folder is not writable: fix its permissions or choose another "
                                   "-o folder") from None

    def unlock(self) -> None:
        self._lock.release()

    # settings

    def check_fresh(self, resume: bool) -> None:
        """Refuse to start over in a folder that holds this rank's shards, unless resuming.

        Raises:
            ExportStateError: It does, and ``resume`` is False.
        """
        if not resume and any_shards(self.store, self.rank):
            raise ExportStateError(f"{self.out} already holds shards of an export; pass --resume to continue it, "
                                   "--overwrite to delete it and start over, or choose a new output folder")

    def write_settings(self, settings: dict[str, Any], resume: bool, overwrite: bool = False) -> None:
        """Write ``_run.json`` or check it against this run's settings.

        Args:
            settings: JSON-able settings that decide the rows (model, features, format, every, ...).
            resume: Whether ``--resume`` was given.
            overwrite: ``--overwrite``: the previous export is being cleared
                (:meth:`clear`), so its settings are not compared.

        Raises:
            ExportStateError: The folder holds an export made with other
                settings, holds this rank's shards and ``--resume`` was not
                given, ``_run.json`` is damaged, or it cannot be written.
        """
        path = self.path(RUN_FILE)

        def differ(lines: list[str]) -> ExportStateError:
            return ExportStateError(
                f"{self.out} was written with other settings, so its rows would not match: {'; '.join(lines)}. "
                "Resume with the same options (and the same number of torchrun processes), or write to a new folder")

        try:
            self.store.makedirs(MANIFESTS)
            if not overwrite:
                self.check_fresh(resume)
            # Every rank writes the same bytes, so concurrent writers cannot leave a mixed file.
            guard_settings(path, settings, compare=not overwrite and any_shards(self.store), damaged_fix=FIX_DAMAGED,
                           differ=differ, read=lambda: self.store.read_bytes(RUN_FILE),
                           write=lambda fill: self.store.write_file(RUN_FILE, fill))
        except SettingsError as e:
            raise ExportStateError(str(e)) from None
        except OSError as e:
            raise output_error(e, e.filename or path) from e

    def clear(self) -> list[str]:
        """``--overwrite``: delete what an earlier export left in the folder, and nothing else.

        Each rank deletes its own shards and manifests; rank 0 also deletes the
        shards of ranks this run does not have (an earlier run with more
        processes) and the folder-level files (``_run.json``, ``_errors.jsonl``,
        ``index.csv``), which this run writes again. No rank touches another
        live rank's files, so the ranks need not wait for one another. Files
        that are not part of an export are left alone. Hold the lock first.

        Returns:
            The paths deleted.

        Raises:
            ExportStateError: A file cannot be deleted (the message names it).
        """
        doomed: list[str] = []
        top = self.store.names()
        for name in ([n for n in top if n.startswith("part-r")]
                     + [f"{MANIFESTS}/{n}" for n in self.store.names(MANIFESTS) if n.startswith("part-r")]):
            m = SHARD_RE.match(os.path.basename(name))
            if m and (int(m.group(1)) == self.rank or (self.rank == 0 and int(m.group(1)) >= self.world_size)):
                doomed.append(name)
        if self.rank == 0:
            doomed += [n for n in (RUN_FILE, ERRORS_FILE, INDEX_FILE, TRACKS_FILE) if n in top]
        for name in doomed:
            try:
                self.store.delete(name)
            except OSError as e:
                raise ExportStateError(f"--overwrite cannot delete {self.store.url(name)} ({e.strerror}); the output "
                                       "folder is not writable: fix its permissions or choose another -o folder"
                                       ) from None
        return [self.store.url(n) for n in doomed]

    # resume

    def _listing(self) -> tuple[dict[int, str], dict[int, str]]:
        """(data file name by shard number, manifest name by shard number) of this rank."""
        prefix = self._prefix()
        data = {}
        for name in self.store.names():
            m = SHARD_RE.match(name)
            if not m or not name.startswith(prefix):
                continue
            if not name.endswith(self.format.suffix):
                raise ExportStateError(f"{self.store.url(name)} is not a {self.format.name} shard, but this run "
                                       f"writes {self.format.name}; resume with the format the folder was written in")
            data[int(m.group(2))] = name
        manifests = {}
        for name in self.store.names(MANIFESTS):
            m = SHARD_RE.match(name)
            if m and name.startswith(prefix) and name.endswith(".json"):
                manifests[int(m.group(2))] = f"{MANIFESTS}/{name}"
        return data, manifests

    def resume(self) -> ResumePoint:
        """Clean what a killed run left, verify this rank's shards, and find where to continue.

        A shard is good when its manifest is intact, continues where the
        shard before it ended, and its data file matches the manifest's
        record (size and SHA-256: a truncated or partial copy, an empty file
        or a bit flip fails). The first shard that is not good is dropped
        with every later shard of this rank (their files are deleted), and
        the run continues from its start cursor; each dropped shard is listed
        in :attr:`ResumePoint.redone` with its problem. A last shard whose
        data file is missing was in flight when a run died: dropped silently.
        Data files after the last manifest cannot be verified and are
        deleted and redone: a partial copy of a local folder, or on an object
        store a data object whose manifest was never uploaded (an orphan).

        Raises:
            ExportStateError: Shards are missing from the middle, a data file
                before the last manifest has none, a manifest is damaged, or
                files of another format are present.
        """
        self.store.sweep((self._prefix(), f"{MANIFESTS}/{self._prefix()}"))
        data, manifests = self._listing()
        point = ResumePoint()
        last = max(manifests, default=-1)
        why = ("it has no manifest (its upload never finished)" if self.store.object_store else
               "it has no manifest")
        for shard in sorted(set(data) - set(manifests)):
            if shard > last:  # after every manifest: unverifiable, so redone
                name = data.pop(shard)
                point.redone.append((name, why))
                self.store.delete(name)
        orphans = sorted(set(data) - set(manifests))
        if orphans:
            raise ExportStateError(f"{self.store.url(data[orphans[0]])} has no manifest in {self.path(MANIFESTS)}; "
                                   "the folder was changed by hand, so what is done cannot be known. Restore the "
                                   "manifests or start a new folder")
        order = sorted(manifests)
        for expected, shard in enumerate(order):
            if shard != expected:
                raise ExportStateError(f"shard {shard_name(self.rank, expected)} of {self.out} is missing while "
                                       "later shards exist; its rows would be lost. Restore it or start a new folder")
            if shard == order[-1] and shard not in data:
                self._drop([shard], data, manifests, point)  # in flight when a run stopped
                break
            man = read_manifest(manifests[shard], RESUME_KEYS, store=self.store)
            if Cursor(**man["start"]) != point.cursor:
                raise ExportStateError(f"{self.store.url(manifests[shard])} does not continue where the shard before "
                                       f"it ended (the folder was changed by hand); {FIX_DAMAGED}")
            problem = self._problem(shard, man)
            if problem is not None:
                point.redone.append((self.data_name(shard), problem))
                self._drop(order[expected:], data, manifests, point)
                break
            point.cursor = Cursor(**man["end"])
            point.next_shard = shard + 1
            point.done.add(Stats(**man["stats"]))
            point.rows += man["rows"]
            point.manifests.append(manifests[shard])
            point.tracking = man.get("tracking")
        return point

    def _problem(self, shard: int, man: dict[str, Any]) -> str | None:
        name = self.data_name(shard)
        if "sha256" not in man:  # written before manifests recorded their data file: the file must be there
            return None if self.store.exists(name) else "missing"
        return self.store.check(name, man)

    def _drop(self, shards: list[int], data: dict[int, str], manifests: dict[int, str], point: ResumePoint) -> None:
        for later in shards[1:]:
            if later in data:
                point.redone.append((data[later], "comes after a shard that is redone"))
        for shard in shards:
            for name in (manifests.get(shard), data.get(shard)):
                if name is not None:
                    self.store.delete(name)

    def pending(self, items: Iterator[InputItem], point: ResumePoint,
                storage_options: dict[str, Any] | None = None) -> Iterator[InputItem]:
        """The inputs still to do after ``point``, proving the inputs up to its cursor are unchanged.

        Raises:
            ExportStateError: (while iterating) the inputs differ from the run being resumed.
        """
        return skip_done(items, point.cursor, self._stamps(point), storage_options)

    def _stamps(self, point: ResumePoint) -> Iterator[tuple[int, int, int]]:
        for name in point.manifests:
            yield from (tuple(stamp) for stamp in read_manifest(name, store=self.store).get("inputs", []))

    # commit

    def commit(self, shard: int, cols: dict[str, Any], features: list[str], dim: int, metadata: dict,
               start: Cursor, end: Cursor, stats: Stats, errors: list[dict],
               inputs: list[list[int]] | None = None, tracking: dict | None = None) -> None:
        """Write one shard: its data file, and the manifest that records it (see :meth:`Store.commit`).

        Locally the data file is written whole under a hidden temporary name
        and fsynced; its size and SHA-256 are recorded in the manifest, which
        is written atomically; finally the data file is renamed to its name.
        That rename is the commit point: a manifest whose data file is missing
        is a shard that was in flight and :meth:`resume` drops it. On an
        object store the data object is uploaded (retried on transient
        failures, its size checked), then the manifest: the manifest's upload
        is the commit point, and a data object without one is deleted by
        :meth:`resume`. Either way the manifest holds the cursor (the inputs
        the shard finishes), so an input is marked finished only together
        with its rows, and the record lets every later reader prove the data
        file is the one committed. A failed write, fsync or upload fails the
        commit, and nothing of the shard is committed.

        Args:
            shard: Shard number (consecutive from 0 per rank).
            cols: Columns of the rows (see :class:`facepcl.export._formats.RowBuffer`).
            features: Feature columns stored.
            dim: Feature length.
            metadata: Provenance stored in the data file.
            start: Cursor where the shard begins (the end of the shard before).
            end: Cursor where it ends.
            stats: Its counts.
            errors: Its skipped-input records.
            inputs: ``[item, size, mtime_ns]`` of each input it finishes, so
                that ``--resume`` notices changed files.
            tracking: The tracker's state at the shard's end (continues a video on ``--resume``).

        Raises:
            ExportStateError: The write failed (disk full, I/O error, folder not
                writable, upload failed after its retries); nothing of this shard is committed.
            StorageLockedError: Another writer took this rank's lock over.
        """
        name = self.data_name(shard)

        def describe(record: dict[str, Any]) -> str:
            manifest = {"shard": shard, "rank": self.rank, "file": name, "rows": len(cols["path"]),
                        **record, "start": asdict(start), "end": asdict(end),
                        "stats": asdict(stats), "errors": errors, "inputs": inputs or []}
            if tracking is not None:
                manifest["tracking"] = tracking
            return json.dumps(manifest) + "\n"

        try:
            self.store.commit(name, lambda tmp: self.format.write(cols, tmp, features, dim, metadata),
                              self.manifest_name(shard), describe, check=self._lock.check)
        except StorageLockedError:
            raise
        except StorageError as e:
            raise ExportStateError(f"{e}; shard {name} was not committed") from e
        except OSError as e:
            raise output_error(e, self.data_path(shard)) from e

    # the whole folder

    def finish(self) -> None:
        """Rebuild the folder-level files (rank 0 only): ``_errors.jsonl``, ``index.csv``, ``_tracks.parquet``.

        Raises:
            ExportStateError: They cannot be written.
        """
        if self.rank != 0:
            return
        try:
            shards = committed_shards(self.store, verify=False)  # one listing (one GET per manifest) for all three
            write_errors(self.store, shards)
            if self.format.name != "parquet":
                write_index(self.store, self.format.name, shards)
            write_summary(self.store, shards)
        except StorageError as e:
            raise ExportStateError(str(e)) from e
        except OSError as e:
            raise output_error(e, e.filename or self.out) from e
