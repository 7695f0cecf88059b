"""Load-time checks of a model: config fields, weight dtypes and values, and how a model is named.

A model that loads must give meaningful embeddings: a config with a zero
``std`` or a weight tensor holding NaN would otherwise export NaN or constant
rows with exit code 0. These checks run once, when a config is built and when
weights are read, and raise with the field or tensor named.

This module imports nothing else from facepcl but :mod:`facepcl.errors`, so
the config and the loader can both use it without an import cycle.
"""

from __future__ import annotations

import itertools
import json
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

# Upper bounds of the sizes a config.json or head.json may ask for, checked before any tensor is built, so a
# typo (crop_size 20000, decoder_dim 1e6) is refused with its field named instead of allocating gigabytes.
# Each is far above real use (PCL: 64 px crops, widths 512-2048, about 30 million parameters).
MAX_CROP_SIZE = 1024  # pixels: crop_size, input_size, a head's input_size
MAX_WIDTH = 65536  # a layer's width: projection_hidden_dim, projection_dim, decoder_dim, a head's out_dim/hidden_dims
MAX_DETECT_SIZE = 8192  # pixels: detector.max_size
MAX_PARAMETERS = 1 << 30  # parameters of a model's or a head's network (4 GiB in float32)
MAX_JSON_BYTES = 16 << 20  # config.json and head.json files (real ones are a few kilobytes)


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


def bounded_int(value: Any, field: str, high: int, low: int = 1, unit: str = "") -> int:
    """``value`` as an int in ``[low, high]``, else ValueError naming ``field``, the bound and its knob.

    Args:
        value: The value read from a file or given by a caller.
        field: Its name in messages (e.g. ``"preprocess.crop_size"``).
        high: Largest value allowed (one of this module's ``MAX_*`` constants).
        low: Smallest value allowed.
        unit: Unit named in messages (e.g. ``" pixels"``).
    """
    if not _int(value) or value < low:
        what = "a positive integer" if low == 1 else f"a whole number of at least {low}{unit}"
        raise ValueError(f"{field} must be {what}, got {value!r} ({type(value).__name__})")
    if value > high:
        raise ValueError(f"{field} must be at most {high:,}{unit}, got {value:,}: a larger size would allocate "
                         "gigabytes before anything runs; check the value")
    return int(value)


def check_parameters(count: int, what: str) -> None:
    """Refuse a network of more than :data:`MAX_PARAMETERS` parameters before it is built.

    Args:
        count: Parameters the network would have (computed from its sizes, not from tensors).
        what: What is built, named in the message (e.g. ``"config.json: the face_head"``).
    """
    if count > MAX_PARAMETERS:
        raise ValueError(f"{what} would have {count:,} parameters ({count * 4 / 2**30:.1f} GiB in float32), over the "
                         f"limit of {MAX_PARAMETERS:,}; its sizes are far larger than any real model: check them")


def pcl_parameters(config: Any) -> dict[str, int]:
    """Parameters of the layers of a PCL network whose size depends on the config, per component.

    Counts the weights and biases of the projection heads' and the decoder's
    layers (the encoder's size is fixed; BatchNorm statistics are left out);
    computed from the sizes alone, so nothing is allocated.
    """
    side = -(-config.input_size // 16)  # the encoder's four stride-2 convolutions
    dim = 128 * side * side
    hidden, out, w = config.projection_hidden_dim, config.projection_dim, config.decoder_dim
    head = dim * hidden + hidden + hidden * out + out + 2 * out
    chans = [w, w // 2, w // 2, w // 2, w // 2, w // 4, 3]
    decoder = dim * w + w + sum(9 * a * b + 3 * b for a, b in itertools.pairwise(chans))
    return {"face_head": head, "pose_head": head, "decoder": decoder}


def _text(value: Any, field: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, got {value!r} ({type(value).__name__})")


def _check_template(points: list[list[float]]) -> None:
    """Refuse template points that coincide or lie on one line: no face alignment can be fitted onto them."""
    n = len(points)
    cx, cy = sum(p[0] for p in points) / n, sum(p[1] for p in points) / n
    sxx = sum((p[0] - cx) ** 2 for p in points)
    syy = sum((p[1] - cy) ** 2 for p in points)
    sxy = sum((p[0] - cx) * (p[1] - cy) for p in points)
    spread = sxx + syy
    if spread <= 1e-12:
        raise ValueError(f"preprocess.template: all 5 points are the same point {points[0]}; the template must "
                         "place the eyes, nose and mouth corners apart, in crop pixels (the default is "
                         "facepcl.config.default_template(crop_size))")
    if sxx * syy - sxy * sxy <= 1e-6 * spread * spread:
        raise ValueError(f"preprocess.template: the 5 points {points} lie on one line; the template must place the "
                         "eyes above the nose and mouth, in crop pixels (the default is "
                         "facepcl.config.default_template(crop_size))")


def check_config(config: Any) -> None:
    """Check the types, values and sizes of every field of a :class:`facepcl.config.PCLConfig`.

    Sizes are bounded (:data:`MAX_CROP_SIZE`, :data:`MAX_WIDTH`,
    :data:`MAX_DETECT_SIZE`, :data:`MAX_PARAMETERS` for each component the
    config lists), so no config can make the network or a batch allocate
    gigabytes; every check runs before any tensor exists.

    Args:
        config: The config (its ``preprocess`` and ``detector`` blocks are checked too).

    Raises:
        ValueError: A field has the wrong type or a value that would give
            meaningless features; the message names the field.
    """
    bounded_int(config.input_size, "input_size", MAX_CROP_SIZE, unit=" pixels")
    for name in ("projection_hidden_dim", "projection_dim", "decoder_dim"):
        bounded_int(getattr(config, name), name, MAX_WIDTH)
    for name in ("name", "license", "source", "facepcl_version"):
        _text(getattr(config, name), name)
    pre, det = config.preprocess, config.detector
    bounded_int(pre.crop_size, "preprocess.crop_size", MAX_CROP_SIZE, unit=" pixels")
    if isinstance(pre.template, (str, bytes)) or not hasattr(pre.template, "__len__") or len(pre.template) != 5:
        raise ValueError(f"preprocess.template must be 5 [x, y] points, got {pre.template!r}")
    _check_template([_numbers(point, 2, f"preprocess.template[{i}]") for i, point in enumerate(pre.template)])
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
    bounded_int(det.max_size, "detector.max_size", MAX_DETECT_SIZE, unit=" pixels")
    components = config.components if isinstance(config.components, (list, tuple)) else ()
    for name, count in pcl_parameters(config).items():
        if name in components:
            check_parameters(count, f"the {name} (input_size {config.input_size})")


def read_json_file(path: str | os.PathLike, what: str) -> Any:
    """The content of a small JSON file (``config.json``, ``head.json``); every failure is one line naming it.

    Args:
        path: The file.
        what: What the file holds, for messages (e.g. ``"the model config"``).

    Raises:
        ValueError: ``"<path>: cannot read <what>: <problem>; <fix>"``: the file
            is missing or unreadable, over :data:`MAX_JSON_BYTES`, not UTF-8,
            not JSON, or nested too deeply for Python's JSON reader.
    """
    head = f"{path}: cannot read {what}"
    raw = b""
    try:
        size = os.stat(path).st_size
        if size > MAX_JSON_BYTES:
            raise ValueError(f"{head}: the file has {size:,} bytes, over the limit of {MAX_JSON_BYTES:,} (real ones "
                             "have a few kilobytes); this is not a facepcl file")
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{head}: not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); save it as "
                         "UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{head}: not valid JSON ({e}); write it again with facepcl") from None
    except RecursionError:
        raise ValueError(f"{head}: JSON nested too deeply to read (real files are a few levels deep); this is "
                         "not a facepcl file") from None
    except OSError as e:
        raise ValueError(f"{head} ({e.strerror or e}); check the path and its permissions") from None


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
