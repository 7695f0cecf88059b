"""The output folder of ``facepcl embed``: its layout, its lock, its settings, resuming, and committing a shard.

Layout of ``OUT``::

    _run.json                          settings every rank and every resumed run must share
    part-r00000-000000.parquet         data shards: rank 0, shard 0 (.npz / .safetensors for other formats)
    _manifests/part-r00000-000000.json what each shard covers: ``file``, ``rows``, the data file's ``size``
                                       and ``sha256``, cursor range, counts, skipped inputs, input stamps
    _manifests/.lock-r00000            the writer lock of rank 0 (:class:`~facepcl._utils.folders.FolderLock`)
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
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from .._utils.atomic import _FILE_MODE, atomic_write, fsync_path
from .._utils.folders import FolderLock, FolderLockedError, check_file, file_record
from .._utils.settings import SettingsError, guard_settings
from ..errors import OutputError
from ..io.inputs import InputItem
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


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


class ExportFolder:
    """One rank's view of an export folder: the only code that names, writes or deletes its files.

    Args:
        out: The output folder.
        fmt: Shard format name ("parquet", "npz", "safetensors").
        rank: This process's rank.
        world_size: Number of processes of this run.
    """

    def __init__(self, out: str, fmt: str = "parquet", rank: int = 0, world_size: int = 1) -> None:
        self.out = out
        self.format = get_format(fmt)
        self.rank = rank
        self.world_size = world_size
        self._lock = FolderLock(os.path.join(out, MANIFESTS), f"rank {rank} of a facepcl embed export",
                                name=f".lock-r{rank:05d}")

    # layout

    def path(self, name: str) -> str:
        """A folder-level file (``RUN_FILE``, ``ERRORS_FILE``, ``INDEX_FILE``) or folder (``MANIFESTS``)."""
        return os.path.join(self.out, name)

    def data_path(self, shard: int) -> str:
        return os.path.join(self.out, shard_name(self.rank, shard) + self.format.suffix)

    def manifest_path(self, shard: int) -> str:
        return os.path.join(self.out, MANIFESTS, shard_name(self.rank, shard) + ".json")

    def _prefix(self) -> str:
        return shard_name(self.rank, 0)[: len("part-r00000-")]

    # lock

    def lock(self) -> None:
        """Make sure no other process writes this rank's shards into the same folder (until :meth:`unlock`).

        Raises:
            ExportStateError: The folder cannot be created or written.
            FolderLockedError: Another process holds this rank's lock (the message names it).
        """
        manifests = self.path(MANIFESTS)
        try:
            os.makedirs(manifests, exist_ok=True)
        except OSError as e:
            raise output_error(e, manifests) from e
        try:
            self._lock.acquire()
        except FolderLockedError:
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
        if not resume and any_shards(self.out, self.rank):
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
            os.makedirs(self.path(MANIFESTS), exist_ok=True)
            if not overwrite:
                self.check_fresh(resume)
            # Every rank writes the same bytes, so concurrent writers cannot leave a mixed file.
            guard_settings(path, settings, compare=not overwrite and any_shards(self.out), damaged_fix=FIX_DAMAGED,
                           differ=differ)
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
        for path in glob.glob(os.path.join(glob.escape(self.out), "part-r*")) + glob.glob(
                os.path.join(glob.escape(self.out), MANIFESTS, "part-r*")):
            m = SHARD_RE.match(os.path.basename(path))
            if m and (int(m.group(1)) == self.rank or (self.rank == 0 and int(m.group(1)) >= self.world_size)):
                doomed.append(path)
        if self.rank == 0:
            doomed += [p for p in map(self.path, (RUN_FILE, ERRORS_FILE, INDEX_FILE, TRACKS_FILE)) if os.path.exists(p)]
        for path in doomed:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise ExportStateError(f"--overwrite cannot delete {path} ({e.strerror}); the output folder is not "
                                       "writable: fix its permissions or choose another -o folder") from None
        return doomed

    # resume

    def _sweep(self) -> None:
        """Delete this rank's temporaries (what a killed write left)."""
        prefix = self._prefix()
        for tmp in (glob.glob(os.path.join(glob.escape(self.out), f".{prefix}*.tmp-*"))
                    + glob.glob(os.path.join(glob.escape(self.out), MANIFESTS, f".{prefix}*.tmp-*"))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _listing(self) -> tuple[dict[int, str], dict[int, str]]:
        """(data file by shard number, manifest by shard number) of this rank."""
        prefix = self._prefix()
        data = {}
        for path in glob.glob(os.path.join(glob.escape(self.out), prefix + "*")):
            m = SHARD_RE.match(os.path.basename(path))
            if not m:
                continue
            if not path.endswith(self.format.suffix):
                raise ExportStateError(f"{path} is not a {self.format.name} shard, but this run writes "
                                       f"{self.format.name}; resume with the format the folder was written in")
            data[int(m.group(2))] = path
        manifests = {}
        for path in glob.glob(os.path.join(glob.escape(self.out), MANIFESTS, prefix + "*.json")):
            m = SHARD_RE.match(os.path.basename(path))
            if m:
                manifests[int(m.group(2))] = path
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
        Data files after the last manifest (a partial copy of the folder)
        cannot be verified and are redone too.

        Raises:
            ExportStateError: Shards are missing from the middle, a data file
                before the last manifest has none, a manifest is damaged, or
                files of another format are present.
        """
        self._sweep()
        data, manifests = self._listing()
        point = ResumePoint()
        last = max(manifests, default=-1)
        for shard in sorted(set(data) - set(manifests)):
            if shard > last:  # after every manifest (a partial copy of OUT): unverifiable, so redone
                point.redone.append((os.path.basename(data.pop(shard)), "it has no manifest"))
                os.unlink(self.data_path(shard))
        orphans = sorted(set(data) - set(manifests))
        if orphans:
            raise ExportStateError(f"{data[orphans[0]]} has no manifest in {self.path(MANIFESTS)}; the folder was "
                                   "changed by hand, so what is done cannot be known. Restore the manifests or "
                                   "start a new folder")
        order = sorted(manifests)
        for expected, shard in enumerate(order):
            if shard != expected:
                raise ExportStateError(f"shard {shard_name(self.rank, expected)} of {self.out} is missing while "
                                       "later shards exist; its rows would be lost. Restore it or start a new folder")
            if shard == order[-1] and shard not in data:
                self._drop([shard], data, manifests, point)  # in flight when a run stopped
                break
            man = read_manifest(manifests[shard], RESUME_KEYS)
            if Cursor(**man["start"]) != point.cursor:
                raise ExportStateError(f"{manifests[shard]} does not continue where the shard before it ended (the "
                                       f"folder was changed by hand); {FIX_DAMAGED}")
            problem = self._problem(shard, man)
            if problem is not None:
                point.redone.append((os.path.basename(self.data_path(shard)), problem))
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
        path = self.data_path(shard)
        if "sha256" not in man:  # written before manifests recorded their data file: the file must be there
            return None if os.path.exists(path) else "missing"
        return check_file(path, man)

    def _drop(self, shards: list[int], data: dict[int, str], manifests: dict[int, str], point: ResumePoint) -> None:
        for later in shards[1:]:
            if later in data:
                point.redone.append((os.path.basename(data[later]), "comes after a shard that is redone"))
        for shard in shards:
            for path in (manifests.get(shard), data.get(shard)):
                if path is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)

    def pending(self, items: Iterator[InputItem], point: ResumePoint) -> Iterator[InputItem]:
        """The inputs still to do after ``point``, proving the inputs up to its cursor are unchanged.

        Raises:
            ExportStateError: (while iterating) the inputs differ from the run being resumed.
        """
        return skip_done(items, point.cursor, self._stamps(point))

    def _stamps(self, point: ResumePoint) -> Iterator[tuple[int, int, int]]:
        for path in point.manifests:
            yield from (tuple(stamp) for stamp in read_manifest(path).get("inputs", []))

    # commit

    def commit(self, shard: int, cols: dict[str, Any], features: list[str], dim: int, metadata: dict,
               start: Cursor, end: Cursor, stats: Stats, errors: list[dict],
               inputs: list[list[int]] | None = None, tracking: dict | None = None) -> None:
        """Write one shard: data to a temporary name, then its manifest, then the data renamed into place.

        Order and why: the data file is written whole under a hidden
        temporary name and fsynced; its size and SHA-256 are recorded in the
        manifest, which is written atomically (fsynced, renamed); finally the
        data file is renamed to its name. That rename is the commit point: a
        manifest whose data file is missing is a shard that was in flight and
        :meth:`resume` drops it, and a data file without a manifest is never
        left by this protocol (it means the folder was changed by hand). The
        manifest holds the cursor (the inputs the shard finishes), so an input
        is marked finished only together with its rows, and the record lets
        every later reader prove the data file is the one committed. A failed
        write or fsync (EIO, ENOSPC) fails the commit: the temporary file is
        removed and nothing of the shard is committed.

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
                writable); nothing of this shard is committed.
        """
        dest = self.data_path(shard)
        folder, name = os.path.split(dest)
        tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        manifest_path = self.manifest_path(shard)
        wrote_manifest = False
        try:
            self.format.write(cols, tmp, features, dim, metadata)
            os.chmod(tmp, _FILE_MODE)  # some writers (safetensors) create owner-only files
            fsync_path(tmp)
            manifest = {"shard": shard, "rank": self.rank, "file": name, "rows": len(cols["path"]),
                        **file_record(tmp), "start": asdict(start), "end": asdict(end),
                        "stats": asdict(stats), "errors": errors, "inputs": inputs or []}
            if tracking is not None:
                manifest["tracking"] = tracking
            text = json.dumps(manifest) + "\n"
            try:
                atomic_write(manifest_path, lambda t: _write_text(t, text))
            except OSError as e:
                raise output_error(e, manifest_path) from e
            wrote_manifest = True
            os.replace(tmp, dest)
            fsync_path(folder, directory=True)
        except OSError as e:
            if wrote_manifest and not os.path.exists(dest):
                with contextlib.suppress(OSError):
                    os.unlink(manifest_path)
            raise output_error(e, dest) from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # the whole folder

    def finish(self) -> None:
        """Rebuild the folder-level files (rank 0 only): ``_errors.jsonl``, ``index.csv``, ``_tracks.parquet``.

        Raises:
            ExportStateError: They cannot be written.
        """
        if self.rank != 0:
            return
        try:
            write_errors(self.out)
            if self.format.name != "parquet":
                write_index(self.out, self.format.name)
            write_summary(self.out, committed_shards(self.out, verify=False))
        except OSError as e:
            raise output_error(e, e.filename or self.out) from e
