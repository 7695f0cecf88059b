"""FaceEmbedder's options: the names (and their deprecated aliases), checks, and the model to use."""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from .. import hub, registry
from .._deprecated import rename_options
from .._utils.device import resolve_device
from ..errors import ModelLoadError
from ..model import PCLModel

ON_NO_FACE = ("skip", "error", "full_image")

# Old option name -> new name (see docs/embedding.md); old on_no_face value -> new value.
RENAMED = {"align": "detect", "conf_threshold": "det_threshold"}
ON_NO_FACE_ALIASES = {"raise": "error"}


def renamed_options(options: dict[str, Any], where: str = "FaceEmbedder") -> dict[str, Any]:
    """Map deprecated option names and values onto the current ones, with a DeprecationWarning each.

    Args:
        options: Keyword arguments as given (not modified).
        where: The function named in the warning.

    Returns:
        A new dict with current names only.

    Raises:
        TypeError: An old name and its new name were both given.
    """
    # stacklevel 4: the warning points at the line that called FaceEmbedder(...) or facepcl.embed(...)
    out = rename_options(options, RENAMED, where, stacklevel=4)
    value = out.get("on_no_face")
    if isinstance(value, str) and value in ON_NO_FACE_ALIASES:
        warnings.warn(f"{where}: on_no_face={value!r} is deprecated, use on_no_face="
                      f"{ON_NO_FACE_ALIASES[value]!r}", DeprecationWarning, stacklevel=3)
        out["on_no_face"] = ON_NO_FACE_ALIASES[value]
    return out


def check_options(*, on_no_face: str, color_order: str, max_faces: int | None, batch_size: int,
                  detect_batch_size: int | None, chunk_size: int, num_workers: int | None, own_detector: bool,
                  detector_options: bool, exact: bool, fast: bool | None) -> None:
    """Raise ValueError naming the first bad FaceEmbedder option and its fix."""
    if on_no_face not in ON_NO_FACE:
        raise ValueError(f"on_no_face must be one of {ON_NO_FACE}, got {on_no_face!r}")
    if color_order.upper() not in ("RGB", "BGR"):
        raise ValueError(f"color_order must be 'RGB' or 'BGR', got {color_order!r}")
    if max_faces is not None and max_faces < 1:
        raise ValueError(f"max_faces must be a positive integer or None, got {max_faces}")
    if min(batch_size, detect_batch_size or 1, chunk_size) < 1:
        raise ValueError("batch_size, detect_batch_size and chunk_size must be positive")
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be 0 or more (or None), got {num_workers}")
    if own_detector and detector_options:
        raise ValueError("max_faces, min_face_size, det_threshold and detector_dtype configure the detector "
                         "this embedder builds; with your own FaceDetector, set them on it instead")
    if exact and fast:
        raise ValueError("exact=True and fast=True ask for different paths; pass one of them")


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
    """The key under which ``facepcl.embed`` caches the embedder of these model and options."""
    if model is None:
        key_model: Any = ("default", hub.default_model_name())
    elif isinstance(model, (str, os.PathLike)):
        key_model = ("name", os.fspath(model))
    else:
        key_model = ("object", id(model))
    return key_model, tuple(sorted((k, _hashable(v)) for k, v in options.items()))


def _hashable(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool, type(None))) else (type(v).__name__, id(v))
