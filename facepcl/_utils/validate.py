"""Load-time checks of a model: config fields, weight dtypes and values, and how a model is named.

A model that loads must give meaningful embeddings: a config with a zero
``std`` or a weight tensor holding NaN would otherwise export NaN or constant
rows with exit code 0. These checks run once, when a config is built and when
weights are read, and raise with the field or tensor named.

This module imports nothing else from facepcl but :mod:`facepcl.errors`, so
the config and the loader can both use it without an import cycle.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

from ..errors import ModelLoadError

# The channel orders facepcl.preprocess.normalize implements (images are decoded as RGB; "BGR" flips them).
NETWORK_COLOR_ORDERS = ("RGB", "BGR")
_HUB_ID = re.compile(r"[\w.\-]+/[\w.\-]+")


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _numbers(value: Any, n: int, field: str) -> list[float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != n \
            or not all(_number(v) for v in value):
        raise ValueError(f"{field} must be a list of {n} numbers, got {value!r}")
    if not all(math.isfinite(v) for v in value):
        raise ValueError(f"{field} must hold finite numbers, got {value!r}")
    return [float(v) for v in value]


def _positive_int(value: Any, field: str) -> None:
    if not _int(value) or value <= 0:
        raise ValueError(f"{field} must be a positive integer, got {value!r} ({type(value).__name__})")


def _text(value: Any, field: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, got {value!r} ({type(value).__name__})")


def check_config(config: Any) -> None:
    """Check the types and values of every field of a :class:`facepcl.config.PCLConfig`.

    Args:
        config: The config (its ``preprocess`` and ``detector`` blocks are checked too).

    Raises:
        ValueError: A field has the wrong type or a value that would give
            meaningless features; the message names the field.
    """
    for name in ("input_size", "projection_hidden_dim", "projection_dim", "decoder_dim"):
        _positive_int(getattr(config, name), name)
    for name in ("name", "license", "source", "facepcl_version"):
        _text(getattr(config, name), name)
    pre, det = config.preprocess, config.detector
    _positive_int(pre.crop_size, "preprocess.crop_size")
    if isinstance(pre.template, (str, bytes)) or not hasattr(pre.template, "__len__") or len(pre.template) != 5:
        raise ValueError(f"preprocess.template must be 5 [x, y] points, got {pre.template!r}")
    for i, point in enumerate(pre.template):
        _numbers(point, 2, f"preprocess.template[{i}]")
    if pre.color_order not in NETWORK_COLOR_ORDERS:
        raise ValueError(f"preprocess.color_order {pre.color_order!r} is not supported: the network is fed "
                         f"{' or '.join(NETWORK_COLOR_ORDERS)}")
    lo, hi = _numbers(pre.value_range, 2, "preprocess.value_range")
    if not lo < hi:
        raise ValueError(f"preprocess.value_range must be [low, high] with low < high, got {pre.value_range!r}")
    if pre.mean is not None:
        _numbers(pre.mean, 3, "preprocess.mean")
    if pre.std is not None:
        std = _numbers(pre.std, 3, "preprocess.std")
        if min(std) <= 0:
            raise ValueError(f"preprocess.std must be positive for every channel, got {pre.std!r} (a zero std "
                             "divides by zero)")
    _text(pre.interpolation, "preprocess.interpolation")
    _text(pre.border, "preprocess.border")
    _text(det.name, "detector.name")
    for name in ("det_threshold", "nms_threshold"):
        value = getattr(det, name)
        if not _number(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"detector.{name} must be a number in [0, 1], got {value!r}")
    _positive_int(det.max_size, "detector.max_size")


def check_weights(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Refuse weights that cannot give meaningful features: non-float parameters, NaN or infinite values.

    BatchNorm's ``num_batches_tracked`` counters are integers; every other
    tensor must be floating point and finite. One pass over the weights,
    done once at load.

    Args:
        state: Tensor name -> ``torch.Tensor``, as read from the file.
        path: The weights file (named in the error).

    Raises:
        ModelLoadError: Naming the first offending tensor.
    """
    import torch

    for name, tensor in state.items():
        if name.endswith("num_batches_tracked"):
            if tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
                raise ModelLoadError(f"{path}: tensor {name!r} is {tensor.dtype}, expected an integer counter")
            continue
        if not tensor.dtype.is_floating_point:
            raise ModelLoadError(f"{path}: tensor {name!r} is {tensor.dtype}, expected floating point weights; "
                                 "the file was not written from a trained model (save it with save_pretrained)")
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelLoadError(f"{path}: tensor {name!r} holds {bad} NaN or infinite value(s) of "
                                 f"{tensor.numel()}; the weights are broken (a diverged training run?) and would "
                                 "give NaN embeddings. Use another checkpoint")


def check_model_reference(name: str) -> None:
    """Refuse a model name that is a path to nothing, or not a valid Hub id, before any Hub call.

    Called for names shaped like ``ORG/NAME`` that are not an existing
    folder: ``./my-model`` and ``../etc`` are meant as folders, so they get
    "does not exist", not a Hub lookup.

    Raises:
        ModelLoadError: The folder does not exist, or the id is not a valid Hub id.
    """
    parts = name.replace(os.sep, "/").split("/")
    if name.startswith(("~", "/")) or any(p in (".", "..", "") for p in parts):
        where = os.path.abspath(os.path.expanduser(name))
        what = "is a file, not a model folder" if os.path.isfile(where) else "does not exist"
        raise ModelLoadError(f"model folder {name!r} ({where}) {what}; pass a facepcl model folder (config.json + "
                             "model.safetensors), a registered name (`facepcl models`) or a Hub id ORG/NAME")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if not _HUB_ID.fullmatch(name):
            raise HFValidationError("expected ORG/NAME")
        validate_repo_id(name)
    except HFValidationError as e:
        raise ModelLoadError(f"model {name!r} is neither an existing folder nor a valid Hub id ({e}); check the "
                             "spelling or the path") from None
