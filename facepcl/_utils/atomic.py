"""The one atomic file write: a temporary name in the same folder, fsynced, then renamed into place.

A failed fsync fails the write (the temporary file is removed and nothing is
renamed into place), so data that may not be on disk is never committed.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import (single-threaded): os.umask can only be read by setting it.
_FILE_MODE = 0o666 & ~_read_umask()


def temp_path(dest: str | os.PathLike) -> str:
    """The temporary name a file is written under before it is renamed to ``dest``:
    ``.<name>.tmp-<pid>-<random>`` in the same folder (see :func:`atomic_write`)."""
    folder, name = os.path.split(os.fspath(dest))
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


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
    folder = os.path.dirname(dest)
    os.makedirs(folder or ".", exist_ok=True)
    tmp = temp_path(dest)
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


#: errno values meaning "this filesystem cannot fsync a folder" (the rename is still atomic there).
_NO_DIR_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EISDIR, errno.EACCES}


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8 (the writer handed to :func:`atomic_write` and stores for text files)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    """fsync a file, or a folder with ``directory=True`` (so that a rename inside it is durable).

    Raises:
        OSError: The fsync of a file failed (EIO, ENOSPC, ...): its data may not
            be on disk, so whatever was about to be committed must not be. A
            folder that the filesystem cannot fsync is not an error.
    """
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if directory and e.errno in _NO_DIR_FSYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if not (directory and e.errno in _NO_DIR_FSYNC):
            raise
    finally:
        os.close(fd)
