"""Decode inputs ahead of the model, in worker threads, and hand them over in input order.

Still images are decoded by :func:`facepcl.io.prefetch.prefetch`'s threads; a
video is decoded by its own thread into a small queue, in its place in the
same ordered stream, while the model works on its earlier frames. Threads,
not processes: see :mod:`facepcl.io.prefetch` and docs/benchmarks.md.

Everything is handed over in input order, so the consumer can commit shards
in order and resume from a single cursor. At most ``lookahead`` inputs are
in flight, which bounds memory whatever the number of inputs.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ImageLoadError
from . import images
from .inputs import InputItem
from .prefetch import prefetch
from .storage import MAX_COPY_BYTES, StorageCredentialsError, StorageError, is_url, local_copy, read_url, stat_url
from .video import VideoTruncatedError, iter_frames


@dataclass
class Unit:
    """One thing for the model (a still image or a video frame), a failure, or the end of a video.

    Attributes:
        item: The input it belongs to.
        frame: Video frame number; -1 for still images and whole-input records.
        timestamp: Video frame time in seconds; NaN for still images.
        image: ``(H, W, 3)`` uint8 RGB, or None.
        error: Why this image or frame (or the whole input, with ``frame == -1``) was skipped.
        end: Whether the input is finished with this unit.
        prepared: What ``prepare(image)`` returned in the decoding thread (the
            detector's resized input), or None.
        stamp: ``(size in bytes, mtime in ns)`` of the input file, taken before
            it was read (on the unit that finishes the input), or None.
        error_kind: What ``error`` is: "unreadable" (nothing or not this of
            the input could be read) or "truncated" (a video that ended early;
            its frames before the damage were handed over).
        histogram: A video frame's :func:`facepcl.tracking.colour_histogram`, when measured where the
            frame was decoded (the Ray engine's units hold the image's shape only); None: measured from ``image``.
        sharpness: ``(faces,)`` :func:`facepcl.tracking.box_sharpness` of a video frame's faces, in the same
            case; None: measured from ``image``.
    """

    item: InputItem
    frame: int = -1
    timestamp: float = math.nan
    image: np.ndarray | None = None
    error: str | None = None
    end: bool = True
    prepared: Any = None
    stamp: tuple[int, int] | None = None
    error_kind: str = "unreadable"
    histogram: np.ndarray | None = None
    sharpness: np.ndarray | None = None


def file_stamp(path: str, storage_options: dict[str, Any] | None = None) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, which ``--resume`` compares to notice changed inputs; None if unreadable.

    For an object-store URL: ``(size, fingerprint of its ETag)`` (:func:`facepcl.io.storage.stat_url`).
    """
    if is_url(path):
        return stat_url(path, storage_options)
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns


_DONE = object()


class _VideoJob:
    """Decodes one video in a thread into a bounded queue of units."""

    def __init__(self, item: InputItem, every: int, after: int, buffer: int, stop: threading.Event,
                 prepare: Callable[[np.ndarray], Any] | None = None,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.item, self.every, self.after = item, every, after
        self.storage_options = storage_options
        self.prepare = prepare
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, buffer))
        self.stop = stop
        self.thread: threading.Thread | None = None

    def _put(self, value) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        path = self.item.path
        stamp = None if is_url(path) else file_stamp(path)
        try:
            with contextlib.ExitStack() as stack:
                if is_url(path):  # OpenCV reads local files: a bounded temporary copy (its stamp from the same HEAD)
                    path, stamp = stack.enter_context(local_copy(path, self.storage_options, MAX_COPY_BYTES))
                self._frames(path)
            self._put(Unit(self.item, stamp=stamp))
        except VideoTruncatedError as e:  # its frames were kept: the input is finished, with a record
            self._put(Unit(self.item, error=str(e), stamp=stamp, error_kind="truncated"))
        except (ImageLoadError, OSError, ValueError) as e:
            self._put(Unit(self.item, error=str(e)))
        except _Stopped:
            pass
        except Exception as e:  # a decoder crash on one file must not end the run
            self._put(Unit(self.item, error=f"{self.item.path}: video decoding failed ({type(e).__name__}: {e})"))
        finally:
            self._put(_DONE)

    def _frames(self, path: str) -> None:
        for fr in iter_frames(path, self.every, self.after):
            ready = self.prepare(fr.image) if self.prepare is not None and fr.image is not None else None
            unit = Unit(self.item, fr.index, fr.timestamp, fr.image,
                        None if fr.error is None else str(fr.error), end=False, prepared=ready)
            if not self._put(unit):
                raise _Stopped

    def units(self) -> Iterator[Unit]:
        self.thread = threading.Thread(target=self._run, name=f"facepcl-video-{self.item.index}", daemon=True)
        self.thread.start()
        try:
            while True:
                unit = self.queue.get()
                if unit is _DONE:
                    return
                yield unit
        finally:
            if self.stop.is_set():
                # Stopped early: it gives up at its next frame. Wait for it to leave OpenCV, so that the process
                # never exits with a thread inside the decoder.
                self.thread.join()


class _Stopped(Exception):
    """The consumer stopped while a video was being decoded."""


def read_input(load: Callable[..., np.ndarray], source: Any,
               storage_options: dict[str, Any] | None = None) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Decode one input with ``load``: an object-store URL is fetched first (one GET, bounded by
    :data:`facepcl.io.images.MAX_FILE_BYTES`); paths, bytes and arrays go to ``load`` as they are.

    Returns:
        The image, and the URL's stamp (size, ETag fingerprint) from that GET; None for other inputs.

    Raises:
        ImageLoadError: The input is not a readable image.
        StorageError: The object cannot be fetched (:class:`~facepcl.io.storage.StorageCredentialsError`
            when no credential works: every other object would fail alike).
    """
    if isinstance(source, str) and is_url(source):
        data, stamp = read_url(source, storage_options, images.MAX_FILE_BYTES)
        return load(data, name=source), stamp
    return load(source), None


def _decode(load: Callable[..., np.ndarray], prepare: Callable[[np.ndarray], Any] | None,
            storage_options: dict[str, Any] | None, item: InputItem) -> Unit:
    try:
        stamp = None if is_url(item.path) else file_stamp(item.path)  # before reading: a later change shows
        image, fetched = read_input(load, item.path, storage_options)
        return Unit(item, image=image, prepared=prepare(image) if prepare is not None else None,
                    stamp=fetched or stamp)
    except StorageCredentialsError:
        raise  # not this input's fault: every other object would fail alike
    except (ImageLoadError, StorageError) as e:
        return Unit(item, error=str(e))
    except Exception as e:  # e.g. a decoder bug on a hostile file: record it, keep going
        return Unit(item, error=f"{item.path}: could not be decoded ({type(e).__name__}: {e})")


def iter_units(items: Iterable[InputItem], load: Callable[..., np.ndarray], *, every: int = 1,
               workers: int = 2, lookahead: int = 32, partial: tuple[int, int] | None = None,
               stop: threading.Event | None = None,
               prepare: Callable[[np.ndarray], Any] | None = None,
               storage_options: dict[str, Any] | None = None) -> Iterator[Unit]:
    """Decoded units of ``items``, in order.

    Args:
        items: Inputs to decode (already sliced for this rank and resumed).
        load: Decodes one image path to ``(H, W, 3)`` uint8 RGB; raises
            :class:`~facepcl.errors.ImageLoadError` for bad files. Objects of
            URL inputs are downloaded first and given as ``load(bytes, name=url)``.
        every: Keep every ``every``-th video frame.
        workers: Decoding threads for still images.
        lookahead: Inputs decoded ahead of the consumer.
        partial: ``(item index, last frame done)`` of a video to continue part way.
        stop: Set it to make video threads give up early (the generator also
            stops them when closed).
        prepare: Run on each decoded image or frame in the decoding thread
            (the detector's resize), its result kept in ``Unit.prepared``.
        storage_options: fsspec filesystem arguments for URL inputs.

    Yields:
        :class:`Unit`: one per still image; one per kept video frame then an
        end unit per video; one error unit per unreadable input.
    """
    stop = stop or threading.Event()
    buffer = max(2, lookahead)

    def inline(item: InputItem) -> Iterable[Unit] | None:
        # Failed listings and videos keep their place in the ordered queue without a pool thread: a video is
        # decoded by its own thread, started when the consumer reaches it.
        if item.error is not None:
            return (Unit(item, error=f"{item.path}: {item.error}"),)
        if item.kind == "video":
            after = partial[1] if partial is not None and partial[0] == item.index else -1
            return _VideoJob(item, every, after, buffer, stop, prepare, storage_options).units()
        return None

    units = prefetch(functools.partial(_decode, load, prepare, storage_options), items, workers=max(1, workers),
                     lookahead=lookahead, inline=inline)
    try:
        for unit in units:  # noqa: UP028 (``yield from`` would close ``units`` before ``stop`` is set)
            yield unit
    finally:
        stop.set()  # first, so that video threads still decoding give up while the rest winds down
        units.close()
