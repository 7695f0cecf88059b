"""FaceEmbedder's options: checks, the detector it builds, the model to use, and the keyword split of ``embed``.

Each option has one owner. :class:`~facepcl.FaceEmbedder` takes its own
options; the detector's go through its ``detector=`` option (a
:class:`~facepcl.detection.FaceDetector`, a detector name, or a dict of
FaceDetector keyword arguments). :func:`split_options` is the one place
where flat keywords (``facepcl.embed(x, det_threshold=0.5)``) are sorted
between the two, from the signatures themselves, so that a new detector
option needs no edit here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .. import hub, registry
from .._utils.device import resolve_device
from ..config import DetectorConfig
from ..detection import FaceDetector
from ..detection.detector import config_defaults
from ..errors import ModelLoadError
from ..model import PCLModel

ON_NO_FACE = ("skip", "error", "full_image")
# Detector options that name its network: only in detector= (a flat ``weights=`` would read as the model's).
NOT_FLAT = ("name", "weights")


def check_options(*, on_no_face: str, color_order: str, batch_size: int, chunk_size: int,
                  num_workers: int | None) -> None:
    """Raise ValueError naming the first bad FaceEmbedder option and what it accepts."""
    if on_no_face not in ON_NO_FACE:
        raise ValueError(f"FaceEmbedder: on_no_face must be one of {ON_NO_FACE}, got {on_no_face!r}")
    if not isinstance(color_order, str) or color_order.upper() not in ("RGB", "BGR"):
        raise ValueError(f"FaceEmbedder: color_order must be 'RGB' or 'BGR', got {color_order!r}")
    if min(batch_size, chunk_size) < 1:
        raise ValueError(f"FaceEmbedder: batch_size and chunk_size must be positive, got {batch_size} and "
                         f"{chunk_size}")
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"FaceEmbedder: num_workers must be 0 or more (or None), got {num_workers}")


def detector_options(detector: FaceDetector | str | Mapping[str, Any] | None, config: DetectorConfig,
                     device: torch.device, mode: str) -> dict[str, Any]:
    """The keyword arguments of the FaceDetector a FaceEmbedder builds, checked now (it is built on first use).

    Args:
        detector: A detector name, a dict of FaceDetector keyword arguments, or None.
        config: The model config's detector block: its defaults.
        device: The embedder's device, inherited unless the dict sets one.
        mode: The embedder's mode, inherited unless the dict sets one.

    Raises:
        TypeError: ``detector`` is of another type, or the dict has keys FaceDetector does not take.
        ValueError: A bad value.
    """
    if detector is None:
        given: dict[str, Any] = {}
    elif isinstance(detector, str):
        given = {"name": detector}
    elif isinstance(detector, Mapping):
        given = dict(detector)
    else:
        raise TypeError(f"FaceEmbedder: detector= takes a FaceDetector, a detector name or a dict of FaceDetector "
                        f"keyword arguments; got {type(detector).__name__}")
    options = {**config_defaults(config), "device": device, "mode": mode, **given}
    FaceDetector.check_options(options, "FaceEmbedder(detector=...)")
    return options


def split_options(options: Mapping[str, Any], own: Sequence[str], where: str = "facepcl.embed") -> dict[str, Any]:
    """FaceEmbedder keyword arguments from flat ones: its own options as given, the detector's into ``detector``.

    A name that both take (``device``, ``mode``, ``dtype``, ``batch_size``)
    is the embedder's; the detector's own value of it, and the detector's
    ``name`` and ``weights`` (:data:`NOT_FLAT`), go in ``detector=``.

    Args:
        options: Keyword arguments as given.
        own: FaceEmbedder's option names.
        where: What to name in errors.

    Returns:
        Keyword arguments for :class:`~facepcl.FaceEmbedder`.

    Raises:
        TypeError: A keyword neither takes (the error lists the valid ones).
        ValueError: Detector keywords with a FaceDetector object as ``detector``,
            or a detector keyword given twice.
    """
    det_names = [n for n in FaceDetector.options() if n not in own and n not in NOT_FLAT]
    unknown = sorted(set(options) - set(own) - set(det_names))
    if unknown:
        raise TypeError(f"{where}: unknown options {unknown}; FaceEmbedder takes {list(own)}, and the detector "
                        f"{det_names} (or any FaceDetector option in detector={{...}})")
    out = {k: v for k, v in options.items() if k in own}
    flat = {k: v for k, v in options.items() if k in det_names}
    if not flat:
        return out
    detector = out.get("detector")
    if isinstance(detector, FaceDetector):
        raise ValueError(f"{where}: {sorted(flat)} configure the detector, but detector= is a FaceDetector object; "
                         f"set them on it (FaceDetector({', '.join(f'{k}=...' for k in sorted(flat))})) or pass "
                         "detector= as a dict of FaceDetector options")
    base = {} if detector is None else {"name": detector} if isinstance(detector, str) else dict(detector)
    both = sorted(set(base) & set(flat))
    if both:
        raise ValueError(f"{where}: {both} given both as keywords and in detector=; give each once")
    out["detector"] = {**base, **flat}
    return out


def resolve_model(model: PCLModel | str | os.PathLike | None, device: str | torch.device | None) -> PCLModel:
    """The model FaceEmbedder uses: a given PCLModel (moved if ``device`` is set) or one loaded by name."""
    if isinstance(model, PCLModel):
        if device is not None:
            model.to(resolve_device(device))
        return model
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a PCLModel, a name, a Hub id or a folder; got {type(model).__name__}")
    name = hub.default_model_name() if model is None else model
    try:
        return hub.load(name, device=device)
    except ModelLoadError as e:
        if model is None and not os.environ.get("FACEPCL_MODEL") and name == registry.DEFAULT_MODEL:
            raise ModelLoadError(f"no model was named and the default model {name!r}, which ships inside facepcl, "
                                 f"is not in this installation ({e}). Pass model= (a facepcl.load name, Hub id "
                                 "or folder, or a PCLModel) or set FACEPCL_MODEL") from e
        raise


def model_device(model: PCLModel) -> torch.device:
    """Where the model's parameters are."""
    return next(model.parameters()).device


def cache_key(model: PCLModel | str | os.PathLike | None, options: dict[str, Any]) -> tuple:
    """The key under which ``facepcl.embed`` caches the embedder of these model and (split) options."""
    if model is None:
        key_model: Any = ("default", hub.default_model_name())
    elif isinstance(model, (str, os.PathLike)):
        key_model = ("name", os.fspath(model))
    else:
        key_model = ("object", id(model))
    return key_model, _hashable(options)


def _hashable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return ("dict", tuple(sorted((str(k), _hashable(x)) for k, x in v.items())))
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(_hashable(x) for x in v))
    if isinstance(v, (str, int, float, bool, type(None))):
        return v
    if isinstance(v, (torch.dtype, torch.device, os.PathLike)):
        return (type(v).__name__, str(v))
    return (type(v).__name__, id(v))
