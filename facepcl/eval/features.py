"""Compute encoder features of a dataset once and cache them on disk.

Linear probes train for hundreds of epochs on frozen features, so features
are computed once per (model weights, images, feature choice, input size,
interpolation, alignment) and stored as ``.npy`` files that are memory-mapped
when read. The cache key hashes all of these, including the encoder's
weights themselves and every image file's path, size and modification time
(or the source file of images held in an array), so changing any of them
gives a new entry; a stale entry is never read.

With ``detect=True`` each image's best face is found and aligned by the
pipeline's own steps (:meth:`facepcl.FaceEmbedder.detect` and
:meth:`facepcl.FaceEmbedder.crop`), straight at the input size; images
without a face are marked in ``valid`` (their rows are zero).

Layout: ``CACHE/<key>/{trunk,face,pose}.npy`` (float32 or float16,
``(N, D)``) plus ``meta.json``. ``CACHE`` is ``facepcl_home()/features``
unless a folder is given. Entries are written to a temporary folder and
renamed into place, so an interrupted run leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._utils.constants import FEATURES
from .._utils.device import resolve_device
from .._utils.digest import encoder_digest
from .._utils.paths import facepcl_home
from .._utils.version import __version__
from ..heads import check_features
from ..model import PCLModel
from ..preprocess import to_input
from ..runtime._accel import EncoderRunner, check_mode, encoder_plan
from .datasets._base import ImageSource

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``facepcl_home()/features``."""
    return facepcl_home() / "features"


@dataclass
class FeatureSet:
    """Cached features of N images.

    Attributes:
        arrays: Feature name -> ``(N, D)`` array (memory-mapped when cached).
        valid: ``(N,)`` bool; False where no face was found (``detect=True``).
        key: Cache key.
        folder: Cache entry folder (None when not cached).
        meta: What the key was computed from.
    """

    arrays: dict[str, np.ndarray]
    valid: np.ndarray
    key: str
    folder: Path | None
    meta: dict

    def __len__(self) -> int:
        return len(self.valid)

    def matrix(self, features: Sequence[str]) -> np.ndarray:
        """The chosen features side by side, ``(N, sum of D)``; one feature stays memory-mapped."""
        features = check_features(features)
        missing = [f for f in features if f not in self.arrays]
        if missing:
            raise KeyError(f"features {missing} were not computed (have {sorted(self.arrays)})")
        if len(features) == 1:
            return self.arrays[features[0]]
        return np.concatenate([np.asarray(self.arrays[f]) for f in features], axis=1)


def feature_key(model: PCLModel, images: ImageSource, *, features: Sequence[str], input_size: int,
                interpolation: str, detect: bool, dtype: str, accel: dict | None = None) -> tuple[str, dict]:
    """The cache key of a feature computation and the facts it hashes (``accel``: the fast path's plan, if used)."""
    prov = getattr(model, "provenance", None) or {}
    meta = {
        "cache_version": CACHE_VERSION,
        "encoder_sha256": encoder_digest(model),
        "config_hash": model.config.hash(),
        "model_id": prov.get("model_id"),
        "revision": prov.get("revision"),
        "images": images.fingerprint(),
        "num_images": len(images),
        "features": list(features),
        "input_size": int(input_size),
        "interpolation": interpolation,
        # Hashed under the option's first name and values ("align": "detect"|"none"), which keeps cache entries valid.
        "align": "detect" if detect else "none",
        "dtype": dtype,
    }
    if accel is not None:
        # Only the fast path adds the key: entries of the exact path keep their keys.
        meta["accel"] = accel
    # model_id is provenance only: the same weights under another name give the same features.
    hashed = {k: v for k, v in meta.items() if k not in ("model_id",)}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:32], meta


def extract_features(model: PCLModel, images: ImageSource, *, features: str | Sequence[str] = ("trunk",),
                     input_size: int, interpolation: str = "bilinear", detect: bool = False,
                     batch_size: int = 64, device: str | torch.device | None = None, cache: bool = True,
                     cache_dir: str | os.PathLike | None = None, dtype: str = "float32",
                     progress: bool = False, mode: str = "exact") -> FeatureSet:
    """Features of every image, computed once and cached.

    Args:
        model: The encoder (only ``model.encoder`` is used; it is moved to
            ``device`` and put in eval mode).
        images: The images.
        features: Which of "trunk", "face", "pose" to keep.
        input_size: Network input side in pixels (images are resized to it).
        interpolation: "bilinear" or "bicubic".
        detect: False: images are already aligned face crops (resize only);
            True: detect and align each face with the model's pipeline.
        batch_size: Images per forward pass.
        device: Torch device (None: CUDA if available, else CPU).
        cache: Read and write the on-disk cache.
        cache_dir: Cache folder (default :func:`default_cache_dir`).
        dtype: Stored dtype, "float32" or "float16" (halves the disk for
            large sets such as 300W-LP at 256 px).
        progress: Show a progress bar on stderr.
        mode: "exact" (default) or "fast" (:mod:`facepcl.runtime._accel`:
            bf16 where the hardware computes it natively, channels_last;
            cosine similarity >= 0.999 to the exact features, checked in the
            tests). The fast mode's plan is part of the cache key.

    Returns:
        A :class:`FeatureSet`.
    """
    feats = check_features(features)
    check_mode(mode, "extract_features")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    if len(images) == 0:
        raise ValueError("no images to compute features of")
    dev = resolve_device(device)
    plan = encoder_plan(dev, mode=mode)
    key, meta = feature_key(model, images, features=feats, input_size=input_size, interpolation=interpolation,
                            detect=detect, dtype=dtype, accel=None if plan.exact else plan.describe())
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / key
    if cache:
        hit = _read_entry(folder, meta)
        if hit is not None:
            log.info("features: cache hit %s", folder)
            return hit
    model.encoder.to(dev).eval()
    dim = encoder_dim(model, input_size)
    np_dtype = np.dtype(dtype)
    tmp = None
    if cache:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        arrays = {f: np.lib.format.open_memmap(tmp / f"{f}.npy", mode="w+", dtype=np_dtype,
                                               shape=(len(images), dim)) for f in feats}
    else:
        arrays = {f: np.empty((len(images), dim), np_dtype) for f in feats}
    valid = np.ones(len(images), bool)
    try:
        job = _Job(model, EncoderRunner(model.encoder, dev, plan), images, arrays, valid, feats, input_size,
                   interpolation, batch_size, dev, progress)
        if detect:
            _fill_detect(job, mode)
        else:
            _fill(job)
        if not cache:
            return FeatureSet(arrays, valid, key, None, meta)
        assert tmp is not None
        for a in arrays.values():
            a.flush()
        del arrays
        np.save(tmp / "valid.npy", valid)
        meta = {**meta, "dim": dim, "facepcl_version": __version__}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:
            # Another process wrote the same entry first (or a stale folder is in the way).
            if _read_entry(folder, meta) is None:
                shutil.rmtree(folder, ignore_errors=True)
                os.replace(tmp, folder)
        tmp = None
        out = _read_entry(folder, meta)
        if out is None:
            raise RuntimeError(f"feature cache entry {folder} could not be read back after writing")
        return out
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def encoder_dim(model: PCLModel, input_size: int) -> int:
    """Flattened size of each feature at ``input_size``."""
    from ..config import feature_dim

    return feature_dim(input_size)


@dataclass
class _Job:
    """One feature computation: what to encode, how, and where the rows go."""

    model: PCLModel
    runner: EncoderRunner
    images: ImageSource
    arrays: dict[str, np.ndarray]
    valid: np.ndarray
    feats: tuple[str, ...]
    input_size: int
    interpolation: str
    batch_size: int
    device: torch.device
    progress: bool

    def encode(self, crops: Sequence[np.ndarray], rows: Sequence[int] | slice, interpolation: str) -> None:
        """Encode ``(H, W, 3)`` uint8 crops resized to the input size; write their features at ``rows``."""
        param = next(self.model.encoder.parameters())
        x = to_input(crops, self.input_size, interpolation, self.model.config.preprocess, self.device,
                           param.dtype)
        out = self.runner(x)
        for f in self.feats:
            self.arrays[f][rows] = getattr(out, f).cpu().numpy()

    def batches(self, desc: str):
        """``(indices, images)`` per batch, with a progress bar."""
        from tqdm.auto import tqdm

        n = len(self.images)
        with tqdm(total=n, desc=desc, unit="img", disable=not self.progress) as bar:
            for start in range(0, n, self.batch_size):
                idx = list(range(start, min(start + self.batch_size, n)))
                yield idx, [self.images.read(i) for i in idx]
                bar.update(len(idx))


def _fill(job: _Job) -> None:
    """Images are aligned crops already: resize and encode."""
    with torch.inference_mode():
        for idx, batch in job.batches("features"):
            job.encode(batch, slice(idx[0], idx[-1] + 1), job.interpolation)


def _fill_detect(job: _Job, mode: str) -> None:
    """Detect and align the best face of each image with the pipeline's own steps, at the input size; encode.

    Detection and alignment are :class:`facepcl.FaceEmbedder`'s
    :meth:`~facepcl.FaceEmbedder.detect_faces` and :meth:`~facepcl.FaceEmbedder.crop`;
    encoding resizes nothing (the crop is already at the input size) and
    prepares pixels as for the aligned-crop path.
    """
    from ..pipeline import FaceEmbedder

    embedder = FaceEmbedder(job.model, device=job.device, detector={"max_faces": 1}, on_no_face="skip", mode=mode)
    with torch.inference_mode():
        for idx, batch in job.batches("detect+features"):
            crops, rows = [], []
            for i, img, det in zip(idx, batch, embedder.detect_faces(batch), strict=True):
                if det is None or not len(det):
                    job.valid[i] = False
                    log.warning("features: no face in %s; recorded as skipped", job.images.describe(i))
                    continue
                best = int(np.argmax(det.scores))
                crops.append(embedder.crop(img, det.kps[best : best + 1], size=job.input_size)[0])
                rows.append(i)
            if crops:
                job.encode(crops, rows, "bilinear")
            missing = [i for i in idx if not job.valid[i]]
            for f in job.feats:
                if missing:
                    job.arrays[f][missing] = 0.0


def _read_entry(folder: Path, meta: dict) -> FeatureSet | None:
    try:
        stored = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if any(stored.get(k) != v for k, v in meta.items() if k != "model_id"):
        return None
    try:
        arrays = {f: np.load(folder / f"{f}.npy", mmap_mode="r") for f in meta["features"]}
        valid = np.load(folder / "valid.npy")
    except (OSError, ValueError) as e:
        log.warning("feature cache entry %s is unreadable (%s); computing again", folder, e)
        return None
    n = meta["num_images"]
    if len(valid) != n or any(a.shape[0] != n for a in arrays.values()):
        return None
    return FeatureSet(arrays, valid, folder.name, folder, stored)


__all__ = ["FEATURES", "FeatureSet", "default_cache_dir", "extract_features", "feature_key"]
