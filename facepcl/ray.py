"""facepcl on Ray Data: stages for your pipelines, :class:`RayEngine` for ``facepcl embed --engine ray``.

The stages are callable classes for ``Dataset.map_batches``. :class:`DetectFaces`
(CPU actors, the detector loaded once per actor) decodes each input of an
``image`` column (paths, object-store URLs, encoded bytes or decoded
``(H, W, 3)`` RGB arrays; a video is read whole, every ``every``-th frame, in
frame order), detects and aligns, and returns one row per face with its
aligned ``crop``, box, landmarks and detector score in the file's pixels.
:class:`EncodeFaces` (the model's actors, a GPU each where there are GPUs)
encodes those crops into ``face``, ``pose`` and ``trunk``. :class:`EmbedFaces`
is both in one actor. The codes are :meth:`facepcl.FaceEmbedder.embed_loaded`'s.
An unreadable or faceless input gives one row with a ``status`` and an
``error`` reason instead of a crash::

    import ray
    from facepcl.ray import EmbedFaces

    ds = ray.data.from_items([{"image": p} for p in paths])
    faces = ds.map_batches(EmbedFaces, fn_constructor_kwargs={"model": "pcl-demo"},
                           batch_size=32, compute=ray.data.ActorPoolStrategy(size=4))

:class:`RayEngine` is the :class:`~facepcl.export.Engine` behind
``facepcl embed INPUT -o OUT --engine ray [--ray-address ADDR] [--ray-stages N]``:
the driver (the one process that writes) lists the inputs in windows, sends
each window through ``map_batches(DetectFaces)`` then
``map_batches(EncodeFaces)`` (two stages: the default when the cluster has
GPUs) or through ``map_batches(EmbedFaces)`` (one stage), gets the rows back
in input order (``preserve_order``), a video's frames in frame order, and
writes them with the export's own shard writer and tracker, so shards,
manifests, track ids, ``_tracks.parquet``, ``_errors.jsonl``, ``_run.json``
and ``--resume`` (inside a video too) are those of a local run: a Ray run
resumes a local run's folder and the other way round. Actors restart and
their tasks are retried when a worker dies; the driver writes each input
once whatever Ray retried. See docs/ray.md.

Ray is an optional dependency (``pip install "facepcl[ray]"``); this module
imports without it and says so when a Ray feature is used.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._utils.constants import FEATURES
from .errors import ImageLoadError, NoFaceError
from .export import BATCH_SIZE, Cursor, EmbedOptions, ExportStateError, InputItem
from .io import describe
from .io.inputs import ListingInterrupted, media_kind
from .io.prefetch import prefetch
from .io.storage import StorageCredentialsError, StorageError
from .io.stream import Unit, file_stamp, iter_units, read_input
from .results import EmbeddingResult
from .tracking import box_sharpness, colour_histogram

if TYPE_CHECKING:
    from .io.ranks import DistInfo

__all__ = ["WINDOW", "DetectFaces", "EmbedFaces", "EncodeFaces", "RayEngine", "require_ray"]

#: Fewest inputs the Ray engine sends through one Ray Data pipeline (each window starts the actor pool anew).
WINDOW = 16384

#: Values of the ``status`` column of :class:`DetectFaces` (and so of :class:`EmbedFaces`).
STATUSES = ("face", "no_face", "unreadable", "end", "truncated")


def require_ray() -> Any:
    """The ``ray`` module with Ray Data loaded.

    Raises:
        ImportError: Ray (with Ray Data) is not installed; the message says how to install it.
    """
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ImportError(f'facepcl\'s Ray features need Ray Data, which is not installed ({e}); '
                          'pip install "facepcl[ray]"') from None
    return ray


def _embedder(model: str | None, revision: str | None, options: dict[str, Any]) -> Any:
    """A :class:`~facepcl.FaceEmbedder` for a stage, its detector built (a missing one fails here, once)."""
    from . import hub
    from .pipeline import FaceEmbedder

    loaded = hub.load(model, revision=revision, device=options.get("device"))
    embedder = FaceEmbedder(loaded, **options)
    if embedder.detect:
        embedder.detector  # noqa: B018
    return embedder


def _check_features(name: str, features: Sequence[str]) -> list[str]:
    bad = sorted(set(features) - set(FEATURES))
    if bad or not features:
        raise ValueError(f"{name}: features must be a non-empty subset of {', '.join(FEATURES)}; got "
                         f"{list(features)}")
    return [f for f in FEATURES if f in features]


class _Record:
    """One image or video frame of a stage-1 batch (or a video's end), before it becomes rows."""

    __slots__ = ("error", "frame", "image", "input", "prepared", "status", "timestamp")

    def __init__(self, input: int, frame: int = -1, timestamp: float = math.nan, image: np.ndarray | None = None,
                 prepared: Any = None, error: str = "", status: str = "unreadable") -> None:
        self.input, self.frame, self.timestamp, self.image = input, frame, timestamp, image
        self.prepared, self.error, self.status = prepared, error, status


class DetectFaces:
    """Stage 1 for ``ray.data.Dataset.map_batches`` (CPU actors): decode, detect and align; one row per face.

    Each instance (one per Ray actor) loads the model's configuration and
    the detector once; the encoder never runs here. A call decodes its
    batch's still images in ``num_workers`` threads, detects and aligns them
    exactly as :meth:`facepcl.FaceEmbedder.embed_loaded` does
    (:meth:`~facepcl.FaceEmbedder.align_loaded`), and returns the rows of
    every input in input order. A video (a path with a video extension, or
    a ``kind`` column saying "video": a video file or a folder of frames) is
    read whole by the call that gets it, every ``every``-th frame, in frame
    order; its rows end with one row of status "end" (or "truncated" /
    "unreadable" with the reason). Feed the rows to :class:`EncodeFaces`.

    Args:
        model: A ``facepcl.load`` name, Hub id or folder (None: the default model).
        revision: Hub revision to pin.
        column: The input column: paths or object-store URLs (str), encoded image
            bytes, or decoded ``(H, W, 3)`` uint8 RGB arrays (the embedder's ``color_order``).
            Optional columns: ``kind`` ("image" or "video") and ``after_frame`` (a video's
            frames up to this index are skipped; -1: none).
        every: Keep every ``every``-th video frame.
        storage_options: fsspec filesystem arguments for URL inputs (None: the
            filesystem's own configuration, e.g. ``AWS_*`` variables).
        **options: :class:`~facepcl.FaceEmbedder` options (``mode``,
            ``detector={...}``, ``on_no_face``, ``num_workers``, ...); ``device``
            defaults to "cpu".

    Yields (per call): dicts of equal-length columns, one row per face, plus one
    row per image or frame without a face (``on_no_face="skip"``) or that could not be read,
    plus a video's last row:

    - every input column except ``column``, repeated for each of the input's rows;
    - ``source`` (str): the path, or a description of bytes/arrays;
    - ``frame`` (int64): the video frame, -1 for still images and a video's last row;
      ``timestamp`` (float64): the frame's time in seconds, NaN for still images;
    - ``status`` (str): "face", "no_face", "unreadable", or on a video's last row "end",
      "truncated" (it ended early; its frames before are in) or "unreadable";
      ``error`` (str): why ("" for faces and "end");
    - ``face_index`` (int32): the face's number within its image (score order), -1 without a face;
    - ``width``, ``height`` (int32): the decoded image's size (-1 without an image);
    - ``bbox`` ``(4,)``, ``kps`` ``(5, 2)``, ``det_score`` (float32), in the image's pixels; NaN without a face;
    - ``histogram`` ``(16, 8)`` float32: a video frame's :func:`facepcl.tracking.colour_histogram` (shot
      cuts), ``sharpness`` (float32): a video face's :func:`facepcl.tracking.box_sharpness`; NaN otherwise;
    - ``crop`` ``(S, S, 3)`` uint8: the aligned face (zeros without a face), S the model's crop size.

    Attributes:
        embedder: The :class:`~facepcl.FaceEmbedder` (its encoder unused).

    Raises:
        NoFaceError: (per call) ``on_no_face="error"`` and an image has no face.
    """

    def __init__(self, model: str | None = None, *, revision: str | None = None, column: str = "image",
                 every: int = 1, storage_options: dict[str, Any] | None = None, **options: Any) -> None:
        if every < 1:
            raise ValueError(f"DetectFaces: every must be at least 1, got {every}")
        self._setup(_embedder(model, revision, {"device": "cpu", **options}), column, every, storage_options)

    def _setup(self, embedder: Any, column: str, every: int, storage_options: dict[str, Any] | None) -> None:
        self.embedder = embedder
        self.column = column
        self.every = every
        self.storage_options = storage_options

    def __call__(self, batch: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        """Rows of one batch of inputs (see the class docstring), in order, in parts.

        The still images before each video make one part, then the video's frames ``batch_size`` at a time,
        which bounds what a long video holds in memory.
        """
        if self.column not in batch:
            raise KeyError(f"{type(self).__name__}: the batch has no {self.column!r} column (it has {sorted(batch)}); "
                           "pass column=NAME for the column holding paths, bytes or images")
        sources = batch[self.column]
        n = len(sources)
        emb = self.embedder
        kinds = [str(batch["kind"][i]) if "kind" in batch else
                 (media_kind(sources[i]) or "image") if isinstance(sources[i], str) else "image" for i in range(n)]

        def decode(i: int) -> _Record:
            src = sources[i]
            try:
                image = read_input(emb.load, src, self.storage_options)[0]
            except StorageCredentialsError:
                raise  # not this input's fault: every other object would fail alike
            except (ImageLoadError, StorageError) as e:
                return _Record(i, error=str(e))
            except Exception as e:  # a decoder bug on a hostile file fails that input only
                return _Record(i, error=f"{describe(src)}: could not be decoded ({type(e).__name__}: {e})")
            return _Record(i, image=image, prepared=emb.prepare(image) if emb.detect else None)

        stills = [i for i in range(n) if kinds[i] != "video"]
        decoded = dict(zip(stills, prefetch(decode, stills, workers=emb.num_workers, lookahead=max(1, n)),
                           strict=True))
        names = [describe(src) for src in sources]

        def finish(part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            idx = part.pop("input")
            part.update({k: np.asarray(v)[idx] for k, v in batch.items() if k != self.column})
            return part

        pending: list[_Record] = []
        for i in range(n):
            if kinds[i] != "video":
                pending.append(decoded[i])
                continue
            if pending:
                yield finish(self._rows(pending, names))
                pending = []
            after = int(batch["after_frame"][i]) if "after_frame" in batch else -1
            for part in self._video(i, str(sources[i]), names, after):
                yield finish(part)
        if pending or n == 0:
            yield finish(self._rows(pending, names))

    def _video(self, i: int, path: str, names: list[str], after: int) -> Iterator[dict[str, np.ndarray]]:
        """The rows of one video, in chunks of ``batch_size`` frames."""
        emb = self.embedder
        item = InputItem(i, path, "video", "")
        units = iter_units([item], emb.load, every=self.every, workers=1, lookahead=emb.batch_size,
                           partial=(i, after) if after >= 0 else None,
                           prepare=emb.prepare if emb.detect else None, storage_options=self.storage_options)
        chunk: list[_Record] = []
        with contextlib.closing(units):
            for unit in units:
                if unit.end:
                    status = "end" if unit.error is None else unit.error_kind
                    chunk.append(_Record(i, error=unit.error or "", status=status))
                else:
                    chunk.append(_Record(i, unit.frame, unit.timestamp, unit.image, unit.prepared, unit.error or ""))
                if len(chunk) >= emb.batch_size or unit.end:
                    yield self._rows(chunk, names)
                    chunk = []

    def _rows(self, records: list[_Record], names: list[str]) -> dict[str, np.ndarray]:
        """The rows of ``records`` (images and frames of one batch, a video's end), in order."""
        emb = self.embedder
        ok = [j for j, r in enumerate(records) if r.image is not None]
        size = emb.crop_size
        if ok:
            label = [names[records[j].input] if records[j].frame < 0
                     else f"{names[records[j].input]} frame {records[j].frame}" for j in ok]
            found = emb.align_loaded([records[j].image for j in ok], indices=ok, names=label,
                                     prepared=[records[j].prepared for j in ok] if emb.detect else None)
            image_index = found.image_index
        else:
            found, image_index = None, np.zeros(0, np.int64)
        take, face_index, status, error, counts = [], [], [], [], np.zeros(len(records), np.int64)
        for j, r in enumerate(records):
            at = np.flatnonzero(image_index == j)
            if len(at) == 0:  # no image, or no face and on_no_face="skip"
                take.append(-1)
                face_index.append(-1)
                status.append(r.status if r.image is None else "no_face")
                error.append(r.error if r.image is None else f"{label[ok.index(j)]}: no face found")
                counts[j] = 1
                continue
            take.extend(at.tolist())
            face_index.extend(range(len(at)))
            status.extend(["face"] * len(at))
            error.extend([""] * len(at))
            counts[j] = len(at)
        take_a = np.asarray(take, np.int64)
        has = take_a >= 0
        src = np.repeat(np.arange(len(records)), counts)

        def pick(values: np.ndarray | None, shape: tuple[int, ...], fill: Any = np.nan, dtype: Any = np.float32):
            col = np.full((len(take_a), *shape), fill, dtype)
            if values is not None and has.any():
                col[has] = values[take_a[has]].reshape(-1, *shape)
            return col

        sizes = np.array([(-1, -1) if r.image is None else r.image.shape[:2] for r in records],
                         np.int32).reshape(-1, 2)
        # what tracking measures on a video frame's pixels, measured here where the frame is
        hist = np.full((len(records), 16, 8), np.nan, np.float32)
        for j, r in enumerate(records):
            if r.image is not None and r.frame >= 0:
                hist[j] = colour_histogram(r.image)
        bbox = pick(None if found is None else found.bbox, (4,))
        sharp = np.array([box_sharpness(records[j].image, b) if t >= 0 and records[j].frame >= 0 else np.nan
                          for j, t, b in zip(src, take_a, bbox, strict=True)], np.float32)
        return {
            "input": np.array([records[j].input for j in src], np.int64),
            "source": np.array([names[records[j].input] for j in src], dtype=object),
            "frame": np.array([records[j].frame for j in src], np.int64),
            "timestamp": np.array([records[j].timestamp for j in src], np.float64),
            "status": np.array(status, dtype=object),
            "error": np.array(error, dtype=object),
            "face_index": np.asarray(face_index, np.int32),
            "width": sizes[src, 1],
            "height": sizes[src, 0],
            "bbox": bbox,
            "kps": pick(None if found is None else found.kps, (5, 2)),
            "det_score": pick(None if found is None else found.det_score, ()),
            "histogram": hist[src],
            "sharpness": sharp,
            "crop": pick(None if found is None else found.crops, (size, size, 3), 0, np.uint8),
        }


class EncodeFaces:
    """Stage 2 for ``ray.data.Dataset.map_batches`` (the model's actors, a GPU each where there are GPUs).

    Each instance loads the model once and encodes the ``crop`` of every row of
    :class:`DetectFaces` whose ``status`` is "face" with
    :meth:`facepcl.FaceEmbedder.encode`, in batches of ``batch_size`` crops.

    Args:
        model: A ``facepcl.load`` name, Hub id or folder (None: the default model); the one
            :class:`DetectFaces` used (its crop size and template).
        revision: Hub revision to pin.
        features: Which of ``face``, ``pose``, ``trunk`` to return.
        **options: :class:`~facepcl.FaceEmbedder` options (``mode``, ``device``, ``batch_size``, ...).

    Returns (per call): the rows of :class:`DetectFaces` without ``crop``, plus one
    ``(D,)`` float32 column per feature (NaN without a face) and ``encoder_sha256``
    (str): the encoder's weights digest (:mod:`facepcl._utils.digest`).

    Attributes:
        embedder: The :class:`~facepcl.FaceEmbedder`.
        provenance: :meth:`~facepcl.FaceEmbedder.provenance` of the embedder.

    Raises:
        KeyError: (per call) the batch has no ``crop`` column.
    """

    def __init__(self, model: str | None = None, *, revision: str | None = None,
                 features: Sequence[str] = FEATURES, **options: Any) -> None:
        features = _check_features("EncodeFaces", features)
        self._setup(_embedder(model, revision, options), features)

    def _setup(self, embedder: Any, features: list[str]) -> None:
        self.embedder = embedder
        self.features = features
        self.provenance = embedder.provenance()
        self._sha = self.provenance["encoder_sha256"]

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        """Rows of one batch of :class:`DetectFaces` rows, encoded (see the class docstring)."""
        if "crop" not in batch:
            raise KeyError(f"EncodeFaces: the batch has no 'crop' column (it has {sorted(batch)}); feed it the "
                           "rows of DetectFaces")
        out = {k: np.asarray(v) for k, v in batch.items() if k != "crop"}
        n = len(out["status"])
        faces = np.flatnonzero(out["status"] == "face")
        feats = self.embedder.encode(np.asarray(batch["crop"])[faces]) if len(faces) else None
        for f in self.features:
            col = np.full((n, self.embedder.dim), np.nan, np.float32)
            if feats is not None:
                col[faces] = feats[f]
            out[f] = col
        out["encoder_sha256"] = np.full(n, self._sha, dtype=object)
        return out


class EmbedFaces:
    """A callable class for ``ray.data.Dataset.map_batches``: inputs in, one row per face out.

    :class:`DetectFaces` then :class:`EncodeFaces` in one actor, which loads the
    model and the detector once: the rows are those of :class:`EncodeFaces`
    (the codes :meth:`facepcl.FaceEmbedder.embed_loaded` gives). Use the two
    stages as two ``map_batches`` to detect on CPU actors and encode on GPU actors.

    Args:
        model: A ``facepcl.load`` name, Hub id or folder (None: the default model).
        revision: Hub revision to pin.
        features: Which of ``face``, ``pose``, ``trunk`` to return.
        column: The input column (see :class:`DetectFaces`).
        every: Keep every ``every``-th video frame.
        storage_options: fsspec filesystem arguments for URL inputs.
        **options: :class:`~facepcl.FaceEmbedder` options (``mode``, ``device``,
            ``detector={...}``, ``batch_size``, ``on_no_face``, ``num_workers``, ...).

    Attributes:
        embedder: The :class:`~facepcl.FaceEmbedder`.
        provenance: :meth:`~facepcl.FaceEmbedder.provenance` of the embedder.

    Raises:
        NoFaceError: (per call) ``on_no_face="error"`` and an input has no face.
    """

    def __init__(self, model: str | None = None, *, revision: str | None = None,
                 features: Sequence[str] = FEATURES, column: str = "image", every: int = 1,
                 storage_options: dict[str, Any] | None = None, **options: Any) -> None:
        features = _check_features("EmbedFaces", features)
        if every < 1:
            raise ValueError(f"EmbedFaces: every must be at least 1, got {every}")
        embedder = _embedder(model, revision, options)
        self.detect_faces = DetectFaces.__new__(DetectFaces)
        self.detect_faces._setup(embedder, column, every, storage_options)
        self.encode_faces = EncodeFaces.__new__(EncodeFaces)
        self.encode_faces._setup(embedder, features)
        self.embedder = embedder
        self.provenance = self.encode_faces.provenance

    def __call__(self, batch: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        """Rows of one batch of inputs, in parts (see :class:`DetectFaces` and :class:`EncodeFaces`)."""
        for part in self.detect_faces(batch):
            yield self.encode_faces(part)


def _local_cluster(ray: Any) -> bool:
    """Whether the Ray cluster is this machine alone."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return len(nodes) == 1 and nodes[0].get("NodeManagerAddress") == ray.util.get_node_ip_address()


def _provenance(constructor: dict[str, Any]) -> dict[str, Any]:
    """The provenance an :class:`EmbedFaces` built with ``constructor`` has (run where its actors will run)."""
    return EmbedFaces(**constructor).provenance


class RayEngine:
    """The export engine on a Ray cluster (``facepcl embed --engine ray``); see the module docstring.

    Use it as a context manager around :func:`facepcl.export.run_embed`: it
    connects to (or starts) Ray on :meth:`start` and shuts down a Ray it
    started on exit. A Ray already initialised in this process (``ray.init``
    by the caller) is used as it is. Each window's pipeline runs with
    ``preserve_order`` set on the process's current Ray ``DataContext``.

    Args:
        address: Ray cluster address (``ray.init(address=...)``); None: a
            running Ray in this process, else a new local one.
        actors: Embedding actors (None: one per GPU when the cluster has GPUs
            and no CPU ``device`` was asked for, else one per ``cpus_per_actor`` CPUs).
        cpus_per_actor: CPUs each actor reserves (its torch and decoding threads;
            default 1 on CPU-only clusters, else the cluster's CPUs per GPU, at most 8).
        window: Inputs per Ray Data pipeline (None: :data:`WINDOW` or 8192 per actor, whichever is more).
            Each window starts the actor pool anew (each actor loads the model), and its last batches leave
            actors idle, so a window should hold many batches per actor.
        split: Two stages, :class:`DetectFaces` on a pool of one-CPU actors then :class:`EncodeFaces` on the
            embedding actors (the detector then runs on CPU); False: :class:`EmbedFaces`, both in each
            embedding actor. None: split when the embedding actors have GPUs.
    """

    def __init__(self, address: str | None = None, *, actors: int | None = None,
                 cpus_per_actor: float | None = None, window: int | None = None,
                 split: bool | None = None) -> None:
        if actors is not None and actors < 1:
            raise ValueError(f"RayEngine: actors must be at least 1, got {actors}")
        if window is not None and window < 1:
            raise ValueError(f"RayEngine: window must be at least 1, got {window}")
        self.address = address
        self.actors = actors
        self.cpus_per_actor = cpus_per_actor
        self.window = window
        self.split = split
        self.detect_pool: dict[str, Any] = {}
        self._started_ray = False
        self.constructor: dict[str, Any] = {}
        self.actor_options: dict[str, Any] = {}
        self.no_face_error = False
        self.batch_size = BATCH_SIZE
        self.dim = 0
        self.encoder_sha256 = ""
        self.window_size = window or WINDOW
        self.pool: dict[str, Any] = {}

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started_ray:
            require_ray().shutdown()
            self._started_ray = False

    # -- Engine ------------------------------------------------------------------------------------------

    def start(self, opts: EmbedOptions, info: DistInfo) -> dict[str, Any]:
        """Connect to Ray, size the actor pool, and get the provenance from where the actors run.

        Raises:
            ValueError: torchrun, a CUDA device on a cluster without GPUs.
            ImportError: Ray is not installed.
        """
        if info.distributed:
            raise ValueError("--engine ray runs as one process (Ray spreads the work): start it without torchrun")
        ray = require_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False,
                     include_dashboard=False if self.address is None else None)
            self._started_ray = True
            logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-window execution reports
        resources = ray.cluster_resources()
        options = {"batch_size": BATCH_SIZE, **opts.embedder}
        device = options.get("device")
        on_gpu = device is None or str(device).startswith("cuda")
        gpus = int(resources.get("GPU", 0)) if on_gpu else 0
        if device is not None and str(device).startswith("cuda") and gpus == 0:
            raise ValueError(f"--device {device}: the Ray cluster has no GPU; pass --device cpu or leave --device "
                             "out")
        cpus = max(1.0, float(resources.get("CPU", 1)))
        self.split = bool(gpus) if self.split is None else self.split
        if gpus and self.split:  # the detector runs in the CPU actors of stage 1
            per = self.cpus_per_actor or 1.0
            self.pool = {"size": self.actors or gpus, "num_cpus": per, "num_gpus": 1}
            options["device"] = "cuda"
            detector = options.get("detector")
            detector = {"name": detector} if isinstance(detector, str) else dict(detector or {})
            options["detector"] = {"device": "cpu", **detector}
        elif gpus:
            per = self.cpus_per_actor or max(1.0, min(8.0, cpus // gpus))
            self.pool = {"size": self.actors or gpus, "num_cpus": per, "num_gpus": 1}
            options["device"] = "cuda"
        else:
            per = self.cpus_per_actor or 1.0
            self.pool = {"size": self.actors or max(1, int(cpus // per)), "num_cpus": per, "num_gpus": 0}
            options.setdefault("device", "cpu")
        if self.split:
            spare = cpus - self.pool["size"] * self.pool["num_cpus"]
            self.detect_pool = {"size": max(1, int(spare)), "num_cpus": 1.0}
            options.setdefault("num_workers", opts.num_workers or 1)
        else:
            options.setdefault("num_workers", opts.num_workers or max(1, int(per)))
        self.batch_size = int(options["batch_size"])
        self.window_size = self.window or max(WINDOW, 8192 * self.pool["size"])
        self.constructor = {"model": opts.model, "revision": opts.revision, "features": list(opts.features),
                            "every": opts.every, "storage_options": opts.storage_options, **options}
        # on_no_face="error": the actors record faceless images and the driver raises, in input order (an
        # exception raised in an actor reaches the driver as Ray's, without the NoFaceError)
        self.no_face_error = options.get("on_no_face") == "error"
        self.actor_options = self.constructor | ({"on_no_face": "skip"} if self.no_face_error else {})
        if gpus or not _local_cluster(ray):
            # where the actors run: their hardware decides what they compute (the "accel" of the provenance)
            probe = ray.remote(num_cpus=per, num_gpus=self.pool["num_gpus"], max_retries=3)(_provenance)
            provenance = ray.get(probe.remote(self.constructor))
        else:  # the actors run on this machine's CPUs: no need to start a worker to ask
            provenance = _provenance(self.constructor)
        self.dim = int(provenance["feature_dim"])
        self.encoder_sha256 = provenance["encoder_sha256"]
        return provenance

    def batches(self, opts: EmbedOptions, items: Iterator[InputItem],
                resume_at: Cursor) -> Iterator[tuple[list[Unit], EmbeddingResult | None]]:
        """See :meth:`facepcl.export.Engine.batches`: windows of inputs through Ray Data, regrouped in order.

        A video continued part way (``resume_at`` not complete) starts after its last frame done, as locally.

        Raises:
            ExportStateError: An actor's model is not the one the run started with (its ``encoder_sha256``).
            NoFaceError: ``on_no_face="error"`` and an image has no face (its batch is not written).
        """
        after = {} if resume_at.complete else {resume_at.item: resume_at.frame}
        dim = self.dim
        batch: list[Unit] = []
        rows: list[dict[str, np.ndarray] | None] = []
        images = 0
        try:
            while True:
                window = list(itertools.islice(items, self.window_size))
                if not window:
                    break
                with contextlib.closing(self._window(window, after)) as units:
                    for unit, got in units:
                        batch.append(unit)
                        rows.append(got)
                        images += unit.image is not None
                        if images >= self.batch_size or len(batch) >= 4 * self.batch_size:
                            yield batch, _faces(rows, dim)
                            batch, rows, images = [], [], 0
        except ListingInterrupted:
            if batch:
                yield batch, _faces(rows, dim)
            raise
        if batch:
            yield batch, _faces(rows, dim)

    # -- internals ---------------------------------------------------------------------------------------

    def _window(self, window: list[InputItem],
                after: dict[int, int]) -> Iterator[tuple[Unit, dict[str, np.ndarray] | None]]:
        """Each unit of ``window`` (images; a video's frames and end) with the rows of its faces, in order."""
        todo = [item for item in window if item.error is None]
        stamps = {item.index: file_stamp(item.path, self.constructor["storage_options"]) for item in todo}
        results = self._run(todo, after) if todo else iter(())
        groups = _group(results)
        try:
            for item in window:
                if item.error is not None:
                    yield Unit(item, error=f"{item.path}: {item.error}"), None
                    continue
                while True:
                    index, frame, got = next(groups, (None, None, None))
                    if index != item.index or got is None:
                        raise RuntimeError(f"Ray returned the faces of input {index} where input {item.index} "
                                           f"({item.path}) was expected; the pipeline lost its order (a bug: "
                                           "report it)")
                    unit = self._unit(item, frame, got, stamps[item.index])
                    yield unit
                    if unit[0].end:
                        break
        finally:  # stop Ray Data's iterator now, not when garbage collection gets to it (Ray may be shut down)
            groups.close()
            if hasattr(results, "close"):
                results.close()

    def _unit(self, item: InputItem, frame: int, got: dict[str, np.ndarray],
              stamp: tuple[int, int] | None) -> tuple[Unit, dict[str, np.ndarray] | None]:
        """The unit of one image, frame or video end from its rows (see :class:`EmbedFaces`), checked."""
        if got["encoder_sha256"][0] != self.encoder_sha256:
            raise ExportStateError(
                f"{item.path} was embedded by a model whose encoder_sha256 is {got['encoder_sha256'][0]}, but this "
                f"run's is {self.encoder_sha256}: the Ray workers load other weights for --model "
                f"{self.constructor['model']!r} (another revision in a node's cache, another folder at that path). "
                "Make every node load the same model (pin --revision, or use a folder on a shared filesystem), then "
                "run the same command with --resume")
        status, error = str(got["status"][0]), str(got["error"][0])
        video = item.kind == "video"
        if video and frame < 0:  # the video's end
            if status == "end":
                return Unit(item, stamp=stamp), None
            if status == "truncated":
                return Unit(item, error=error, stamp=stamp, error_kind="truncated"), None
            return Unit(item, error=error), None
        timestamp = float(got["timestamp"][0])
        if status == "no_face" and self.no_face_error:
            raise NoFaceError(f"{error} (--on-no-face error); pass --on-no-face skip or full_image, "
                              "a lower --det-threshold, or --no-detect if the inputs are aligned face crops")
        if status == "unreadable":
            return Unit(item, frame, timestamp, error=error, end=not video), None
        h, w = int(got["height"][0]), int(got["width"][0])
        shape_only = np.broadcast_to(np.zeros((), np.uint8), (h, w, 3))  # the rows need the image's size only
        if video:
            sharpness = np.asarray(got["sharpness"], np.float32) if status == "face" else None
            return Unit(item, frame, timestamp, shape_only, end=False, histogram=np.asarray(got["histogram"][0]),
                        sharpness=sharpness), got
        return Unit(item, image=shape_only, stamp=stamp), got

    def _run(self, todo: list[InputItem], after: dict[int, int]) -> Iterator[dict[str, np.ndarray]]:
        """The output blocks of the pipeline over ``todo``, in input order."""
        ray = require_ray()
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        blocks = max(1, math.ceil(len(todo) / self.batch_size))
        ds = ray.data.from_items([{"image": item.path, "item": item.index, "kind": item.kind,
                                   "after_frame": after.get(item.index, -1)} for item in todo],
                                 override_num_blocks=blocks)
        if not self.split:
            ds = ds.map_batches(EmbedFaces, fn_constructor_kwargs=self.actor_options, batch_size=self.batch_size,
                                batch_format="numpy", compute=ActorPoolStrategy(size=min(self.pool["size"], blocks)),
                                num_cpus=self.pool["num_cpus"], num_gpus=self.pool["num_gpus"])
        else:
            stage1 = {k: v for k, v in self.actor_options.items() if k != "features"} | {"device": "cpu"}
            stage2 = {k: v for k, v in self.actor_options.items() if k not in ("every", "storage_options")}
            ds = ds.map_batches(DetectFaces, fn_constructor_kwargs=stage1, batch_size=self.batch_size,
                                batch_format="numpy",
                                compute=ActorPoolStrategy(size=min(self.detect_pool["size"], blocks)),
                                num_cpus=self.detect_pool["num_cpus"], num_gpus=0)
            ds = ds.map_batches(EncodeFaces, fn_constructor_kwargs=stage2, batch_size=self.batch_size,
                                batch_format="numpy", compute=ActorPoolStrategy(size=min(self.pool["size"], blocks)),
                                num_cpus=self.pool["num_cpus"], num_gpus=self.pool["num_gpus"])
        yield from ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2)


def _group(blocks: Iterator[dict[str, np.ndarray]]) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """``(item, frame, rows)`` for each run of consecutive rows of one image or frame, across blocks."""
    current: tuple[int, int] | None = None
    parts: list[dict[str, np.ndarray]] = []
    for block in blocks:
        items = np.asarray(block["item"])
        if len(items) == 0:
            continue
        frames = np.asarray(block["frame"])
        cuts = np.flatnonzero((np.diff(items) != 0) | (np.diff(frames) != 0)) + 1
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(items)], strict=True):
            key = (int(items[lo]), int(frames[lo]))
            piece = {k: v[lo:hi] for k, v in block.items()}
            if current is not None and key != current:
                yield (*current, _concat(parts))
                parts = []
            current = key
            parts.append(piece)
    if current is not None:
        yield (*current, _concat(parts))


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _faces(rows: list[dict[str, np.ndarray] | None], dim: int) -> EmbeddingResult | None:
    """The batch's faces as :meth:`FaceEmbedder.embed_loaded` returns them, ``image_index`` counting its images."""
    got = [r for r in rows if r is not None]
    if not got:
        return None
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("bbox", "kps", "det_score", "image_index", *FEATURES)}
    no_face: list[int] = []
    for j, r in enumerate(got):
        keep = r["status"] == "face"
        if not keep.any():
            no_face.append(j)
            continue
        n = int(keep.sum())
        parts["image_index"].append(np.full(n, j, np.int64))
        for k in ("bbox", "kps", "det_score"):
            parts[k].append(np.asarray(r[k][keep], np.float32))
        for f in FEATURES:
            parts[f].append(np.asarray(r[f][keep], np.float32) if f in r else np.zeros((n, dim), np.float32))
    if not parts["image_index"]:
        return EmbeddingResult.empty(dim, no_face=no_face, num_images=len(got))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return EmbeddingResult(**cat, no_face=no_face, num_images=len(got))
