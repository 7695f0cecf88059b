"""From images to per-face PCL embeddings: decode, detect, align, encode.

``facepcl.embed(images)`` is the one-call entry point; :class:`FaceEmbedder`
holds a model, a detector and the options for repeated calls. The four steps
stay separate so that bulk tools can run them apart (for example decode in
worker processes and feed :meth:`FaceEmbedder.embed_loaded`):

1. decode: :func:`facepcl.io.load_image` (path, bytes, PIL, numpy, tensor -> RGB uint8);
2. detect: :class:`facepcl.detection.FaceDetector` (batched, any image sizes);
3. align: :func:`facepcl.align.align_faces` (similarity warp onto the model's template);
4. encode: the model's encoder on batches of crops -> face (F_f), pose (F_p), trunk (F).

Bad inputs never sink a batch: a list of inputs records each unreadable one
in ``result.failures`` and returns every other result; a single input raises
:class:`~facepcl.errors.ImageLoadError` naming it.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from .._utils.constants import FEATURES
from ..align import align_faces
from ..align import template as template_points
from ..config import PCLConfig, PreprocessConfig, check_crop_size, feature_dim
from ..detection import Detections, FaceDetector, Prepared
from ..errors import ImageLoadError, NoFaceError
from ..io import describe, load_image
from ..io.images import min_decode_side, original_size, to_original
from ..io.prefetch import default_workers, prefetch
from ..model import PCLFeatures, PCLModel
from ..preprocess import Transform, fit_crop
from ..results import EmbeddingResult, Failure
from ..runtime._accel import check_mode, encoder_plan
from ..runtime._encoders import EncoderRuntime
from ._info import EmbedderInfo
from ._options import cache_key, check_options, detector_options, model_device, resolve_model, split_options
from ._stream import as_stream, chunks

__all__ = ["Aligned", "EmbeddingResult", "FaceEmbedder", "Failure", "embed"]


class Aligned(NamedTuple):
    """The faces of decoded images, detected and aligned but not encoded (:meth:`FaceEmbedder.align_loaded`).

    Attributes:
        crops: ``(N, S, S, 3)`` uint8 RGB aligned crops, S the embedder's ``crop_size``.
        bbox: ``(N, 4)`` float32 boxes ``x1, y1, x2, y2`` in the file's pixels (a whole-image face: the image).
        kps: ``(N, 5, 2)`` float32 landmarks in the file's pixels (NaN for a whole-image face).
        det_score: ``(N,)`` float32 detector scores (NaN for a whole-image face).
        image_index: ``(N,)`` int64 the ``indices`` entry of each face's image.
        no_face: The ``indices`` of the images without a face.
        sources: ``(image, landmarks or None)`` per image with crops, for task heads at other sizes.
    """

    crops: np.ndarray
    bbox: np.ndarray
    kps: np.ndarray
    det_score: np.ndarray
    image_index: np.ndarray
    no_face: list[int]
    sources: list[tuple[np.ndarray, np.ndarray | None]]


class FaceEmbedder(EmbedderInfo):
    """Reusable image -> per-face embedding pipeline.

    Args:
        model: A :class:`~facepcl.PCLModel`, a name / Hub id / folder for
            :func:`facepcl.load`, or None for :func:`facepcl.hub.default_model_name`
            (``$FACEPCL_MODEL``, else the bundled ``pcl-demo``).
        detector: The face detector and its options: a
            :class:`~facepcl.detection.FaceDetector` (used as it is), a
            detector name, a dict of FaceDetector keyword arguments (e.g.
            ``{"det_threshold": 0.6, "max_faces": 1, "dtype": "bf16"}``), or
            None. A name or dict builds the detector on first use (never with
            ``detect=False``) from the model config's detector defaults,
            with this embedder's ``device`` and ``mode`` unless the dict sets
            them. Unknown keys: TypeError.
        mode: "fast" (default): a copy of the encoder in bf16 where the
            hardware computes it natively (CUDA, or a CPU with
            AVX512-BF16/AMX; else float32), channels_last, and the fast
            detector (BatchNorm folded, float32; on a CPU run by ONNX
            Runtime), the encoder's runtime picked by ``encoder_runtime``.
            Embeddings of real faces stay within cosine similarity 0.999 of
            the exact mode (0.995 with the int8 encoder), with the same faces
            and landmarks within 0.5 px. "exact": the model's own float32 encoder
            and the detector network as published, eager, NCHW, in torch.
            ``dtype`` (and the detector's ``dtype``), when given, override
            the mode's choice; ``result.info["accel"]`` records what ran.
            Other values: ValueError.
        device: Torch device for detector and encoder (None: CUDA if available,
            else CPU; a given model stays where it is unless device is set).
        dtype: Encoder compute dtype: None (the mode's choice), "float32",
            or "bf16"/"fp16": a copy of the encoder in that dtype and in
            channels_last memory format (see :mod:`facepcl.runtime._accel`);
            features are returned as float32 either way.
        compile: ``torch.compile`` the encoder copy (inductor; one
            compilation serves every batch size).
        encoder_runtime: What runs the fast encoder on a CPU
            (:mod:`facepcl.runtime._encoders`): "auto" (default: the fastest
            of torch, ONNX Runtime float32 and, where bf16 is not native and
            the model carries a calibration that passed its faithfulness
            gate, ONNX Runtime int8, measured once per CPU, encoder and crop
            size), "torch", "onnxruntime" or "onnxruntime-int8". With
            ``mode="exact"``, on CUDA, or with ``dtype``/``compile`` only
            torch runs (naming ONNX Runtime then: ValueError); a forced int8
            runtime without a valid calibration: StaleCalibrationError.
        crop_size: Aligned crop side in pixels (default: the config's, 64 for
            PCL); any side from 16 to 1024 (e.g. 100, the paper's expression
            probe: D = 6272). The template scales with it.
        detect: False for inputs that are already aligned face crops: no
            detection, each input is one face, resized to the crop.
        on_no_face: "skip" (record the image in ``no_face``), "error"
            (:class:`~facepcl.errors.NoFaceError`) or "full_image" (embed the
            whole image as one face, also recorded in ``no_face``).
        color_order: Channel order of numpy/tensor inputs: "RGB" or "BGR".
        return_crops: Keep the aligned crops in the result.
        batch_size: Crops per encoder forward.
        chunk_size: Inputs decoded and detected at a time, which bounds memory
            for long lists and generators.
        num_workers: Threads that decode (and resize for detection) the
            inputs of a list ahead of the model. None: the machine's cores,
            at most 4; 0: decode in the calling thread.

    Attributes:
        detect: Whether faces are detected (the ``detect`` option). Every
            option is kept as the attribute of the same name, ``detector``
            being the :class:`~facepcl.detection.FaceDetector` itself.
        decode_min_side: The longer side huge JPEGs keep when decoded at
            reduced scale (:func:`facepcl.io.images.min_decode_side`); None:
            always decoded in full (with the detector's ``min_face_size``).
        transform: The :class:`~facepcl.Transform` that turns crops into encoder
            input (= ``facepcl.transforms(embedder)``).
    """

    def __init__(self, model: PCLModel | str | os.PathLike | None = None, *,
                 detector: FaceDetector | str | Mapping[str, Any] | None = None, mode: str = "fast",
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                 compile: bool = False, encoder_runtime: str = "auto", crop_size: int | None = None,
                 detect: bool = True, on_no_face: str = "skip",
                 color_order: str = "RGB", return_crops: bool = False, batch_size: int = 64, chunk_size: int = 32,
                 num_workers: int | None = None) -> None:
        check_mode(mode, "FaceEmbedder")
        check_options(on_no_face=on_no_face, color_order=color_order, batch_size=batch_size, chunk_size=chunk_size,
                      num_workers=num_workers)
        self.model = resolve_model(model, device)
        self.device = model_device(self.model)
        self.mode = mode
        self.plan = encoder_plan(self.device, mode=mode, dtype=dtype, compile=compile)
        self.dtype = self.plan.dtype
        self.compile = self.plan.compile
        config: PCLConfig = self.model.config
        size = check_crop_size(config.preprocess.crop_size if crop_size is None else crop_size)
        self.encoder_runtime = encoder_runtime
        self.batch_size = int(batch_size)
        self._encoder = EncoderRuntime(self.model, self.device, self.plan, encoder_runtime, crop_size=size,
                                       torch_options=dtype is not None or bool(compile))
        self.preprocess: PreprocessConfig = (config.preprocess if size == config.preprocess.crop_size
                                             else config.preprocess.resized(size))
        self.crop_size = size
        self.template = template_points(self.preprocess)
        self.transform = Transform(self.preprocess)  # = facepcl.transforms(self): the encoder's input
        self.detect = bool(detect)
        self.on_no_face = on_no_face
        self.color_order = color_order.upper()
        self.return_crops = bool(return_crops)
        self.chunk_size = int(chunk_size)
        self.num_workers = default_workers() if num_workers is None else int(num_workers)
        self._detector = detector if isinstance(detector, FaceDetector) else None
        self._detector_options = (None if self._detector is not None
                                  else detector_options(detector, config.detector, self.device, mode))
        # Huge JPEGs decode at reduced scale keeping what detection and alignment need (facepcl.io.images);
        # not with min_face_size, which the detector applies in decoded pixels.
        heads = getattr(self.model, "task_heads", None) or {}
        self.decode_min_side = None if self.detect and self.detector_option("min_face_size") else min_decode_side(
            self.detector_option("max_size") if self.detect else None,
            max([size, *(h.spec.input_size for h in heads.values())]))

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The names of the options FaceEmbedder takes (its keyword arguments after ``model``)."""
        return tuple(n for n in inspect.signature(cls).parameters if n != "model")

    # -- configuration -------------------------------------------------------------------------------------

    @property
    def detector(self) -> FaceDetector:
        """The face detector, built on first use (never with ``detect=False``)."""
        if self._detector is None:
            self._detector = FaceDetector(**self._detector_options)
        return self._detector

    def detector_option(self, name: str) -> Any:
        """The detector's option ``name``: its attribute once built, else the value it will be built with."""
        if self._detector is not None:
            return getattr(self._detector, name)
        return self._detector_options.get(name, inspect.signature(FaceDetector).parameters[name].default)

    @property
    def dim(self) -> int:
        """Feature size D of each of face, pose and trunk at this crop size."""
        return feature_dim(self.crop_size)

    # -- the four steps ------------------------------------------------------------------------------------

    def load(self, source: Any, name: str | None = None) -> np.ndarray:
        """Step 1: decode one input to an ``(H, W, 3)`` uint8 RGB array (raises ImageLoadError naming ``name``).

        A JPEG is decoded at reduced scale (1/2, 1/4 or 1/8: DCT scaling, a
        :class:`~facepcl.io.images.ReducedImage`) when it keeps a longer side
        of at least :attr:`decode_min_side` pixels, which leaves every face
        the detector can find at least as many pixels as its crop has: in
        ``mode="fast"`` any such JPEG, in ``mode="exact"`` only those over
        ``facepcl.io.images.REDUCE_ABOVE_PIXELS`` pixels (the memory bound).
        :meth:`embed_loaded` reports boxes and landmarks in the file's pixels.
        """
        return load_image(source, color_order=self.color_order, min_side=self.decode_min_side, name=name,
                          reduce_any=self.mode == "fast")

    def prepare(self, image: np.ndarray) -> Prepared | Detections | None:
        """The per-image part of detection, for worker threads; hand the results to :meth:`embed_loaded`.

        The exact detector and the detector on ONNX Runtime only resize here
        (they detect in batches later, in the calling thread: ONNX Runtime
        has its own thread pool, and a process interrupted while a worker
        thread is inside it aborts at exit). The fast torch detector also
        detects here, one image per forward, in parallel worker threads.

        Returns:
            :class:`~facepcl.detection.Prepared` or :class:`~facepcl.detection.Detections`;
            None when ``detect=False``.
        """
        if not self.detect:
            return None
        det = self.detector
        ready = det.prepare(image)
        return ready if det.plan.exact or det.runtime == "onnxruntime" else det.detect_prepared([ready])[0]

    def detect_faces(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Step 2: faces of decoded images, batched (see :meth:`FaceDetector.detect_batch`)."""
        return self.detector.detect_batch(images)

    def crop(self, image: np.ndarray, kps: np.ndarray | None, size: int | None = None) -> np.ndarray:
        """Step 3: ``(N, S, S, 3)`` uint8 aligned crops for landmarks ``(N, 5, 2)``; None: the whole image.

        ``size`` overrides the crop side S (the template scales with it).
        """
        size = size or self.crop_size
        pre = self.preprocess if size == self.crop_size else self.preprocess.resized(size)
        if kps is None:
            return fit_crop(image, pre)[None]
        return align_faces(image, kps, pre)[0]

    @torch.inference_mode()
    def encode(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Step 4: features of aligned crops.

        Args:
            crops: ``(N, S, S, 3)`` uint8 RGB crops.

        Returns:
            ``{"face", "pose", "trunk"}``, each ``(N, D)`` float32.
        """
        out = {k: np.zeros((len(crops), self.dim), np.float32) for k in FEATURES}
        channels_last = self._encoder.channels_last  # once: it resolves the runtime (a walk over the weights)
        for start in range(0, len(crops), self.batch_size):
            x = self.transform.batch(crops[start:start + self.batch_size], self.device, channels_last=channels_last)
            feats = self._encoder(x)
            for k in FEATURES:
                out[k][start:start + len(x)] = getattr(feats, k).cpu().numpy()
        return out

    # -- whole pipeline ------------------------------------------------------------------------------------

    def embed_loaded(self, images: Sequence[np.ndarray], *, indices: Sequence[int] | None = None,
                     names: Sequence[str] | None = None,
                     prepared: Sequence[Prepared | Detections] | None = None) -> EmbeddingResult:
        """Detect, align and encode images that are already decoded.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays (from :meth:`load`).
            indices: The ``image_index`` of each image (default ``0..n-1``), so
                that chunks of one stream get global indices (join them with
                :meth:`EmbeddingResult.concatenate`).
            names: How to call each image in errors (default: ``image <index>``).
            prepared: :meth:`prepare` of each image, when already computed
                (bulk tools do it in their decoding threads): the detector's
                resized input, or the image's detections.

        Returns:
            An :class:`EmbeddingResult` with ``num_images == len(images)``.
        """
        images = list(images)
        aligned = self.align_loaded(images, indices=indices, names=names, prepared=prepared)
        info = self.info()
        if not len(aligned.crops):
            return EmbeddingResult.empty(self.dim, self.crop_size if self.return_crops else None,
                                         no_face=aligned.no_face, num_images=len(images), info=info)
        feats = self.encode(aligned.crops)
        preds = self._predict_heads(aligned.sources, aligned.crops, feats)
        return EmbeddingResult(**feats, predictions=preds, bbox=aligned.bbox, kps=aligned.kps,
                               det_score=aligned.det_score, image_index=aligned.image_index,
                               crops=aligned.crops if self.return_crops else None,
                               no_face=aligned.no_face, num_images=len(images), info=info)

    def align_loaded(self, images: Sequence[np.ndarray], *, indices: Sequence[int] | None = None,
                     names: Sequence[str] | None = None,
                     prepared: Sequence[Prepared | Detections] | None = None) -> Aligned:
        """Steps 2 and 3 on decoded images: detect and align, everything :meth:`embed_loaded` does but encode.

        ``embed_loaded(images)`` is ``encode(align_loaded(images).crops)`` with the boxes, landmarks and
        scores of this result (and the task heads' predictions), so a pipeline may detect in one place and
        encode in another (``facepcl.ray``'s stages) and get the same codes.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays (from :meth:`load`).
            indices: The ``image_index`` of each image (default ``0..n-1``).
            names: How to call each image in errors (default: ``image <index>``).
            prepared: :meth:`prepare` of each image, when already computed.

        Returns:
            An :class:`Aligned`: the faces in image order (score order within an image), with
            ``on_no_face="full_image"`` a whole-image crop for each faceless image.

        Raises:
            NoFaceError: ``on_no_face="error"`` and an image has no face.
            ValueError: ``indices`` or ``prepared`` do not match ``images`` in length.
        """
        images = list(images)
        indices = list(range(len(images))) if indices is None else [int(i) for i in indices]
        if len(indices) != len(images):
            raise ValueError(f"got {len(images)} images but {len(indices)} indices")
        if prepared is not None and len(prepared) != len(images):
            raise ValueError(f"got {len(images)} images but {len(prepared)} prepared images")
        if not self.detect:
            found: list[Detections | None] = [None] * len(images)
        elif prepared is not None:
            found = list(prepared)  # type: ignore[arg-type]
            todo = [i for i, p in enumerate(prepared) if not isinstance(p, Detections)]
            for i, det in zip(todo, self.detector.detect_prepared([prepared[i] for i in todo]), strict=True):
                found[i] = det
        else:
            found = list(self.detect_faces(images))
        crops, boxes, kps, scores, index, no_face, sources = [], [], [], [], [], [], []
        for i, (image, det) in enumerate(zip(images, found, strict=True)):
            w, h = original_size(image)
            gi = indices[i]
            if det is not None and len(det):
                sources.append((image, det.kps))
                crops.append(self.crop(image, det.kps))
                box, points = to_original(image, det.boxes, det.kps)  # in the file's pixels
                boxes.append(box)
                kps.append(points)
                scores.append(det.scores)
                index.append(np.full(len(det), gi, np.int64))
                continue
            if det is not None:  # detection ran and found nothing
                no_face.append(gi)
                if self.on_no_face == "error":
                    name = names[i] if names is not None else f"image {gi}"
                    raise NoFaceError(f"{name}: no face found ({self.detector!r}); pass on_no_face='skip' or "
                                      "'full_image', a lower det_threshold (detector={'det_threshold': ...}), or "
                                      "detect=False if the image is already an aligned face crop")
                if self.on_no_face == "skip":
                    continue
            sources.append((image, None))
            crops.append(self.crop(image, None))
            boxes.append(np.array([[0.0, 0.0, w, h]], np.float32))
            kps.append(np.full((1, 5, 2), np.nan, np.float32))
            scores.append(np.full((1,), np.nan, np.float32))
            index.append(np.array([gi], np.int64))
        size = self.crop_size
        if not crops:
            return Aligned(np.zeros((0, size, size, 3), np.uint8), np.zeros((0, 4), np.float32),
                           np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                           no_face, sources)
        return Aligned(np.concatenate(crops), np.concatenate(boxes).astype(np.float32),
                       np.concatenate(kps).astype(np.float32), np.concatenate(scores).astype(np.float32),
                       np.concatenate(index), no_face, sources)

    def _predict_heads(self, sources: list[tuple[np.ndarray, np.ndarray | None]],
                       crops: np.ndarray, feats: dict[str, np.ndarray]) -> dict[str, Any]:
        """Predictions of the model's task heads, each on faces aligned at the head's own input size.

        Heads at the crop size read the features :meth:`encode` already computed
        (the encoder does not run again); other sizes get their own crops.
        """
        heads = getattr(self.model, "task_heads", None)
        if not heads:
            return {}
        from ..heads import predict_crops, predict_features

        out: dict[str, Any] = {}
        for size in sorted({h.spec.input_size for h in heads.values()}):
            names = [n for n, h in heads.items() if h.spec.input_size == size]
            if size == self.crop_size:
                out.update(predict_features(self.model, PCLFeatures(
                    *(torch.from_numpy(feats[k]) for k in PCLFeatures._fields)), names=names))
                continue
            at_size = np.concatenate([self.crop(image, kps, size) for image, kps in sources])
            out.update(predict_crops(self.model, at_size, names=names))
        return out

    def embed(self, images: Any) -> EmbeddingResult:
        """Embed every face of one input or of a list (or iterable) of inputs.

        Args:
            images: One input (path, bytes, PIL image, ``H x W (x C)`` array,
                ``C x H x W`` tensor) or a list/tuple/iterable of them; a 4-D
                array ``(B, H, W, C)`` or tensor ``(B, C, H, W)`` is a batch.

        Returns:
            An :class:`EmbeddingResult`.

        Raises:
            ImageLoadError: A single input cannot be read (in a list, the input
                is recorded in ``failures`` instead).
            NoFaceError: ``on_no_face="error"`` and an image has no face.
        """
        single, stream = as_stream(images)
        workers = 0 if single else self.num_workers
        if self.detect:
            self.detector  # noqa: B018 (built here, not in a worker thread)

        def decode(item: tuple[int, Any]) -> tuple[int, str, Any, ImageLoadError | None]:
            i, source = item
            name = describe(source)
            try:
                image = self.load(source)
            except ImageLoadError as e:
                return i, name, None, e
            except Exception as e:  # whatever one input causes (a sparse tensor, an odd path) fails that input only
                return i, name, None, ImageLoadError(f"{name}: cannot be read ({type(e).__name__}: {e})")
            return i, name, (image, self.prepare(image)), None

        parts: list[EmbeddingResult] = []
        failures: list[Failure] = []
        count = 0
        decoded = prefetch(decode, stream, workers=workers, lookahead=self.chunk_size + 2 * workers)
        with contextlib.closing(decoded):
            for chunk in chunks(decoded, self.chunk_size):
                loaded, prepared, names, at = [], [], [], []
                for i, name, value, error in chunk:
                    if error is not None:
                        if single:
                            raise error
                        failures.append(Failure(i, name, str(error)))
                        continue
                    loaded.append(value[0])
                    prepared.append(value[1])
                    names.append(name)
                    at.append(i)
                count = chunk[-1][0] + 1
                if loaded:
                    parts.append(self.embed_loaded(loaded, indices=at, names=names,
                                                   prepared=prepared if self.detect else None))
        result = (EmbeddingResult.concatenate(parts) if parts
                  else EmbeddingResult.empty(self.dim, self.crop_size if self.return_crops else None, info=self.info()))
        result.failures = sorted(result.failures + failures)
        result.num_images = count
        return result

    __call__ = embed


_DEFAULT_CACHE: collections.OrderedDict[tuple, FaceEmbedder] = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 2


def embed(images: Any, model: PCLModel | str | os.PathLike | None = None, **options: Any) -> EmbeddingResult:
    """Embed every face in one image or a list of images.

    Args:
        images: See :meth:`FaceEmbedder.embed`.
        model: A :class:`~facepcl.PCLModel`, a name / Hub id / folder, or None:
            ``$FACEPCL_MODEL``, else the bundled ``pcl-demo`` model.
        **options: Any :class:`FaceEmbedder` option, and any
            :class:`~facepcl.detection.FaceDetector` option FaceEmbedder does
            not take itself, for the detector: ``embed(x, det_threshold=0.5,
            max_faces=1)`` is ``FaceEmbedder(detector={"det_threshold": 0.5,
            "max_faces": 1})``. The detector's own ``dtype``, ``batch_size``,
            ``device``, ``mode``, ``name`` and ``weights`` go in ``detector=``.

    Returns:
        An :class:`EmbeddingResult`. The embedder (model and detector) is
        cached, so repeated calls with the same model and options are cheap.

    Raises:
        TypeError: An option that neither FaceEmbedder nor FaceDetector takes.
        ValueError: A bad value, or detector options together with a FaceDetector object.

    Example:
        >>> result = facepcl.embed("group.jpg", max_faces=1)  # doctest: +SKIP
        >>> result.face.shape, result.bbox.shape             # doctest: +SKIP
        ((1, 2048), (1, 4))
    """
    options = split_options(options, FaceEmbedder.options())
    key = cache_key(model, options)
    with _CACHE_LOCK:
        embedder = _DEFAULT_CACHE.get(key)
        if embedder is not None:
            _DEFAULT_CACHE.move_to_end(key)
    if embedder is None:
        embedder = FaceEmbedder(model, **options)
        with _CACHE_LOCK:
            _DEFAULT_CACHE[key] = embedder
            while len(_DEFAULT_CACHE) > _CACHE_SIZE:
                _DEFAULT_CACHE.popitem(last=False)
    return embedder.embed(images)
