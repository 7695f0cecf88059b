"""The shard in flight: rows and skip records gathered batch by batch, committed by size, by time, and at the end."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._folder import ExportFolder
from ._formats import RowBuffer
from ._types import Cursor, NonFiniteEmbeddingError, ResumePoint, Stats


@dataclass
class BatchRows:
    """What one embedded batch adds to the shard in flight.

    Attributes:
        stats: Its counts.
        errors: Its skipped-input records.
        block: Its rows as columns (see :class:`~facepcl.export._formats.RowBuffer`).
        inputs: ``[item, size, mtime_ns]`` of each input it finishes.
        end: The cursor after its last unit.
        tracking: The tracker's state after its last unit (None: no video in progress).
    """

    stats: Stats
    errors: list[dict]
    block: dict[str, Any]
    end: Cursor
    inputs: list[list[int]] = field(default_factory=list)
    tracking: dict | None = None


class ShardWriter:
    """The sequence of shards one rank writes, as a context manager around the embedding loop.

    :meth:`add` appends a batch to the shard in flight and commits it (see
    :meth:`ExportFolder.commit`) once it holds ``shard_size`` rows and
    records or is ``shard_seconds`` old. Leaving the ``with`` block commits
    what is in flight, also when an exception (a fatal error, a second
    Ctrl-C) ends the loop, so the rows already made are kept; except when
    the exception came from the shard's own write or from adding a batch to
    it: then the shard is left uncommitted for ``--resume`` to redo, rather
    than committing a failed write or rows without their cursor.

    Args:
        folder: The export folder (its lock held).
        point: Where this rank continues (:meth:`ExportFolder.resume`).
        features: Feature columns stored.
        dim: Feature length.
        metadata: Provenance stored in every shard (names the model in errors).
        shard_size: Rows plus skip records per shard.
        shard_seconds: Longest time a shard stays open.
        clock: Monotonic seconds (for tests).
    """

    def __init__(self, folder: ExportFolder, point: ResumePoint, features: list[str], dim: int,
                 metadata: dict[str, Any], *, shard_size: int, shard_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = folder
        self.features = list(features)
        self.dim = dim
        self.metadata = metadata
        self.shard_size = shard_size
        self.shard_seconds = shard_seconds
        self.clock = clock
        self.number = point.next_shard
        self.committed = 0
        self.tracking = point.tracking
        self._busy = False
        self._open(point.cursor)

    def _open(self, start: Cursor) -> None:
        self.rows = RowBuffer(self.features, self.dim)
        self.errors: list[dict] = []
        self.inputs: list[list[int]] = []
        self.stats = Stats()
        self.start = self.end = start
        self.opened = self.clock()

    @property
    def size(self) -> int:
        """Rows plus skip records in flight."""
        return len(self.rows) + len(self.errors)

    def add(self, batch: BatchRows) -> None:
        """Append one batch; commit the shard when the size or time policy says so.

        Raises:
            NonFiniteEmbeddingError: A feature vector of the batch holds NaN
                or infinity; nothing of the batch is added.
            ExportStateError: The commit failed (nothing of that shard is committed).
        """
        check_finite(batch.block, self.features, self.metadata)
        self._busy = True
        self.rows.add(batch.block)
        self.errors.extend(batch.errors)
        self.inputs.extend(batch.inputs)
        self.stats.add(batch.stats)
        self.end = batch.end
        self.tracking = batch.tracking
        self._busy = False
        if self.size >= self.shard_size or self.clock() - self.opened >= self.shard_seconds:
            self.commit()

    def commit(self) -> None:
        """Commit the shard in flight (nothing when it covers no unit) and open the next one.

        The rows stay in the shard until its file is complete: a failed write
        loses nothing that a ``--resume`` cannot redo, and is never retried as
        an empty shard.
        """
        if self.end == self.start:
            return
        self._busy = True
        self.folder.commit(self.number, self.rows.columns(), self.features, self.dim, self.metadata, self.start,
                           self.end, self.stats, self.errors, self.inputs,
                           tracking=None if self.end.complete else self.tracking)
        self._busy = False
        self.number += 1
        self.committed += 1
        self._open(self.end)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.commit()
        elif not self._busy:
            with contextlib.suppress(Exception):  # the error that stopped the run is the one to report
                self.commit()


def check_finite(block: dict[str, Any], features: list[str], metadata: dict[str, Any]) -> None:
    """Refuse feature vectors holding NaN or infinity (a model whose activations overflow).

    Raises:
        NonFiniteEmbeddingError: Naming the model (id, encoder SHA-256) and the
            first input whose vector is not finite.
    """
    for name in features:
        values = block.get(name)
        if values is None or len(values) == 0:
            continue
        ok = np.isfinite(np.asarray(values, dtype=np.float32)).all(axis=1)
        if ok.all():
            continue
        row = int(np.flatnonzero(~ok)[0])
        frame = int(block["frame"][row])
        where = block["path"][row] + (f" frame {frame}" if frame >= 0 else "")
        model = metadata.get("model_id") or metadata.get("model_name") or "the model"
        digest = metadata.get("encoder_sha256") or "unknown"
        raise NonFiniteEmbeddingError(
            f"model {model} (encoder_sha256 {digest}, dtype {metadata.get('dtype')}) gave a non-finite (NaN or "
            f"infinite) {name} vector for {where} ({int((~ok).sum())} of {len(ok)} faces in the batch); nothing of "
            "this batch was written. The weights overflow or are damaged: check or replace the model (or try "
            "--dtype float32), then run the same command with --resume")
