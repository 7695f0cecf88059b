"""What ``--resume`` checks before it skips inputs: the same stream of inputs, and unchanged finished files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..io.inputs import InputItem
from ..io.stream import file_stamp
from ._types import Cursor, ExportStateError


def skip_done(items: Iterator[InputItem], cursor: Cursor, stamps: Iterator[tuple[int, int, int]] = (),
              storage_options: dict[str, Any] | None = None) -> Iterator[InputItem]:
    """Drop what earlier runs committed; prove the inputs are the same up to the cursor.

    ``stamps`` (``(item, size, mtime_ns)`` in input order, see
    :meth:`ExportFolder.pending`) are compared with the finished inputs'
    files, so that a file changed since it was embedded is refused (objects
    of URL inputs are looked up with ``storage_options``).
    """
    checked = cursor.item < 0
    stamps = iter(stamps)
    pending = next(stamps, None)

    def unchanged(item: InputItem) -> None:
        nonlocal pending
        while pending is not None and pending[0] < item.index:
            pending = next(stamps, None)
        if pending is not None and pending[0] == item.index:
            _check_unchanged(item, pending[1:], storage_options)

    for item in items:
        if item.index < cursor.item:
            unchanged(item)
            continue
        if item.index == cursor.item:
            if item.digest != cursor.digest:
                now = (f"is still {item.path!r}, but a file before it was added, removed or renamed"
                       if item.path == cursor.path else
                       f"is now {item.path!r}, it was {cursor.path!r} (or a file before it was added, removed or "
                       "renamed)")
                raise ExportStateError(
                    f"the inputs differ from those of the run being resumed: input #{item.index} {now}. "
                    "Resume with the same inputs in the same order (new inputs may only be added at the end), or "
                    "write to a new folder")
            checked = True
            if cursor.complete:
                unchanged(item)
                continue
        yield item
    if not checked:
        raise ExportStateError(f"the inputs differ from those of the run being resumed: it had reached input "
                               f"#{cursor.item} ({cursor.path!r}), but there are fewer inputs now. Resume with the "
                               "same inputs, or write to a new folder")


def _check_unchanged(item: InputItem, stamp: tuple[int, int], storage_options: dict[str, Any] | None) -> None:
    now = file_stamp(item.path, storage_options)
    if now is None or tuple(now) == tuple(stamp):
        return  # a finished input that is gone now: its rows still describe the file that was embedded
    size = f"{stamp[0]:,} -> {now[0]:,} bytes" if now[0] != stamp[0] else f"{now[0]:,} bytes"
    raise ExportStateError(
        f"input #{item.index} {item.path!r} changed after the run being resumed embedded it ({size}, modified "
        f"time changed: {stamp[1]} -> {now[1]} ns), so its rows in the export are stale. Restore the file, or "
        "start over with --overwrite (or a new output folder)")
