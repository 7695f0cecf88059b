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

An argument may also be an object-store URL (``s3://bucket/photos``, any
fsspec protocol but ``file://``, which is a local path): an object is one
input, a prefix is walked like a folder (one listing per "folder", sorted,
media files only, names starting with ``.`` skipped), in the store's key
order (bytes; a sub-folder sorts as ``name/``), one page of keys at a time
on S3, so a prefix of millions of keys is never held in memory. Patterns are not
expanded in URLs, and ``@LIST`` files are local (their lines may be URLs).

Folders and patterns yield only files whose extension (any case) is in
:data:`IMAGE_EXTENSIONS` or :data:`VIDEO_EXTENSIONS`, and skip names starting
with ``.``. They are walked in sorted name order, one folder listing at a
time, so the stream is the same on every run and on every torchrun rank, and
memory does not grow with the number of files.

Symbolic links are followed, without cycles or duplicates: a folder walk
enters each real folder once (by device and inode, however many links lead
to it), and yields each real file once (a link to a file that the walk
reaches by its own name, or through an earlier link, is skipped); patterns
skip repeated links to one file. Files named explicitly (arguments, list
lines) are taken as given. Listing checks a ``stop`` event between entries,
so a signal ends even the walk of a whole file system promptly. Every item gets its position
in the stream as ``index`` (rank ``r`` of ``w`` takes the items with
``index % w == r``) and a running digest of all paths so far, which lets a
resumed run prove that it sees the same inputs in the same order.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .storage import is_url, join, list_folder, local_path

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".gif",
    ".ppm", ".pgm", ".pbm", ".pnm",
})
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts",
    ".m2ts", ".ogv",
})
_MAGIC = frozenset("*?[")


class ListingInterrupted(Exception):
    """The listing of the inputs was stopped (its ``stop`` event was set, e.g. by Ctrl-C or SIGTERM)."""


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
        ValueError: A list file is not a regular file (a device, a FIFO, a folder).
    """
    for arg in inputs:
        if arg.startswith("@") and not os.path.exists(arg):
            listfile = os.path.expanduser(arg[1:])
            kind = _special_kind(listfile)
            if kind is not None:
                raise ValueError(f"input list {listfile!r} (from {arg!r}) is not a regular file (it is {kind}); "
                                 "pass a text file with one path per line")
            if not os.path.isfile(listfile):
                raise FileNotFoundError(f"input list {listfile!r} (from {arg!r}) does not exist; write one path "
                                        "per line into it, or pass the paths themselves")
            if not os.access(listfile, os.R_OK):
                raise FileNotFoundError(f"input list {listfile!r} is not readable; check its permissions")


def _special_kind(path: str) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder ("a character device", ...)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"


def iter_inputs(inputs: Iterable[str], stop: threading.Event | None = None,
                sequences: bool = False, storage_options: dict[str, Any] | None = None) -> Iterator[InputItem]:
    """Stream every input item of the arguments, in a deterministic order.

    Args:
        inputs: The INPUT arguments (files, folders, globs, ``@LIST`` files).
        stop: When set, the listing ends between two entries by raising
            :class:`ListingInterrupted`.
        sequences: Each folder that holds image files is one item of kind
            "video": its images, sorted by name, are the video's frames
            (:func:`facepcl.io.video.iter_frames`); video files and subfolders
            are listed as usual (local folders only).
        storage_options: fsspec filesystem arguments for URL inputs (see :mod:`facepcl.io.storage`).

    Yields:
        :class:`InputItem` with consecutive ``index`` from 0.

    Raises:
        ListingInterrupted: ``stop`` was set.
        StorageError: An object store cannot be listed (no credential, network); the message names the URL.
    """
    digest = hashlib.blake2b(digest_size=16)
    for index, (path, error) in enumerate(_Lister(stop, sequences, storage_options).paths(inputs)):
        digest.update(os.fsencode(path) + b"\0")
        if error is not None:
            kind = "folder"
        elif sequences and not is_url(path) and os.path.isdir(path):
            kind = "video"
        else:
            kind = media_kind(path) or "image"
        yield InputItem(index, path, kind, digest.hexdigest(), error)


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


class _Lister:
    """One listing of the arguments: its stop event, and the folders and linked files seen so far."""

    def __init__(self, stop: threading.Event | None, sequences: bool = False,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.stop = stop
        self.sequences = sequences
        self.storage_options = storage_options
        self.dirs: set[tuple[int, int]] = set()  # every real folder a walk entered
        self.linked: set[tuple[int, int]] = set()  # every real file yielded through a symlink

    def check(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise ListingInterrupted("the listing of the inputs was stopped")

    def paths(self, inputs: Iterable[str]) -> Iterator[tuple[str, str | None]]:
        for arg in inputs:
            self.check()
            if arg.startswith("@") and not os.path.exists(arg):
                listfile = os.path.expanduser(arg[1:])
                kind = _special_kind(listfile)
                if kind is not None:  # reading a device or a FIFO as a list could never end
                    yield listfile, f"input list {listfile!r} is not a regular file (it is {kind})"
                else:
                    yield from self.list_file(listfile)
            else:
                yield from self.expand(arg)

    def list_file(self, listfile: str) -> Iterator[tuple[str, str | None]]:
        base = os.path.dirname(listfile)
        # Bytes that are not UTF-8 become surrogate escapes, which name the same file on POSIX (os.fsencode
        # turns them back into those bytes); a list file is never fatal part way through.
        with open(listfile, encoding="utf-8", errors="surrogateescape") as f:
            number = 0
            while True:
                self.check()
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
                yield from self.expand(entry if os.path.isabs(entry) else os.path.join(base, entry))

    def expand(self, arg: str) -> Iterator[tuple[str, str | None]]:
        if is_url(arg):
            yield from self.walk_url(arg.rstrip("/"), top=True)
            return
        path = os.path.expanduser(local_path(arg))
        if os.path.isdir(path):
            yield from self.walk(path)
        elif os.path.exists(path) or not _has_magic(path):
            yield path, None  # a missing plain path fails later, when it is read, and is recorded then
        else:
            base, parts = _split(path)
            yield from ((p, None) for p in self.match(base, parts, frozenset()) if media_kind(p))

    def walk_url(self, url: str, top: bool = False) -> Iterator[tuple[str, str | None]]:
        """An object (named directly: taken whatever its name), or the media objects below a prefix, sorted."""
        entries = list_folder(url, self.storage_options)
        if entries is None:
            if top:
                yield url, None  # one object (or a missing one: it fails when read, and is recorded then)
            return
        # streamed: a folder of millions of keys is read a page at a time
        for name, is_dir in entries:
            self.check()
            if name.startswith("."):
                continue
            if is_dir:
                yield from self.walk_url(join(url, name))
            elif media_kind(name):
                yield join(url, name), None

    def walk(self, folder: str) -> Iterator[tuple[str, str | None]]:
        """Media files below ``folder`` in sorted order, each real folder and each real file once."""
        ident = _dir_id(folder or ".")
        if ident is None or ident in self.dirs:
            return
        self.dirs.add(ident)
        entries = _listing(folder)
        if isinstance(entries, str):
            yield folder, entries
            return
        if self.sequences and any(media_kind(e.name) == "image" and not e.name.startswith(".") and not _is_dir(e)
                                  for e in entries):
            yield folder, None  # its images are the frames of one video
        for entry in entries:
            self.check()
            if entry.name.startswith("."):
                continue
            path = os.path.join(folder, entry.name)
            if _is_dir(entry):
                yield from self.walk(path)
            elif self.sequences and media_kind(entry.name) == "image":
                continue  # a frame of the folder's sequence
            elif media_kind(entry.name) and self.first_time(entry, path, ident[0]):
                yield path, None

    def first_time(self, entry: os.DirEntry, path: str, dev: int, walked: bool = True) -> bool:
        """Whether a file entry is the first way the listing reaches its real file.

        A regular file is new unless a symlink already yielded it. A symlink is
        skipped when its target is yielded by its own name anyway (``walked``:
        its real folder is, or is being, walked), or when another link already
        yielded it.
        """
        try:
            link = entry.is_symlink()
        except OSError:
            link = False
        if not link:
            return not self.linked or (dev, entry.inode()) not in self.linked
        try:
            st = os.stat(path)
        except OSError:
            return True  # a dangling link: it fails when read, and is recorded then
        ident = (st.st_dev, st.st_ino)
        if ident in self.linked:
            return False
        real = os.path.realpath(path)
        name = os.path.basename(real)
        if (walked and not name.startswith(".") and media_kind(name)
                and _dir_id(os.path.dirname(real) or ".") in self.dirs):
            return False
        self.linked.add(ident)
        return True

    def match(self, base: str, parts: list[str], ancestors: frozenset) -> Iterator[str]:
        head, rest = parts[0], parts[1:]
        if head == "**":
            if not rest:  # a trailing "**" means every file below
                yield from (p for p, err in self.walk(base) if err is None)
                return
            yield from self.match(base, rest, ancestors)  # zero folders
            ident = _dir_id(base or ".")
            if ident in ancestors:
                return
            entries = _listing(base)
            if isinstance(entries, str):
                return
            for entry in entries:
                self.check()
                if not entry.name.startswith(".") and _is_dir(entry):
                    yield from self.match(os.path.join(base, entry.name), parts, ancestors | {ident})
            return
        entries = _listing(base)
        if isinstance(entries, str):
            return
        dev = (_dir_id(base or ".") or (0, 0))[0]
        for entry in entries:
            self.check()
            if entry.name.startswith(".") and not head.startswith("."):
                continue
            if not fnmatch.fnmatchcase(entry.name, head):
                continue
            path = os.path.join(base, entry.name)
            if rest:
                if _is_dir(entry):
                    yield from self.match(path, rest, ancestors)
            elif not _is_dir(entry) and self._glob_new(entry, path, dev, head):
                yield path

    def _glob_new(self, entry: os.DirEntry, path: str, dev: int, head: str) -> bool:
        """Whether a matched file is new: a link to a file that the same pattern matches by name is not."""
        try:
            if entry.is_symlink():
                real = os.path.realpath(path)
                if (os.path.dirname(real) == os.path.realpath(os.path.dirname(path))
                        and fnmatch.fnmatchcase(os.path.basename(real), head)):
                    return False
        except OSError:
            return True
        return self.first_time(entry, path, dev, walked=False)


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


def select(items: Iterable[InputItem], rank: int, world: int) -> Iterator[InputItem]:
    """The items of one rank: those with ``index % world == rank``."""
    return (item for item in items if item.index % world == rank)
