"""The state of a ``facepcl prepare`` output folder: its settings, and which sources are done.

``OUT/_prepare/`` (skipped by ``facepcl train``, which ignores folders
starting with ``_``) holds:

- ``settings.json``: what the frames depend on (frame size, template,
  sampling, detector, tracking); a run on a folder made with other settings
  refuses to mix them (:func:`facepcl._utils.settings.guard_settings`, the
  guard of every folder facepcl writes);
- ``.lock-rRRRRR``: the writer lock of shard RRRRR
  (:class:`facepcl._utils.folders.FolderLock`): two runs of one shard into
  one folder are refused;
- ``ledger-rRRRRR.jsonl``: one line per finished source written by shard
  RRRRR (``ok``, ``no_face`` or ``error`` with the reason), appended and
  flushed after the source's track folder was renamed into place;
- ``work-rRRRRR/``: the track being written (cleared when the shard starts).

Each track's ``track.json`` is its manifest: besides the provenance it
records the size and SHA-256 of every frame file (``files``). A source is
done when a ledger names it or when its track folder (with its
``track.json``) exists: a run killed between the rename and the ledger line
does not redo it. On resuming, a done track whose files no longer match the
sizes its manifest records (a truncated or partial copy) is redone, with a
warning naming it; :func:`read_manifest` with ``verify=True`` checks the
SHA-256 too. A source that was in flight is redone from its first frame, so
a resumed run writes the same files as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from .._utils.atomic import atomic_write, fsync_path
from .._utils.folders import FolderLock, check_file, file_record
from .._utils.settings import SettingsError, guard_settings, read_settings

STATE_DIR = "_prepare"
TRACK_FILE = "track.json"


class PrepareStateError(ValueError):
    """The output folder holds a run made with other settings, or cannot be used as asked."""


def state_dir(out: str) -> str:
    return os.path.join(out, STATE_DIR)


def check_settings(out: str, settings: dict[str, Any]) -> None:
    """Write ``settings.json``, or check that the one there matches.

    Raises:
        PrepareStateError: ``out`` was prepared with other settings, or its settings file is damaged.
    """
    path = os.path.join(state_dir(out), "settings.json")

    def differ(lines: list[str]) -> PrepareStateError:
        return PrepareStateError(
            f"{out}: was prepared with other settings ({'; '.join(lines)}; see {path}); frames made with different "
            "settings must not mix: use another output folder, or the same settings to continue that run")

    try:
        guard_settings(path, settings, differ=differ,
                       damaged_fix="restore it, or delete it if the tracks in the folder were made with this "
                                   "run's settings")
    except SettingsError as e:
        raise PrepareStateError(str(e)) from None


def lock(out: str, shard: int) -> FolderLock:
    """Hold this shard's writer lock on ``out`` (release it when the run ends).

    Raises:
        FolderLockedError: Another process is preparing the same shard into ``out``.
        OutputError: The folder cannot be written.
    """
    return FolderLock(state_dir(out), "facepcl prepare output", name=f".lock-r{shard:05d}").acquire()


def check_outside_inputs(out: str, inputs: list[str]) -> None:
    """Refuse an output folder inside (or equal to) an input folder.

    Its tracks would be walked as sources by the next run on the same
    inputs and prepared again as a new identity.

    Raises:
        PrepareStateError: Naming both folders and the fix.
    """
    real_out = os.path.realpath(out)
    for arg in inputs:
        if not os.path.isdir(arg):
            continue
        real_in = os.path.realpath(arg)
        if real_out == real_in or real_out.startswith(real_in.rstrip(os.sep) + os.sep):
            raise PrepareStateError(
                f"the output folder {out} is inside the input folder {arg}: the next run on {arg} would read the "
                "prepared tracks back as new sources (a new identity). Choose an output folder outside the inputs")


def write_text(path: str, text: str, durable: bool = True) -> None:
    """Write a text file atomically (see :func:`facepcl._utils.atomic.atomic_write`)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write, durable=durable)


def read_ledgers(out: str) -> dict[int, dict[str, Any]]:
    """The last ledger record of every finished source, by source index (torn last lines are ignored)."""
    done: dict[int, dict[str, Any]] = {}
    folder = state_dir(out)
    if not os.path.isdir(folder):
        return done
    for name in sorted(os.listdir(folder)):
        if not (name.startswith("ledger-") and name.endswith(".jsonl")):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # the line a killed run was writing
                if isinstance(rec, dict) and isinstance(rec.get("index"), int):
                    done[rec["index"]] = rec
    return done


class Ledger:
    """Appends this shard's records, one flushed and fsynced JSON line per finished source."""

    def __init__(self, out: str, shard: int) -> None:
        os.makedirs(state_dir(out), exist_ok=True)
        self.path = os.path.join(state_dir(out), f"ledger-r{shard:05d}.jsonl")
        self.file = open(self.path, "a+b")  # noqa: SIM115 (held for the run, closed by close())
        self.file.seek(0, os.SEEK_END)
        if self.file.tell():
            self.file.seek(-1, os.SEEK_END)
            if self.file.read(1) != b"\n":  # a killed run left half a line: end it, it is ignored on reading
                self.file.write(b"\n")

    def add(self, record: dict[str, Any]) -> None:
        self.file.write((json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def work_dir(out: str, shard: int, fresh: bool = False) -> str:
    """This shard's scratch folder (emptied when ``fresh``)."""
    path = os.path.join(state_dir(out), f"work-r{shard:05d}")
    if fresh and os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)
    return path


def track_done(out: str, key: str) -> bool:
    """Whether the track folder ``OUT/key`` was committed (it holds its ``track.json``)."""
    return os.path.isfile(os.path.join(out, key, TRACK_FILE))


def record_files(folder: str) -> dict[str, dict[str, Any]]:
    """``{name: {"size", "sha256"}}`` of every frame file of a track folder, for its ``track.json``."""
    return {name: file_record(os.path.join(folder, name)) for name in sorted(os.listdir(folder))
            if name != TRACK_FILE and not name.startswith(".")}


def track_problem(out: str, key: str, full: bool = False) -> str | None:
    """What is wrong with the committed track ``OUT/key``, or None when its files match its ``track.json``.

    Args:
        out: The output folder.
        key: ``identity/video``.
        full: Compare SHA-256 too (else sizes only, which costs one ``stat`` per file).
    """
    folder = os.path.join(out, key)
    try:
        rec = read_settings(os.path.join(folder, TRACK_FILE), "")
    except SettingsError:
        return f"its {TRACK_FILE} is damaged"
    if rec is None:
        return f"its {TRACK_FILE} is missing"
    for name, record in (rec.get("files") or {}).items():
        problem = check_file(os.path.join(folder, name), record if full else {"size": record.get("size")})
        if problem is not None:
            return f"{name}: {problem}"
    return None


def drop_track(out: str, key: str) -> None:
    """Delete a damaged committed track, so that it is prepared again."""
    shutil.rmtree(os.path.join(out, key), ignore_errors=True)


def commit_track(folder: str, out: str, key: str) -> str:
    """Move a finished track folder to ``OUT/key`` in one rename, durably.

    Raises:
        FileExistsError: ``OUT/key`` exists without being a committed track.
    """
    dest = os.path.join(out, key)
    if os.path.exists(dest):
        raise FileExistsError(f"{dest}: exists but is no prepared track (no {TRACK_FILE}); another source maps to "
                              "the same identity/video, or the folder was made by hand; move it away")
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    for name in os.listdir(folder):
        fsync_path(os.path.join(folder, name))
    fsync_path(folder, directory=True)
    os.rename(folder, dest)
    fsync_path(parent, directory=True)
    return dest


def read_manifest(out: str | os.PathLike, verify: bool = False) -> list[dict[str, Any]]:
    """The provenance of every committed track under ``out`` (its ``track.json``), sorted by identity/video.

    Each record has ``identity``, ``video``, ``source`` (the file or folder
    read), ``kind``, ``frames`` (source frame numbers, one per written
    ``NNNNNN.png``), ``boxes`` (``[x1, y1, x2, y2]`` in source pixels),
    ``scores``, ``landmarks`` (5 points each), counts of what was skipped and
    ``files`` (size and SHA-256 of every frame file).

    Args:
        out: The output folder of ``facepcl prepare``.
        verify: Check every frame file against its recorded size and SHA-256.

    Raises:
        PrepareStateError: (with ``verify``) a track's files do not match its
            ``track.json``; the message names it and says to run prepare again.
    """
    out = os.fspath(out)
    records = []
    for identity in sorted(os.listdir(out)):
        top = os.path.join(out, identity)
        if identity.startswith((".", "_")) or not os.path.isdir(top):
            continue
        for video in sorted(os.listdir(top)):
            path = os.path.join(top, video, TRACK_FILE)
            if os.path.isfile(path):
                problem = track_problem(out, f"{identity}/{video}", full=True) if verify else None
                if problem is not None:
                    raise PrepareStateError(f"{os.path.join(top, video)} is damaged ({problem}); run the same "
                                            "facepcl prepare command again to redo it")
                with open(path, encoding="utf-8") as f:
                    records.append(json.load(f))
    return records


