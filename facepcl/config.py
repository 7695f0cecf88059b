"""The one configuration schema of a facepcl model (``config.json``).

A config travels with the weights and carries everything needed to reproduce
the features: the network's input size, which components the weights hold,
and the preprocessing (crop size, 5-point alignment template, colour order,
value range, interpolation) plus the detector defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._utils.constants import COMPONENTS
from ._utils.validate import MAX_CROP_SIZE, bounded_int, check_config, read_json_file
from ._utils.version import __version__

ARCHITECTURE = "pcl"
TRUNK_CHANNELS = 128
DOWNSAMPLE = 16

# The 5-point template (left eye, right eye, nose tip, left mouth corner,
# right mouth corner; "left" is the image's left), as fractions of the crop
# side. Framed like RAF-DB's aligned 100x100 images (PCL's FER benchmark) and
# the aligned VoxCeleb tracks it was trained on: a tight, complete face, the
# top edge near the hairline, the chin just above the bottom edge, cheeks and
# ears at the sides. The eyes are 0.30 of the side apart on the line y=0.37;
# nose and mouth follow the mean-face proportions of the widely used 5-point
# ArcFace template (nose 0.571, mouth 1.155 eye distances below the eyes,
# mouth 0.828 eye distances wide), so only scale and placement are our choice.
# See docs/alignment.md for the figure and the reasoning.
DEFAULT_TEMPLATE_UNIT: tuple[tuple[float, float], ...] = (
    (0.3500, 0.3700),
    (0.6500, 0.3700),
    (0.5000, 0.5413),
    (0.3758, 0.7165),
    (0.6242, 0.7165),
)


def default_template(crop_size: int) -> list[list[float]]:
    """Return the default 5-point template in pixels for a square crop.

    Args:
        crop_size: Side of the aligned crop in pixels.

    Returns:
        Five ``[x, y]`` pixel positions (5 x 2), for pixel centres at
        integer coordinates (OpenCV's convention), so the unit square's
        centre 0.5 maps to ``crop_size / 2 - 0.5``.
    """
    return [[round(x * crop_size - 0.5, 4), round(y * crop_size - 0.5, 4)] for x, y in DEFAULT_TEMPLATE_UNIT]


def feature_dim(height: int, width: int | None = None) -> int:
    """Flattened size of F, F_f and F_p for an input of ``height x width`` pixels.

    Every stride-2 convolution of the trunk maps n pixels to ceil(n / 2), so
    the feature map is ``ceil(H/16) x ceil(W/16)`` with 128 channels: 2048 at
    64 px, 6272 at 100 px, 32768 at 256 px.
    """
    width = height if width is None else width
    return TRUNK_CHANNELS * math.ceil(height / DOWNSAMPLE) * math.ceil(width / DOWNSAMPLE)


@dataclass
class PreprocessConfig:
    """How an image becomes the network's input.

    Attributes:
        crop_size: Side of the square aligned crop in pixels.
        template: Five ``[x, y]`` landmark positions in crop pixels that the
            similarity warp maps the detected landmarks onto.
        color_order: Channel order the network expects ("RGB").
        value_range: Pixel values are scaled linearly to this range.
        mean: Per-channel mean subtracted after scaling (None: none).
        std: Per-channel std divided after scaling (None: none).
        interpolation: Resampling used by the warp ("bilinear").
        border: What fills pixels the warp takes from outside the image
            ("constant" black, or "reflect").
    """

    crop_size: int = 64
    template: list[list[float]] = field(default_factory=lambda: default_template(64))
    color_order: str = "RGB"
    value_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str = "bilinear"
    border: str = "constant"

    def resized(self, crop_size: int) -> PreprocessConfig:
        """The same preprocessing at another crop size (the template scales with it)."""
        scale = crop_size / self.crop_size
        # pixel centres sit at integer coordinates: scale about the image corner (-0.5, -0.5)
        template = [[round((x + 0.5) * scale - 0.5, 4), round((y + 0.5) * scale - 0.5, 4)] for x, y in self.template]
        return dataclasses.replace(self, crop_size=crop_size, template=template)


@dataclass
class DetectorConfig:
    """Face detector defaults used with this model.

    Attributes:
        name: Detector name ("retinaface_mobile0.25" or "retinaface_resnet50").
        det_threshold: Minimum face score in [0, 1].
        nms_threshold: IoU above which overlapping boxes are suppressed.
        max_size: Images whose longer side exceeds this many pixels are
            downscaled for detection (boxes are mapped back to the original).
    """

    name: str = "retinaface_mobile0.25"
    det_threshold: float = 0.8
    nms_threshold: float = 0.4
    max_size: int = 640


@dataclass
class PCLConfig:
    """Configuration of a PCL model, as stored in ``config.json``.

    Attributes:
        input_size: Side in pixels of the images the weights were trained on
            (64 for PCL pretraining). The encoder accepts any size; the
            projection heads and decoder need ``feature_dim(input_size)``.
        components: Which parts the weights hold, a subset of
            ("encoder", "face_head", "pose_head", "decoder").
        projection_hidden_dim: Hidden width of the projection heads.
        projection_dim: Output width of the projection heads.
        decoder_dim: Width of the decoder's first (1x1) feature map.
        preprocess: Preprocessing that produced the training crops.
        detector: Detector defaults.
        name: Short model name.
        license: Licence of the weights (SPDX id or words).
        source: Where the weights come from (provenance, free text).
        facepcl_version: Version of facepcl that wrote this config.
    """

    input_size: int = 64
    components: list[str] = field(default_factory=lambda: ["encoder"])
    projection_hidden_dim: int = 2048
    projection_dim: int = 512
    decoder_dim: int = 512
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    name: str = "pcl"
    license: str = "unknown"
    source: str = ""
    facepcl_version: str = __version__
    architecture: str = ARCHITECTURE

    def __post_init__(self) -> None:
        if self.architecture != ARCHITECTURE:
            raise ValueError(f"architecture {self.architecture!r} is not {ARCHITECTURE!r}; "
                             "this is not a facepcl model config")
        if not isinstance(self.components, (list, tuple)) or not all(isinstance(c, str) for c in self.components):
            raise ValueError(f"components must be a list of names, got {self.components!r}")
        check_config(self)  # field types and values, named: a bad config fails here, at load, not at embed time
        unknown = sorted(set(self.components) - set(COMPONENTS))
        if unknown or "encoder" not in self.components:
            raise ValueError(f"components {self.components} must include 'encoder' and only "
                             f"name {list(COMPONENTS)} (unknown: {unknown})")
        if self.input_size <= 0:
            raise ValueError(f"input_size must be positive, got {self.input_size}")
        self.components = [c for c in COMPONENTS if c in self.components]

    @property
    def feature_dim(self) -> int:
        """Flattened feature size at ``input_size`` (2048 at 64 px)."""
        return feature_dim(self.input_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view of the config."""
        d = dataclasses.asdict(self)
        d["feature_dim"] = self.feature_dim
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PCLConfig:
        """Build from a dict read from ``config.json``; unknown keys are an error."""
        data = dict(data)
        stored_dim = data.pop("feature_dim", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown}; this facepcl ({__version__}) knows "
                             f"{sorted(known)}. Upgrade facepcl if the model was written by a newer one.")
        pre = data.pop("preprocess", None) or {}
        det = data.pop("detector", None) or {}
        cfg = cls(preprocess=_strict(PreprocessConfig, pre, "preprocess"),
                  detector=_strict(DetectorConfig, det, "detector"), **data)
        if stored_dim is not None and stored_dim != cfg.feature_dim:
            raise ValueError(f"feature_dim {stored_dim} does not match input_size "
                             f"{cfg.input_size} (expected {cfg.feature_dim})")
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json_file(cls, path: str | Path) -> PCLConfig:
        """Read ``config.json``; errors name the file."""
        path = Path(path)
        data = read_json_file(path, "the model config")
        if not isinstance(data, dict):
            raise ValueError(f"{path}: holds a JSON {type(data).__name__}, not an object; expected a facepcl "
                             "config.json as written by save_pretrained")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e

    def hash(self) -> str:
        """Short SHA-256 of what determines features (architecture and preprocessing)."""
        d = self.to_dict()
        for k in ("name", "license", "source", "facepcl_version", "components"):
            d.pop(k)
        # Hashed under the names in _HASHED_AS: the hash of a model stays what it was published with.
        d["detector"] = {_HASHED_AS.get(k, k): v for k, v in d["detector"].items()}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# DetectorConfig keys hashed under another name (config_hash values are part of published models and caches).
_HASHED_AS = {"det_threshold": "conf_threshold"}


def _strict(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in the {where!r} block; known: {sorted(known)}")
    return cls(**data)


def check_crop_size(crop_size: Any) -> int:
    """A crop side the encoder accepts: any whole number of pixels from 16 to ``MAX_CROP_SIZE`` (1024).

    The encoder is fully convolutional and each of its four stride-2
    convolutions maps n pixels to ceil(n / 2), so any side works; the
    feature size is ``128 * ceil(S/16)^2`` (6272 at 100 px). Below 16 px
    the feature map is a single pixel and a face is not recognisable; above
    :data:`facepcl._utils.validate.MAX_CROP_SIZE` a batch of crops and its
    features would take gigabytes.
    """
    if isinstance(crop_size, bool) or not isinstance(crop_size, numbers.Integral) or crop_size < 16:
        raise ValueError(f"crop_size must be a whole number of pixels, at least 16 (e.g. 64, or 100 as the "
                         f"paper's expression probe), got {crop_size!r}")
    return bounded_int(crop_size, "crop_size", MAX_CROP_SIZE, low=16, unit=" pixels")
