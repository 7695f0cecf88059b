"""facepcl: pretrained facial features from PCL (Pose-disentangled Contrastive Learning, CVPR 2023).

``facepcl.load`` gets a model, ``facepcl.embed`` turns images into per-face
face (F_f), pose (F_p) and trunk (F) embeddings, ``facepcl.similarity``
compares them, ``facepcl.transforms`` turns an aligned crop into the encoder's input.

The data path, one package or module per step (docs/architecture.md):
:mod:`facepcl.io` (decode) -> :mod:`facepcl.detection` (detect) -> :mod:`facepcl.align`
(align) -> :mod:`facepcl.preprocess` (pixels -> encoder input) -> :mod:`facepcl.model`
(encode) -> :mod:`facepcl.results`; :mod:`facepcl.pipeline` joins them, and
:mod:`facepcl.export` and :mod:`facepcl.search` build on it.

Importing facepcl is light: each public name is imported on first use, and
importing facepcl changes no environment variable (see
:func:`facepcl.runtime.set_wait_policy` for the OpenMP thread policy the
``facepcl`` command uses).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._utils.version import __version__

if TYPE_CHECKING:
    import torch

    from .align import align_faces
    from .config import DetectorConfig, PCLConfig, PreprocessConfig
    from .convert import convert_checkpoint
    from .detection import FaceDetector
    from .errors import CheckpointError, FacePCLError, ImageLoadError, MissingExtraError, ModelLoadError, NoFaceError
    from .io import load_image
    from .model import PCLFeatures, PCLModel, push_to_hub, save_pretrained
    from .pipeline import FaceEmbedder, embed
    from .preprocess import Transform, transforms
    from .registry import ModelInfo, list_models, register_model
    from .results import EmbeddingResult, Failure, similarity
    from .search import FaceIndex
    from .tracking import track

# Public name -> the module that defines it (imported on first use).
_PUBLIC = {
    "CheckpointError": ".errors",
    "DetectorConfig": ".config",
    "EmbeddingResult": ".results",
    "FaceDetector": ".detection",
    "FaceEmbedder": ".pipeline",
    "FaceIndex": ".search",
    "FacePCLError": ".errors",
    "Failure": ".results",
    "ImageLoadError": ".errors",
    "MissingExtraError": ".errors",
    "ModelInfo": ".registry",
    "ModelLoadError": ".errors",
    "NoFaceError": ".errors",
    "PCLConfig": ".config",
    "PCLFeatures": ".model",
    "PCLModel": ".model",
    "PreprocessConfig": ".config",
    "Transform": ".preprocess",
    "align_faces": ".align",
    "convert_checkpoint": ".convert",
    "embed": ".pipeline",
    "list_models": ".registry",
    "load_image": ".io",
    "push_to_hub": ".model",
    "register_model": ".registry",
    "save_pretrained": ".model",
    "similarity": ".results",
    "track": ".tracking",
    "transforms": ".preprocess",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value
        return value
    try:  # a subpackage or module, e.g. facepcl.hub
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


def load(name_or_path: str | os.PathLike | None = None, *, revision: str | None = None,
         device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
         cache_dir: str | os.PathLike | None = None, local_files_only: bool | None = None,
         components: str | Iterable[str] | None = None, token: str | bool | None = None,
         force_download: bool = False, head: str | Iterable[str] | None = None,
         head_source: str | os.PathLike | None = None, check_encoder: bool = True) -> PCLModel:
    """Load a PCL model from the Hub, a local folder, or a registered name, with task heads if asked.

    Args:
        name_or_path: Registered name (see :func:`facepcl.list_models`),
            ``hf-hub:ORG/NAME`` or ``ORG/NAME``, ``local-dir:PATH`` or a folder
            path. None loads ``$FACEPCL_MODEL`` or the bundled ``pcl-demo`` model.
        revision: Hub branch, tag or commit to pin.
        device: Torch device; None picks CUDA when available, else CPU.
        dtype: Parameter dtype (float32 default; "bf16"/"fp16" cast after loading).
        cache_dir: Hub cache folder.
        local_files_only: Never touch the network (None: huggingface_hub's default).
        components: Which parts to load besides the encoder: any of
            "face_head", "pose_head", "decoder", or "all". Inference needs
            only the encoder, which is the default.
        token: Hub token.
        force_download: Download again even if cached.
        head: Name(s) of task heads to attach (see :mod:`facepcl.heads`), e.g.
            "fer": ``head-fer/`` next to the weights (same folder, or same Hub
            repository and revision). :func:`facepcl.embed` then also returns
            the heads' predictions.
        head_source: Where the heads are when not next to the weights (a head
            folder, a folder holding ``head-<name>/``, or a Hub id).
        check_encoder: Refuse a head trained on other encoder weights (see
            :func:`facepcl.heads.attach_head`).

    Returns:
        A :class:`facepcl.PCLModel` in eval mode, with ``model.provenance``
        (model id, kind, revision, folder, config hash) and the heads, if
        any, in ``model.task_heads``.

    Raises:
        ModelLoadError: The model or a head cannot be found, or weights do
            not match the network (the message lists the offending keys).
    """
    kwargs = {"revision": revision, "device": device, "dtype": dtype, "cache_dir": cache_dir,
              "local_files_only": local_files_only, "components": components, "token": token,
              "force_download": force_download}
    if head is None:
        from .hub import load as load_network

        return load_network(name_or_path, **kwargs)
    from .heads import load_with_head

    return load_with_head(name_or_path, head, head_source=head_source, check_encoder=check_encoder, **kwargs)


__all__ = [
    "CheckpointError",
    "DetectorConfig",
    "EmbeddingResult",
    "FaceDetector",
    "FaceEmbedder",
    "FaceIndex",
    "FacePCLError",
    "Failure",
    "ImageLoadError",
    "MissingExtraError",
    "ModelInfo",
    "ModelLoadError",
    "NoFaceError",
    "PCLConfig",
    "PCLFeatures",
    "PCLModel",
    "PreprocessConfig",
    "Transform",
    "__version__",
    "align_faces",
    "convert_checkpoint",
    "embed",
    "list_models",
    "load",
    "load_image",
    "push_to_hub",
    "register_model",
    "save_pretrained",
    "similarity",
    "track",
    "transforms",
]
