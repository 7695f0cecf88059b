"""Turn the command line's INPUT arguments into one deterministic stream of input items.

An argument is, checked in this order:

- ``@LIST``: a text file with one input per line (blank lines and lines
  starting with ``#`` are ignored; relative entries are resolved against the
  list file's folder; each entry follows the rules below, except ``@``);
- an existing file: taken whatever its extension (a video if its extension
  is in :data:`VIDEO_EXTENSIONS`, else an image);
- an existing folder: walked recursively;
- a glob pattern (``*``, ``?``, ``[...]``; ``**`` as a whole path component
  matches any number of folders): matching files;
- anything else: an input that fails with "no such file" (recorded, not fatal).

Folders and patterns yield only files whose extension (any case) is in
:data:`IMAGE_EXTENSIONS` or :data:`VIDEO_EXTENSIONS`, and skip names starting
with ``.``. They are walked in sorted name order, one folder listing at a
time, so the stream is the same on every run and on every torchrun rank, and
memory does not grow with the number of files. Every item gets its position
in the stream as ``index`` (rank ``r`` of ``w`` takes the items with
``index % w == r``) and a running digest of all paths so far, which lets a
resumed run prove that it sees the same inputs in the same order.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".gif",
    ".ppm", ".pgm", ".pbm", ".pnm",
})
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts",
    ".m2ts", ".ogv",
})
_MAGIC = frozenset("*?[")


@dataclass(frozen=True)
class InputItem:
    """One input: a still image or a whole video.

    Attributes:
        index: Position in the stream of all inputs (0-based, all ranks alike).
        path: The path as given or joined from a folder or list (not made absolute).
        kind: "image", "video", or "folder" (a folder that could not be listed; ``error`` says why).
        digest: Hex digest over every path up to and including this one.
        error: Why this input cannot be read, when known while listing (an
            unreadable folder); None otherwise.
    """

    index: int
    path: str
    kind: str
    digest: str
    error: str | None = None


def media_kind(path: str) -> str | None:
    """ "image", "video" or None, from the file extension (any case)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return None


def check_arguments(inputs: Iterable[str]) -> None:
    """Fail early on arguments that cannot be a run's inputs (a missing or unreadable ``@LIST``).

    Raises:
        FileNotFoundError: A list file does not exist or is not readable.
    """
    for arg in inputs:
        if arg.startswith("@") and not os.path.exists(arg):
            listfile = os.path.expanduser(arg[1:])
            if not os.path.isfile(listfile):
                raise FileNotFoundError(f"input list {listfile!r} (from {arg!r}) does not exist; write one path "
                                        "per line into it, or pass the paths themselves")
            if not os.access(listfile, os.R_OK):
                raise FileNotFoundError(f"input list {listfile!r} is not readable; check its permissions")


def iter_inputs(inputs: Iterable[str]) -> Iterator[InputItem]:
    """Stream every input item of the arguments, in a deterministic order.

    Args:
        inputs: The INPUT arguments (files, folders, globs, ``@LIST`` files).

    Yields:
        :class:`InputItem` with consecutive ``index`` from 0.
    """
    digest = hashlib.blake2b(digest_size=16)
    for index, (path, error) in enumerate(_paths(inputs)):
        digest.update(os.fsencode(path) + b"\0")
        kind = "folder" if error is not None else media_kind(path) or "image"
        yield InputItem(index, path, kind, digest.hexdigest(), error)


def _paths(inputs: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    for arg in inputs:
        if arg.startswith("@") and not os.path.exists(arg):
            yield from _list_file(os.path.expanduser(arg[1:]))
        else:
            yield from _expand(arg)


def _list_file(listfile: str) -> Iterator[tuple[str, str | None]]:
    base = os.path.dirname(listfile)
    # Bytes that are not UTF-8 become surrogate escapes, which name the same file on POSIX (os.fsencode
    # turns them back into those bytes); a list file is never fatal part way through.
    with open(listfile, encoding="utf-8", errors="surrogateescape") as f:
        number = 0
        while True:
            try:
                line = f.readline()  # read lazily: a list of millions of paths is never held in memory
            except OSError as e:
                raise OSError(e.errno, f"input list {listfile!r}: cannot read line {number + 1} "
                                       f"({e.strerror or e})") from e
            if not line:
                return
            number += 1
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            if "\0" in entry:
                yield entry, f"line {number} of input list {display_path(listfile)} holds a NUL character"
                continue
            entry = os.path.expanduser(entry)
            yield from _expand(entry if os.path.isabs(entry) else os.path.join(base, entry))


def display_path(path: str) -> str:
    """``path`` as valid UTF-8 text, for output files: each byte of a non-UTF-8 name becomes ``\\xNN``.

    Paths of files whose names are not valid UTF-8 hold surrogate escapes
    (Python's way of keeping such bytes in a ``str``); Parquet strings, CSV
    and JSON files need UTF-8, so those bytes are written as escapes.
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates that are not escaped bytes
        raw = path.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def _expand(arg: str) -> Iterator[tuple[str, str | None]]:
    path = os.path.expanduser(arg)
    if os.path.isdir(path):
        yield from _walk(path, frozenset())
    elif os.path.exists(path) or not _has_magic(path):
        yield path, None  # a missing plain path fails later, when it is read, and is recorded then
    else:
        yield from _glob(path)


def _has_magic(s: str) -> bool:
    return any(c in _MAGIC for c in s)


def _listing(folder: str) -> list[os.DirEntry] | str:
    try:
        with os.scandir(folder or ".") as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        return f"cannot list the folder ({e.strerror or e}); check its permissions"


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _dir_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk(folder: str, ancestors: frozenset) -> Iterator[tuple[str, str | None]]:
    """Media files below ``folder`` in sorted order; ``ancestors`` guards against symlink loops."""
    ident = _dir_id(folder or ".")
    if ident in ancestors:
        return
    ancestors = ancestors | {ident}
    entries = _listing(folder)
    if isinstance(entries, str):
        yield folder, entries
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = os.path.join(folder, entry.name)
        if _is_dir(entry):
            yield from _walk(path, ancestors)
        elif media_kind(entry.name):
            yield path, None


def _split(pattern: str) -> tuple[str, list[str]]:
    """(folder without magic, remaining components) of a glob pattern."""
    parts = pattern.split(os.sep)
    root = ""
    if pattern.startswith(os.sep):
        root, parts = os.sep, parts[1:]
    fixed = []
    while parts and not _has_magic(parts[0]):
        fixed.append(parts.pop(0))
    base = os.path.join(root, *fixed) if fixed else root
    # "a/**/**/b" matches what "a/**/b" matches; collapsing avoids yielding a file twice
    rest: list[str] = []
    for p in parts:
        if p and not (p == "**" and rest and rest[-1] == "**"):
            rest.append(p)
    return base, rest


def _glob(pattern: str) -> Iterator[tuple[str, str | None]]:
    base, parts = _split(pattern)
    yield from ((p, None) for p in _match(base, parts, frozenset()) if media_kind(p))


def _match(base: str, parts: list[str], ancestors: frozenset) -> Iterator[str]:
    head, rest = parts[0], parts[1:]
    if head == "**":
        if not rest:  # a trailing "**" means every file below
            yield from (p for p, err in _walk(base, ancestors) if err is None)
            return
        yield from _match(base, rest, ancestors)  # zero folders
        ident = _dir_id(base or ".")
        if ident in ancestors:
            return
        entries = _listing(base)
        if isinstance(entries, str):
            return
        for entry in entries:
            if not entry.name.startswith(".") and _is_dir(entry):
                yield from _match(os.path.join(base, entry.name), parts, ancestors | {ident})
        return
    entries = _listing(base)
    if isinstance(entries, str):
        return
    for entry in entries:
        if entry.name.startswith(".") and not head.startswith("."):
            continue
        if not fnmatch.fnmatchcase(entry.name, head):
            continue
        path = os.path.join(base, entry.name)
        if rest:
            if _is_dir(entry):
                yield from _match(path, rest, ancestors)
        elif not _is_dir(entry):
            yield path


def select(items: Iterable[InputItem], rank: int, world: int) -> Iterator[InputItem]:
    """The items of one rank: those with ``index % world == rank``."""
    return (item for item in items if item.index % world == rank)
