"""The ``facepcl embed`` loop: stream inputs, decode ahead, embed in batches, commit shards in order.

One pass per rank: the input stream (sliced for this rank, minus what
earlier runs committed) is decoded by worker threads, batched, run through
the face pipeline, and turned into rows. Rows and skipped inputs accumulate
in the shard in flight (:class:`~._shard.ShardWriter`), which is committed
(see :meth:`~._folder.ExportFolder.commit`) when it holds ``shard_size``
rows or records, after ``shard_seconds``, at the end, on Ctrl-C / SIGTERM,
and before a fatal error propagates. Nothing but the in-flight shard is lost
when the process is killed. A shard whose write fails (disk full, an I/O
error, a second Ctrl-C during the write) is not committed at all: its inputs
stay unfinished, and ``--resume`` embeds them again.

:func:`run_embed` reads top to bottom: check the options, probe the inputs,
load the model, lock and set up the folder (:class:`~._folder.ExportFolder`),
resume, embed batch by batch into the shard writer, then merge the
folder-level files and print the summary.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..io import prefetch as _parallel
from ..io.inputs import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    InputItem,
    ListingInterrupted,
    check_arguments,
    display_path,
    iter_inputs,
    select,
)
from ..io.ranks import DistInfo, barrier_and_close, from_env, rank_device, reduce_at_end
from ..io.storage import is_url
from ..io.stream import Unit, iter_units
from ._folder import ExportFolder
from ._formats import FEATURES
from ._layout import ERRORS_FILE
from ._progress import Progress, count_items, progress_wanted, summary_line
from ._shard import BatchRows, ShardWriter
from ._tracks import ExportTracker, row_columns
from ._types import STAT_KEYS, Cursor, ResumePoint, Stats

if TYPE_CHECKING:
    from ..pipeline import FaceEmbedder
    from ..results import EmbeddingResult

# Settings that decide the rows: a resumed run (and every rank) must use the same.
IDENTITY = ("encoder_sha256", "config_hash", "preprocess", "crop_size", "feature_dim", "features", "dtype", "accel",
            "detect", "detector", "on_no_face", "max_faces", "facepcl_version")


#: Images per batch and crops per encoder forward unless ``embedder["batch_size"]`` says otherwise.
BATCH_SIZE = 32


@dataclass
class EmbedOptions:
    """Options of one ``facepcl embed`` run (see ``facepcl embed --help`` and docs/cli.md).

    Attributes:
        inputs: Files, folders, glob patterns and @list.txt files.
        out: The output folder.
        model: ``facepcl.load`` name, Hub id or folder (None: the default model).
        revision: Hub revision to pin.
        embedder: :class:`~facepcl.FaceEmbedder` keyword arguments, the detector's in its ``detector``
            dict (``{"mode": "exact", "detector": {"det_threshold": 0.6}}``). Its ``batch_size`` (default
            :data:`BATCH_SIZE`) is also the images per batch; ``device`` is ``cuda:LOCAL_RANK`` under torchrun.
        num_workers: Decoding threads per process (None: the machine's cores shared by its ranks, at most 4).
        track: Track the faces of videos (a ``track_id`` on every video row, ``_tracks.parquet``); False: -1.
        sequences: Each input folder holding images is one video whose frames are its images, sorted by name.
        storage_options: fsspec filesystem arguments for URL inputs and a URL ``out`` (``--storage-options``);
            never printed nor written into the export.
        features, format, every, shard_size, shard_seconds, resume, overwrite, progress, quiet: The export's own.
    """

    inputs: list[str]
    out: str
    model: str | None = None
    revision: str | None = None
    embedder: dict[str, Any] = field(default_factory=dict)
    num_workers: int | None = None
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    format: str = "parquet"
    every: int = 1
    shard_size: int = 2048
    shard_seconds: float = 300.0
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    quiet: bool = False
    track: bool = True
    sequences: bool = False
    storage_options: dict[str, Any] | None = field(default=None, repr=False)

    def check(self) -> None:
        """Raise ValueError naming the first bad option (TypeError: an unknown detector option)."""
        for name in ("every", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.num_workers is not None and self.num_workers < 1:
            raise ValueError(f"--num-workers must be at least 1, got {self.num_workers}")
        if self.shard_seconds <= 0:
            raise ValueError(f"--shard-seconds must be positive, got {self.shard_seconds}")
        bad = sorted(set(self.features) - set(FEATURES))
        if bad or not self.features:
            raise ValueError(f"--features takes a comma-separated subset of {','.join(FEATURES)}; got "
                             f"{','.join(self.features) or 'nothing'}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite contradict each other: --resume continues the export in "
                             "OUT, --overwrite deletes it and starts over; pass one")
        if not self.inputs:
            raise ValueError("no INPUT given; pass files, folders, glob patterns or @list.txt files")
        if self.sequences and any(is_url(i) for i in self.inputs):
            raise ValueError("--sequences reads folders of frames from local disk only; copy the frames to a local "
                             "folder, or leave out --sequences to embed the objects as still images")
        detector = self.embedder.get("detector")
        if isinstance(detector, dict):  # before the model loads
            from ..detection import FaceDetector

            FaceDetector.check_options(detector, "facepcl embed: detector")


def build_embedder(opts: EmbedOptions, info: DistInfo) -> FaceEmbedder:
    """The run's :class:`~facepcl.FaceEmbedder` on this rank's device, its detector built (a start-up error if missing).

    Raises:
        ValueError: ``--device`` names a device that is not there.
        ModelLoadError: The model cannot be loaded.
    """
    from .. import hub
    from .._utils.device import resolve_device
    from ..errors import ModelLoadError
    from ..pipeline import FaceEmbedder

    options = {"batch_size": BATCH_SIZE, **opts.embedder}
    device = rank_device(options.pop("device", None), info)
    try:
        resolve_device(device)
    except RuntimeError as e:  # asking for a device that is not there is a usage error, not a crash
        raise ValueError(f"--device: {e}") from None
    try:
        model = hub.load(opts.model, revision=opts.revision, device=device)
    except ModelLoadError as e:
        if opts.model is not None:
            raise
        raise ModelLoadError(f"no --model was given, and the default model {hub.default_model_name()!r} cannot "
                             f"be loaded ({e}). Pass --model NAME|HUB_ID|FOLDER or set FACEPCL_MODEL") from e
    embedder = FaceEmbedder(model, **options)
    if embedder.detect:
        embedder.detector  # noqa: B018 (built now: a missing detector is a start-up error)
    return embedder


def default_workers(info: DistInfo) -> int:
    """Decoding threads per process: the cores of this machine shared by its ranks, at most 4."""
    return _parallel.default_workers(info.local_world_size)


class Engine(Protocol):
    """What turns inputs into faces for :func:`run_embed`; everything else (folder, shards, resume, tracks) is shared.

    The local engine (:class:`LocalEngine`, the default) decodes in threads and
    embeds in this process; ``facepcl.ray.RayEngine`` runs the same work on a
    Ray cluster. Whatever the engine, :func:`run_embed` turns its batches into
    rows, in input order, and is the one writer of the output folder.
    """

    def start(self, opts: EmbedOptions, info: DistInfo) -> dict[str, Any]:
        """Load what the run needs; return the provenance the faces will have (:meth:`FaceEmbedder.provenance`).

        Raises:
            ValueError, ModelLoadError: The options or the model do not work (nothing is written yet).
        """
        ...

    def batches(self, opts: EmbedOptions, items: Iterator[InputItem],
                resume_at: Cursor) -> Iterator[tuple[list[Unit], EmbeddingResult | None]]:
        """Batches of units of ``items`` in input order, each with the faces of its units that hold an image.

        Args:
            opts: The run's options.
            items: The inputs still to do, in order (this rank's, after the resume point).
            resume_at: The resume cursor (``item``/``frame`` of a video to continue part way, unless ``complete``).

        Yields:
            ``(units, faces)``: ``units`` as :func:`facepcl.io.stream.iter_units` makes them (a unit that holds an
            image needs only its ``shape``), ``faces`` the :meth:`FaceEmbedder.embed_loaded` result of the units
            that hold an image, in that order (None when none does). Each batch is added to the shard in
            flight as a whole.

        Raises:
            ListingInterrupted: A signal ended the listing of ``items`` (after the units already decoded are yielded).
        """
        ...


class LocalEngine:
    """The engine of a plain ``facepcl embed`` (and of each torchrun process): decode threads, one model here."""

    def __init__(self) -> None:
        self.embedder: FaceEmbedder | None = None

    def start(self, opts: EmbedOptions, info: DistInfo) -> dict[str, Any]:
        """Build the embedder (:func:`build_embedder`) and return its provenance."""
        self.embedder = build_embedder(opts, info)
        self.workers = opts.num_workers or default_workers(info)
        return self.embedder.provenance()

    def batches(self, opts: EmbedOptions, items: Iterator[InputItem],
                resume_at: Cursor) -> Iterator[tuple[list[Unit], EmbeddingResult | None]]:
        """See :meth:`Engine.batches`: at least ``batch_size`` images (or ``4 * batch_size`` units) per batch."""
        embedder = self.embedder
        assert embedder is not None, "start() first"
        batch_size = embedder.batch_size
        units = iter_units(items, embedder.load, every=opts.every, workers=self.workers,
                           lookahead=batch_size + 2 * self.workers,
                           partial=None if resume_at.complete else (resume_at.item, resume_at.frame),
                           prepare=embedder.prepare if embedder.detect else None,
                           storage_options=opts.storage_options)
        with contextlib.closing(units):
            batch: list[Unit] = []
            images = 0
            try:
                for unit in units:
                    batch.append(unit)
                    images += unit.image is not None
                    if images >= batch_size or len(batch) >= 4 * batch_size:
                        yield batch, self._faces(batch)
                        batch, images = [], 0
            except ListingInterrupted:
                if batch:  # the listing was cut by a signal: the units in hand are still saved
                    yield batch, self._faces(batch)
                raise
            if batch:
                yield batch, self._faces(batch)

    def _faces(self, batch: list[Unit]) -> EmbeddingResult | None:
        embedder = self.embedder
        pictures = [u for u in batch if u.image is not None]
        if not pictures:
            return None
        prepared = [u.prepared for u in pictures]
        ready = prepared if embedder.detect and all(p is not None for p in prepared) else None
        return embedder.embed_loaded([u.image for u in pictures], names=[_name(u) for u in pictures],
                                     prepared=ready)


class _Signals:
    """First Ctrl-C (or SIGTERM) asks to stop after the current batch; a second Ctrl-C aborts at once.

    The first signal also sets :attr:`stop`, which ends the listing of the
    inputs (:func:`facepcl.io.inputs.iter_inputs` raises
    :class:`~facepcl.io.inputs.ListingInterrupted`), so a run stops promptly
    even while it walks a huge tree.
    """

    def __init__(self, say) -> None:
        self.requested: int | None = None
        self.stop = threading.Event()
        self._say = say
        self._old: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum
        self.stop.set()
        self._say("stopping after the current batch and saving it (Ctrl-C again to stop at once; "
                  "--resume continues either way)")


def run_embed(opts: EmbedOptions, engine: Engine | None = None) -> int:
    """Run ``facepcl embed``; returns the exit code (0 done, 130/143 interrupted and resumable).

    Args:
        opts: The run's options.
        engine: What embeds the faces (default: a :class:`LocalEngine`); the folder, shards, resume and tracks
            are the same whatever the engine.

    Raises:
        FacePCLError, ValueError, FileNotFoundError: Fatal problems (bad options,
            model not loadable, output folder not resumable as asked, a damaged
            manifest, a model giving NaN); the command line turns them into exit code 1.
    """
    opts.check()
    info = from_env()
    check_arguments(opts.inputs)
    say = (lambda msg: None) if opts.quiet else (lambda msg: print(f"facepcl embed: {msg}", file=sys.stderr,
                                                                   flush=True))
    folder = ExportFolder(opts.out, opts.format, info.rank, info.world_size, opts.storage_options)
    with _Signals(say) as signals:
        # Fail fast, before the model loads: a folder that would be overwritten, or nothing to read at all.
        if not opts.overwrite:
            folder.check_fresh(opts.resume)
        try:
            first = next(iter_inputs(opts.inputs, stop=signals.stop, sequences=opts.sequences,
                                     storage_options=opts.storage_options), None)
        except ListingInterrupted:
            return _stopped_early(signals, opts, say)
        if first is None:
            raise FileNotFoundError(
                f"no input files found in {' '.join(opts.inputs)}; folders and patterns take files with the "
                f"extensions {' '.join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))} (name any other file directly)")

        engine = engine or LocalEngine()
        provenance = engine.start(opts, info)
        if signals.requested is not None:
            return _stopped_early(signals, opts, say)
        features = [f for f in FEATURES if f in opts.features]
        meta = {"format_version": 1, **provenance, "features": features}
        settings = {k: meta[k] for k in IDENTITY} | {"format": opts.format, "every": opts.every,
                                                      "world_size": info.world_size, "track": opts.track,
                                                      "sequences": opts.sequences}
        shard_meta = meta | {"format": opts.format, "every": opts.every, "world_size": info.world_size,
                             "cwd": os.getcwd()}
        folder.lock()
        try:
            if opts.overwrite:
                # Only now, with the model loaded and the lock held: a failed start must not delete the old export.
                cleared = folder.clear()
                if cleared:
                    say(f"--overwrite: deleted {len(cleared)} file(s) of the earlier export in {opts.out}")
            folder.write_settings(settings, opts.resume, overwrite=opts.overwrite)
            point = folder.resume()
            for name, problem in point.redone:
                say(f"redoing {name}: {problem}")
            if point.next_shard:
                say(f"resuming rank {info.rank}: {point.next_shard} shards with {point.rows} faces and "
                    f"{point.done.inputs} finished inputs are already in {opts.out}")
            session, seconds, stopped = _embed_all(opts, info, engine, features, folder, point, shard_meta,
                                                    signals)
        finally:
            folder.unlock()
    interrupted = signals.requested if stopped else None  # a signal after the last batch changes nothing
    return _finish(opts, info, folder, session, seconds, interrupted, point.done.inputs, say)


def _stopped_early(signals: _Signals, opts: EmbedOptions, say) -> int:
    say(f"interrupted before anything was written to {opts.out}; run the same command again to start")
    return 128 + int(signals.requested or signal.SIGINT)


def _embed_all(opts: EmbedOptions, info: DistInfo, engine: Engine, features: list[str],
               folder: ExportFolder, point: ResumePoint, shard_meta: dict,
               signals: _Signals) -> tuple[Stats, float, bool]:
    """Embed this rank's remaining inputs into shards; returns (counts, seconds, stopped by a signal)."""
    mine = lambda: select(iter_inputs(opts.inputs, stop=signals.stop, sequences=opts.sequences,  # noqa: E731
                                      storage_options=opts.storage_options), info.rank, info.world_size)
    items = folder.pending(mine(), point, opts.storage_options)
    cursor = point.cursor
    progress = Progress(progress_wanted(not opts.progress, opts.quiet, info.rank),
                        lambda: count_items(x for x in mine() if not cursor.done(x.index)),
                        desc="embed" if not info.distributed else f"embed rank 0/{info.world_size}")
    session = Stats()
    started = time.monotonic()
    stopped = False
    tracker = ExportTracker(opts.track, point.tracking)
    on_no_face = shard_meta["on_no_face"]
    batches = engine.batches(opts, items, cursor)
    with ShardWriter(folder, point, features, shard_meta["feature_dim"], shard_meta, shard_size=opts.shard_size,
                     shard_seconds=opts.shard_seconds) as shards, contextlib.closing(batches), progress:
        try:
            for batch, faces in batches:
                rows = batch_rows(batch, faces, features, tracker, on_no_face)
                shards.add(rows)
                session.add(rows.stats)
                progress.update(rows.stats.inputs, session)
                if signals.requested is not None:
                    stopped = True
                    break
        except ListingInterrupted:
            stopped = True  # the listing was cut by a signal: the units in hand were saved
    return session, time.monotonic() - started, stopped


def _finish(opts: EmbedOptions, info: DistInfo, folder: ExportFolder, session: Stats, seconds: float,
            interrupted: int | None, done_before: int, say) -> int:
    counts, synced = session.as_list(), False
    if interrupted is None:
        counts, seconds, synced = reduce_at_end(info, counts, seconds)
        if info.distributed and not synced:
            say("WORLD_SIZE > 1 but no torchrun rendezvous (MASTER_ADDR/MASTER_PORT unset): this rank's counts "
                f"only, and {ERRORS_FILE} may miss other ranks' records until a later --resume rebuilds it")
    try:
        folder.finish()
    finally:
        barrier_and_close(info, synced)
    total = Stats(**dict(zip(STAT_KEYS, counts, strict=True)))
    if info.rank == 0 or not synced:
        say(summary_line(total, seconds, opts.out, interrupted=interrupted is not None,
                         ranks=info.world_size if synced else 1, errors_file=folder.path(ERRORS_FILE),
                         resumed_from=done_before if not info.distributed else 0))
    if interrupted is not None:
        return 128 + int(interrupted)
    return 0


def batch_rows(batch: list[Unit], faces: EmbeddingResult | None, features: list[str], tracker: ExportTracker,
               on_no_face: str) -> BatchRows:
    """Rows, skipped-input records, counts, finished inputs and end cursor of one batch of units (in unit order).

    Args:
        batch: The units (see :meth:`Engine.batches`).
        faces: The faces of the units that hold an image, ``image_index`` counting those units from 0; None
            when no unit holds one.
        features: Feature columns stored.
        tracker: The run's tracker (assigns track ids to video faces).
        on_no_face: The embedder's ``on_no_face`` ("skip": a faceless image is a skip record).
    """
    stats = Stats()
    errors: list[dict] = []
    pictures = [u for u in batch if u.image is not None]
    no_face = set() if faces is None or on_no_face == "full_image" else set(faces.no_face)
    pos = 0
    for u in batch:
        if u.end:
            stats.inputs += 1
            stats.videos += u.item.kind == "video"
        if u.item.kind == "image" and u.error is None:  # an unreadable file is an input, not an image
            stats.images += 1
        elif u.frame >= 0:
            stats.frames += 1
        if u.error is not None:
            errors.append(_record(u, u.error_kind, u.error))
        elif u.image is not None:
            if pos in no_face:
                errors.append(_record(u, "no_face", f"{_name(u)}: no face found"))
            pos += 1
    stats.skipped = len(errors)
    last = batch[-1]
    rows = BatchRows(stats, errors, {"path": []},
                     Cursor(last.item.index, -1 if last.end else last.frame, last.end, last.item.digest,
                            last.item.path),
                     [[u.item.index, *u.stamp] for u in batch if u.end and u.stamp is not None])
    if faces is None or len(faces.image_index) == 0:
        tracker.assign(pictures, np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros((0, 1)))  # cuts, video changes
        rows.tracking = tracker.state()
        return rows
    order = np.argsort(faces.image_index, kind="stable")  # faces grouped by image, in image order
    idx = faces.image_index[order]
    n = len(idx)
    stats.faces = n
    src = [pictures[i] for i in idx]
    block = {
        "item": np.array([u.item.index for u in src], np.int64),
        "path": [display_path(u.item.path) for u in src],
        "frame": np.array([u.frame for u in src], np.int64),
        "timestamp": np.array([u.timestamp for u in src], np.float64),
        # faces of one image are contiguous: number them from that image's first row
        "face_index": (np.arange(n) - np.searchsorted(idx, idx, side="left")).astype(np.int32),
        "width": np.array([u.image.shape[1] for u in src], np.int32),
        "height": np.array([u.image.shape[0] for u in src], np.int32),
        "bbox": faces.bbox[order].reshape(n, 4).astype(np.float32),
        "kps": faces.kps[order].reshape(n, 10).astype(np.float32),
        "det_score": faces.det_score[order].reshape(n).astype(np.float32),
    }
    for f in features:
        block[f] = getattr(faces, f)[order]
    block.update(row_columns(pictures, idx, block["bbox"], block["kps"], faces.face[order], tracker))
    rows.block = block
    rows.tracking = tracker.state()
    return rows


def _name(u: Unit) -> str:
    return u.item.path if u.frame < 0 else f"{u.item.path} frame {u.frame}"


def _record(u: Unit, kind: str, reason: str) -> dict:
    ts = None if math.isnan(u.timestamp) else u.timestamp
    return {"item": u.item.index, "path": display_path(u.item.path), "frame": u.frame, "timestamp": ts,
            "kind": kind, "reason": display_path(reason)}
