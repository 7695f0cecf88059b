"""Value types and the error of an export folder: cursors, counts, and output errors that say what to do."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from ..errors import FacePCLError

STAT_KEYS = ("inputs", "images", "videos", "frames", "faces", "skipped")


class ExportStateError(FacePCLError):
    """The output folder cannot be written, resumed or read as asked (the message names the file and the fix)."""


class NonFiniteEmbeddingError(FacePCLError):
    """The model produced NaN or infinite features; nothing of that batch is written."""


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
    elif e.errno == errno.EIO:
        fix = ("the disk reported an I/O error, so the file may not be on disk and was not committed: check the "
               "disk, then run the same command with --resume")
    else:
        fix = "check the output folder, then run the same command with --resume"
    return ExportStateError(f"cannot write {path} ({why}); {fix}")


@dataclass(frozen=True)
class Cursor:
    """How far one rank has got: the last unit it committed.

    Attributes:
        item: Index of the last input touched (-1: nothing yet).
        frame: Last video frame committed when the video is not finished; -1 otherwise.
        complete: Whether input ``item`` is finished.
        digest: The input stream's digest at ``item`` (see :mod:`facepcl.io.inputs`).
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
    """What a rank found on disk: where to continue and what is already there.

    Attributes:
        cursor: End cursor of the last good shard.
        next_shard: Number of the next shard to write.
        done: Counts of the good shards.
        rows: Rows of the good shards.
        manifests: Paths of the good shards' manifests, in shard order.
        redone: ``(shard file name, problem)`` of each shard dropped because its data failed verification.
        tracking: The tracker's state the last good shard recorded (it ended inside a video), or None.
    """

    cursor: Cursor = field(default_factory=Cursor)
    next_shard: int = 0
    done: Stats = field(default_factory=Stats)
    rows: int = 0
    manifests: list[str] = field(default_factory=list)
    redone: list[tuple[str, str]] = field(default_factory=list)
    tracking: dict | None = None
