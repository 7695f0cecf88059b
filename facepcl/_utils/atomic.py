"""The one atomic file write: a temporary name in the same folder, flushed, then renamed into place."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import (single-threaded): os.umask can only be read by setting it.
_FILE_MODE = 0o666 & ~_read_umask()


def atomic_write(dest: str | os.PathLike, write: Callable[[str], object], *, durable: bool = True) -> None:
    """Write a file so that readers see either the old file, or the whole new one, never half of it.

    The temporary name is ``.<name>.tmp-<pid>-<random>`` in the destination
    folder, so folder readers (pyarrow datasets, ``glob("part-*")``) skip it
    and a killed writer leaves at most that stray file, which callers may
    sweep up by that pattern.

    Args:
        dest: Final path (its folder is created if needed).
        write: Called with the temporary path; writes the file there.
        durable: fsync the file and its folder, so the rename survives a crash
            of the machine, not only of the process.
    """
    dest = os.fspath(dest)
    folder, name = os.path.split(dest)
    os.makedirs(folder or ".", exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        write(tmp)
        # Some writers (safetensors) create owner-only files; give the result the mode a plain open() would.
        os.chmod(tmp, _FILE_MODE)
        if durable:
            fsync_path(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if durable:
        fsync_path(folder or ".", directory=True)


def fsync_path(path: str, directory: bool = False) -> None:
    """fsync a file, or a folder with ``directory=True`` (so a rename inside it is durable); never raises."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)
