"""facepcl on Ray Data: :class:`EmbedFaces` for your pipelines, :class:`RayEngine` for ``facepcl embed --engine ray``.

:class:`EmbedFaces` is a callable class for ``Dataset.map_batches``: each
actor loads the model once, and each batch of inputs (an ``image`` column of
paths, encoded bytes or decoded ``(H, W, 3)`` RGB arrays) becomes one row
per face with its ``face``, ``pose`` and ``trunk`` codes, box, landmarks,
detector score, the input's other columns, its ``source`` and face index,
and the model's ``encoder_sha256``. An unreadable or faceless input gives
one row with a ``status`` and an ``error`` reason instead of a crash::

    import ray
    from facepcl.ray import EmbedFaces

    ds = ray.data.from_items([{"image": p} for p in paths])
    faces = ds.map_batches(EmbedFaces, fn_constructor_kwargs={"model": "pcl-demo"},
                           batch_size=32, compute=ray.data.ActorPoolStrategy(size=4))

:class:`RayEngine` is the :class:`~facepcl.export.Engine` behind
``facepcl embed INPUT -o OUT --engine ray [--ray-address ADDR]``: the driver
(the one process that writes) lists the inputs in windows, sends each window
through ``map_batches(EmbedFaces)`` on an actor pool (one model per actor, one
GPU per actor when the cluster has GPUs), gets the faces back in input order
(``preserve_order``) and writes them with the export's own shard writer, so
shards, manifests, ``_errors.jsonl``, ``_run.json`` and ``--resume`` are
those of a local run: a Ray run resumes a local run's folder and the other
way round. Actors restart and their tasks are retried when a worker dies;
the driver writes each input once whatever Ray retried. Videos (and
``--sequences``) are not embedded by the Ray engine: tracking needs the
frames of a video in order in one place; embed them with the local engine
(``facepcl embed ... --resume`` without ``--engine`` continues a Ray run's
folder). See docs/ray.md.

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
from .io.images import MAX_FILE_BYTES
from .io.inputs import ListingInterrupted
from .io.prefetch import prefetch
from .io.storage import StorageCredentialsError, StorageError, is_url, read_url
from .io.stream import Unit, file_stamp
from .results import EmbeddingResult

if TYPE_CHECKING:
    from .io.ranks import DistInfo

__all__ = ["WINDOW", "EmbedFaces", "RayEngine", "require_ray"]

#: Fewest inputs the Ray engine sends through one Ray Data pipeline (each window starts the actor pool anew).
WINDOW = 16384

#: Values of the ``status`` column of :class:`EmbedFaces`.
STATUSES = ("face", "no_face", "unreadable")


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


class EmbedFaces:
    """A callable class for ``ray.data.Dataset.map_batches``: inputs in, one row per face out.

    Each instance (one per Ray actor) loads the model and the detector once.
    A call decodes its batch's inputs in ``num_workers`` threads, detects,
    aligns and encodes them exactly as :meth:`facepcl.FaceEmbedder.embed_loaded`
    does, and returns the rows of every input in input order.

    Args:
        model: A ``facepcl.load`` name, Hub id or folder (None: the default model).
        revision: Hub revision to pin.
        features: Which of ``face``, ``pose``, ``trunk`` to return.
        column: The input column: paths or object-store URLs (str), encoded image
            bytes, or decoded ``(H, W, 3)`` uint8 RGB arrays (the embedder's ``color_order``).
        storage_options: fsspec filesystem arguments for URL inputs (None: the
            filesystem's own configuration, e.g. ``AWS_*`` variables).
        **options: :class:`~facepcl.FaceEmbedder` options (``mode``,
            ``detector={...}``, ``batch_size``, ``on_no_face``, ``num_workers``, ...).

    Returns (per call): a dict of equal-length columns, one row per face, plus one
    row per input without a face (``on_no_face="skip"``) or that could not be read:

    - every input column except ``column``, repeated for each of the input's rows;
    - ``source`` (str): the path, or a description of bytes/arrays;
    - ``status`` (str): "face", "no_face" or "unreadable"; ``error`` (str): why
      ("" for faces);
    - ``face_index`` (int32): the face's number within its input (score order), -1 without a face;
    - ``width``, ``height`` (int32): the decoded image's size (-1 when unreadable);
    - ``bbox`` ``(4,)``, ``kps`` ``(5, 2)``, ``det_score`` (float32), in the image's pixels; NaN without a face;
    - one ``(D,)`` float32 column per feature (NaN without a face);
    - ``encoder_sha256`` (str): the encoder's weights digest (:mod:`facepcl._utils.digest`).

    Attributes:
        embedder: The :class:`~facepcl.FaceEmbedder`.
        provenance: :meth:`~facepcl.FaceEmbedder.provenance` of the embedder.

    Raises:
        NoFaceError: (per call) ``on_no_face="error"`` and an input has no face.
    """

    def __init__(self, model: str | None = None, *, revision: str | None = None,
                 features: Sequence[str] = FEATURES, column: str = "image",
                 storage_options: dict[str, Any] | None = None, **options: Any) -> None:
        from . import hub
        from .pipeline import FaceEmbedder

        bad = sorted(set(features) - set(FEATURES))
        if bad or not features:
            raise ValueError(f"EmbedFaces: features must be a non-empty subset of {', '.join(FEATURES)}; got "
                             f"{list(features)}")
        self.features = [f for f in FEATURES if f in features]
        self.column = column
        self.storage_options = storage_options
        loaded = hub.load(model, revision=revision, device=options.get("device"))
        self.embedder = FaceEmbedder(loaded, **options)
        self.provenance = self.embedder.provenance()  # builds the detector: a missing one fails here, once
        self._sha = self.provenance["encoder_sha256"]

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        """Rows of one batch of inputs (see the class docstring)."""
        if self.column not in batch:
            raise KeyError(f"EmbedFaces: the batch has no {self.column!r} column (it has {sorted(batch)}); "
                           "pass column=NAME for the column holding paths, bytes or images")
        sources = batch[self.column]
        n = len(sources)
        emb = self.embedder

        def decode(i: int) -> tuple[np.ndarray | None, Any, str]:
            src = sources[i]
            try:
                if isinstance(src, str) and is_url(src):
                    image = emb.load(read_url(src, self.storage_options, MAX_FILE_BYTES)[0], name=src)
                else:
                    image = emb.load(src)
            except (ImageLoadError, StorageError) as e:
                if isinstance(e, StorageCredentialsError):
                    raise  # not this input's fault: every other object would fail alike

                return None, None, str(e)
            except Exception as e:  # a decoder bug on a hostile file fails that input only
                return None, None, f"{describe(src)}: could not be decoded ({type(e).__name__}: {e})"
            return image, emb.prepare(image) if emb.detect else None, ""

        decoded = list(prefetch(decode, range(n), workers=emb.num_workers, lookahead=max(1, n)))
        ok = [i for i in range(n) if decoded[i][0] is not None]
        names = [describe(sources[i]) for i in range(n)]
        faces = None
        if ok:
            faces = emb.embed_loaded([decoded[i][0] for i in ok], indices=ok, names=[names[i] for i in ok],
                                     prepared=[decoded[i][1] for i in ok] if emb.detect else None)
        return self._rows(batch, n, decoded, names, faces)

    def _rows(self, batch: dict[str, Any], n: int, decoded: list, names: list[str],
              faces: EmbeddingResult | None) -> dict[str, np.ndarray]:
        dim = self.embedder.dim
        image_index = faces.image_index if faces is not None else np.zeros(0, np.int64)
        take, face_index, status, error = [], [], [], []  # per output row: its face in ``faces`` (-1: none)
        counts = np.zeros(n, np.int64)
        for i in range(n):
            image, _, why = decoded[i]
            at = np.flatnonzero(image_index == i)
            if len(at) == 0:  # unreadable, or no face and on_no_face="skip"
                take.append(-1)
                face_index.append(-1)
                status.append("unreadable" if image is None else "no_face")
                error.append(why if image is None else f"{names[i]}: no face found")
                counts[i] = 1
                continue
            take.extend(at.tolist())
            face_index.extend(range(len(at)))
            status.extend(["face"] * len(at))
            error.extend([""] * len(at))
            counts[i] = len(at)
        take_a = np.asarray(take, np.int64)
        has = take_a >= 0
        src = np.repeat(np.arange(n), counts)
        out: dict[str, np.ndarray] = {k: np.repeat(np.asarray(v), counts, axis=0)
                                      for k, v in batch.items() if k != self.column}

        def pick(values: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
            col = np.full((len(take_a), *shape), np.nan, np.float32)
            if values is not None and has.any():
                col[has] = values[take_a[has]].reshape(-1, *shape)
            return col

        sizes = np.array([(-1, -1) if d[0] is None else d[0].shape[:2] for d in decoded], np.int32).reshape(n, 2)
        out.update({
            "source": np.array([names[i] for i in src], dtype=object),
            "status": np.array(status, dtype=object),
            "error": np.array(error, dtype=object),
            "face_index": np.asarray(face_index, np.int32),
            "width": sizes[src, 1],
            "height": sizes[src, 0],
            "bbox": pick(None if faces is None else faces.bbox, (4,)),
            "kps": pick(None if faces is None else faces.kps, (5, 2)),
            "det_score": pick(None if faces is None else faces.det_score, ()),
        })
        for f in self.features:
            out[f] = pick(None if faces is None else getattr(faces, f), (dim,))
        out["encoder_sha256"] = np.full(len(take_a), self._sha, dtype=object)
        return out


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
    """

    def __init__(self, address: str | None = None, *, actors: int | None = None,
                 cpus_per_actor: float | None = None, window: int | None = None) -> None:
        if actors is not None and actors < 1:
            raise ValueError(f"RayEngine: actors must be at least 1, got {actors}")
        if window is not None and window < 1:
            raise ValueError(f"RayEngine: window must be at least 1, got {window}")
        self.address = address
        self.actors = actors
        self.cpus_per_actor = cpus_per_actor
        self.window = window
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
            ValueError: torchrun, ``--sequences``, a CUDA device on a cluster without GPUs.
            ImportError: Ray is not installed.
        """
        if info.distributed:
            raise ValueError("--engine ray runs as one process (Ray spreads the work): start it without torchrun")
        if opts.sequences:
            raise ValueError("--engine ray embeds still images only: --sequences (tracked frame folders) needs the "
                             "local engine; run the same command without --engine ray")
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
        if gpus:
            per = self.cpus_per_actor or max(1.0, min(8.0, cpus // gpus))
            self.pool = {"size": self.actors or gpus, "num_cpus": per, "num_gpus": 1}
            options["device"] = "cuda"
        else:
            per = self.cpus_per_actor or 1.0
            self.pool = {"size": self.actors or max(1, int(cpus // per)), "num_cpus": per, "num_gpus": 0}
            options.setdefault("device", "cpu")
        options.setdefault("num_workers", opts.num_workers or max(1, int(per)))
        self.batch_size = int(options["batch_size"])
        self.window_size = self.window or max(WINDOW, 8192 * self.pool["size"])
        self.constructor = {"model": opts.model, "revision": opts.revision, "features": list(opts.features),
                            "storage_options": opts.storage_options, **options}
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

        Raises:
            ValueError: An input is a video (or a video to continue part way).
            ExportStateError: An actor's model is not the one the run started with (its ``encoder_sha256``).
            NoFaceError: ``on_no_face="error"`` and an image has no face (its batch is not written).
        """
        if not resume_at.complete:
            raise ValueError(f"{resume_at.path} is a video that a local run stopped part way through; --engine ray "
                             "does not embed videos: continue with the same command without --engine ray")
        dim = self.dim
        batch: list[Unit] = []
        rows: list[dict[str, np.ndarray] | None] = []
        images = 0
        try:
            while True:
                window = list(itertools.islice(items, self.window_size))
                if not window:
                    break
                video = next((i for i, item in enumerate(window) if item.kind == "video"), None)
                with contextlib.closing(self._window(window[:video])) as units:
                    for unit, got in units:
                        batch.append(unit)
                        rows.append(got)
                        images += unit.image is not None
                        if images >= self.batch_size or len(batch) >= 4 * self.batch_size:
                            yield batch, _faces(rows, dim)
                            batch, rows, images = [], [], 0
                if video is not None:
                    if batch:  # the inputs before the video are written
                        yield batch, _faces(rows, dim)
                    raise ValueError(f"{window[video].path} is a video: --engine ray embeds still images only "
                                     "(tracking needs a video's frames in order in one place). The inputs before it "
                                     "are saved; the same command without --engine ray, with --resume, continues "
                                     "this folder, videos included")
        except ListingInterrupted:
            if batch:
                yield batch, _faces(rows, dim)
            raise
        if batch:
            yield batch, _faces(rows, dim)

    # -- internals ---------------------------------------------------------------------------------------

    def _window(self, window: list[InputItem]) -> Iterator[tuple[Unit, dict[str, np.ndarray] | None]]:
        """Each input of ``window`` (still images) as a unit with the rows of its faces, in order."""
        todo = [item for item in window if item.error is None]
        stamps = {item.index: file_stamp(item.path, self.constructor["storage_options"]) for item in todo}
        results = self._run(todo) if todo else iter(())
        by_item = _group(results)
        try:
            for item in window:
                if item.error is not None:
                    yield Unit(item, error=f"{item.path}: {item.error}"), None
                    continue
                index, got = next(by_item, (None, None))
                if index != item.index or got is None:
                    raise RuntimeError(f"Ray returned the faces of input {index} where input {item.index} "
                                       f"({item.path}) was expected; the pipeline lost its order (a bug: report it)")
                yield self._unit(item, got, stamps[item.index])
        finally:  # stop Ray Data's iterator now, not when garbage collection gets to it (Ray may be shut down)
            by_item.close()
            if hasattr(results, "close"):
                results.close()

    def _unit(self, item: InputItem, got: dict[str, np.ndarray],
              stamp: tuple[int, int] | None) -> tuple[Unit, dict[str, np.ndarray] | None]:
        """The unit of one input from its rows (see :class:`EmbedFaces`), checked against the run's settings."""
        if got["encoder_sha256"][0] != self.encoder_sha256:
            raise ExportStateError(
                f"{item.path} was embedded by a model whose encoder_sha256 is {got['encoder_sha256'][0]}, but this "
                f"run's is {self.encoder_sha256}: the Ray workers load other weights for --model "
                f"{self.constructor['model']!r} (another revision in a node's cache, another folder at that path). "
                "Make every node load the same model (pin --revision, or use a folder on a shared filesystem), then "
                "run the same command with --resume")
        status = got["status"][0]
        if status == "no_face" and self.no_face_error:
            raise NoFaceError(f"{got['error'][0]} (--on-no-face error); pass --on-no-face skip or full_image, "
                              "a lower --det-threshold, or --no-detect if the inputs are aligned face crops")
        if status == "unreadable":
            return Unit(item, error=str(got["error"][0])), None
        h, w = int(got["height"][0]), int(got["width"][0])
        shape_only = np.broadcast_to(np.zeros((), np.uint8), (h, w, 3))  # the rows need the image's size only
        return Unit(item, image=shape_only, stamp=stamp), got

    def _run(self, todo: list[InputItem]) -> Iterator[dict[str, np.ndarray]]:
        """The output blocks of ``map_batches(EmbedFaces)`` over ``todo``, in input order."""
        ray = require_ray()
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        blocks = max(1, math.ceil(len(todo) / self.batch_size))
        ds = ray.data.from_items([{"image": item.path, "item": item.index} for item in todo],
                                 override_num_blocks=blocks)
        ds = ds.map_batches(EmbedFaces, fn_constructor_kwargs=self.actor_options, batch_size=self.batch_size,
                            batch_format="numpy", compute=ActorPoolStrategy(size=min(self.pool["size"], blocks)),
                            num_cpus=self.pool["num_cpus"], num_gpus=self.pool["num_gpus"])
        yield from ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2)


def _group(blocks: Iterator[dict[str, np.ndarray]]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(item, rows)`` for each run of consecutive rows of one input, across blocks."""
    current: int | None = None
    parts: list[dict[str, np.ndarray]] = []
    for block in blocks:
        items = np.asarray(block["item"])
        if len(items) == 0:
            continue
        cuts = np.flatnonzero(np.diff(items)) + 1
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(items)], strict=True):
            index = int(items[lo])
            piece = {k: v[lo:hi] for k, v in block.items()}
            if current is not None and index != current:
                yield current, _concat(parts)
                parts = []
            current = index
            parts.append(piece)
    if current is not None:
        yield current, _concat(parts)


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
