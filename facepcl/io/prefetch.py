"""Decode ahead of the model in worker threads; torch keeps every core beside them.

Threads, not processes: Pillow and OpenCV release the GIL while they decode
and resize, and a process pool would pickle every decoded image back.

How cores are shared: torch keeps all its threads, always. With OpenMP
waiting passively (:func:`facepcl.runtime.set_wait_policy`, which the
``facepcl`` command sets), a core that a decoder takes for a while costs
torch that share of time and no more; with spin-waiting, one descheduled
thread holds up the others at every operation's barrier.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers(processes: int = 1) -> int:
    """Decoding threads per process: this machine's cores shared by ``processes``, at most 4."""
    return max(1, min(4, (os.cpu_count() or 2) // max(1, processes)))


def prefetch(fn: Callable[[T], R], items: Iterable[T], *, workers: int, lookahead: int,
             inline: Callable[[T], Iterable[R] | None] | None = None) -> Iterator[R]:
    """``map(fn, items)`` computed ahead in ``workers`` threads, yielded in input order.

    At most ``lookahead`` items are in flight or waiting, which bounds
    memory whatever the number of items. ``fn`` should not raise (return an
    error value instead); if it does, the exception is raised here, at that
    item. Closing the generator cancels what has not started.

    Args:
        fn: Work for one item (e.g. decode a file).
        items: Inputs, consumed lazily.
        workers: Threads (0: compute in the calling thread, one at a time).
        lookahead: Items taken ahead of the consumer (at least 1).
        inline: Called in order on each item as it is taken; when it returns
            an iterable (not None), that item skips the workers and the
            iterable's results are yielded in its place, iterated only when
            the item's turn comes. A generator that decodes a video in its own
            thread therefore starts that thread then, not while earlier items
            are still being consumed.
    """

    def one(item: T) -> Iterable[R] | None:
        return inline(item) if inline is not None else None

    if workers < 1:
        for item in items:
            several = one(item)
            if several is None:
                yield fn(item)
            else:
                yield from several
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facepcl-decode")
    pending: deque[Future[Any] | Iterable[R]] = deque()

    def release(entry: Future[Any] | Iterable[R]) -> Iterable[R]:
        return (entry.result(),) if isinstance(entry, Future) else entry

    try:
        for item in items:
            several = one(item)
            pending.append(pool.submit(fn, item) if several is None else several)
            while len(pending) > max(1, lookahead):
                yield from release(pending.popleft())
        while pending:
            yield from release(pending.popleft())
    finally:
        for f in pending:
            if isinstance(f, Future):
                f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
