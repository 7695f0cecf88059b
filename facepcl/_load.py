"""``facepcl.load``: a model, with the task heads asked for.

The network is loaded by :func:`facepcl.hub.load`; heads, when asked for,
are attached by :func:`facepcl.heads.load_with_head`. Heads build on the hub
module and never the reverse, so this small module is the one place that
joins them (and ``import facepcl`` does not import the heads until a head is
asked for).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch

from . import hub
from .model import PCLModel


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
        return hub.load(name_or_path, **kwargs)
    from .heads._predict import load_with_head

    return load_with_head(name_or_path, head, head_source=head_source, check_encoder=check_encoder, **kwargs)


__all__ = ["load"]
