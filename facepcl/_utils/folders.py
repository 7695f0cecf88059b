"""The one protocol for every folder facepcl writes: a lock with an owner, and files verified against a manifest.

- :class:`FolderLock`: one writer at a time. An exclusive ``flock`` on a lock
  file in the folder, which the operating system releases when the process
  dies (kill -9 included), so a stale lock never needs breaking by hand. The
  file records the owner (pid, host, command, start time) so that a refused
  writer is told who holds it.
- :func:`file_record` / :func:`check_file`: a committed file is described by
  its size and SHA-256, written in a manifest that is itself written
  atomically; readers and resumed runs check the file against that record
  before trusting it (a truncated copy, a bit flip, an empty file).

Writers combine them with :func:`facepcl._utils.atomic.atomic_write`: data
first (fsynced, renamed into place), then the manifest that records it, under
the lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

from ..errors import OutputError

LOCK_NAME = ".facepcl.lock"
_CHUNK = 1 << 20


class FolderLockedError(OutputError):
    """Another process is writing the folder."""


class FolderLock:
    """Exclusive writer lock on a folder, held until :meth:`release` or the process ends.

    Args:
        folder: The folder to lock (created if needed).
        what: What is written there, for messages ("export", "index", ...).
        name: Lock file name inside ``folder`` (distinct names lock distinct
            parts of one folder, e.g. one per torchrun rank).

    Raises:
        FolderLockedError: (from :meth:`acquire`) another live process holds it;
            the message names the owner and what to do.
        OutputError: (from :meth:`acquire`) the folder cannot be created or written.
    """

    def __init__(self, folder: str | os.PathLike, what: str, name: str = LOCK_NAME) -> None:
        self.folder = os.fspath(folder)
        self.what = what
        self.path = os.path.join(self.folder, name)
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        import fcntl

        try:
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"{self.folder}: cannot write the {self.what} there ({e.strerror}); choose a "
                              "writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = _read_owner(fd)
            os.close(fd)
            raise FolderLockedError(f"{self.folder}: another process is writing this {self.what} ({owner}); wait "
                                    "for it to finish or stop it, then run again") from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "command": " ".join(sys.argv)[:500]}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        except OSError as e:
            os.close(fd)
            raise OutputError(f"{self.folder}: cannot write the {self.what} there ({e.strerror}); free space or "
                              "choose another folder") from None
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the next writer in (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def check(self) -> None:
        """Nothing to do: an ``flock`` cannot be lost while its process lives (object-store locks can)."""

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_owner(fd: int) -> str:
    try:
        owner = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return "owner unknown"
    if not owner:
        return "owner unknown"
    return f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')}: {owner.get('command')}"


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of a file, for its manifest."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def check_file(path: str | os.PathLike, record: Mapping[str, Any]) -> str | None:
    """Compare a file with its manifest record (:func:`file_record`).

    Returns:
        None when the file is there with the recorded size and SHA-256, else
        what is wrong ("missing", "12 bytes, the manifest says 4096", "its
        SHA-256 differs from the manifest's"), for a message.
    """
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if size != record.get("size"):
        return f"{size} bytes, the manifest says {record.get('size')}"
    if "sha256" in record:
        try:
            digest = file_record(path)["sha256"]
        except OSError as e:
            return f"unreadable ({e.strerror})"
        if digest != record["sha256"]:
            return "its SHA-256 differs from the manifest's (the file was changed or damaged after it was written)"
    return None
