"""Using heads at inference: attach them to a model, predict from aligned crops.

Inference only: nothing here imports training code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from .._utils.digest import encoder_digest, recorded_digest
from ..errors import ModelLoadError
from ..hub import load
from ..model import PCLFeatures, PCLModel
from ..preprocess import to_input
from ._spec import HeadPrediction, TaskHead

ATTR = "task_heads"


def attach_head(model: PCLModel, head: TaskHead | str | os.PathLike, name: str | None = None, *,
                check_encoder: bool = True, **load_kwargs) -> PCLModel:
    """Attach a head to a model so that predictions come with its embeddings.

    Heads are kept in ``model.task_heads`` (a plain dict, name -> TaskHead,
    not a registered submodule, so ``save_pretrained`` keeps writing only
    the encoder), and moved to the encoder's device and dtype.

    Args:
        model: A loaded model.
        head: A :class:`TaskHead`, or anything :func:`load_head` accepts.
        name: Head name when ``head`` is a folder or Hub id holding several.
        check_encoder: Refuse a head trained on other encoder weights (its
            ``head.json`` records their SHA-256). A head on different
            weights reads features it was not trained on.
        **load_kwargs: Passed to :func:`load_head`.

    Returns:
        The same model.
    """
    if not isinstance(head, TaskHead):
        from ._io import load_head

        head = load_head(head, name, **load_kwargs)
    want = recorded_digest(head.spec.encoder)
    if check_encoder and want:
        have = encoder_digest(model)
        if have != want:
            raise ModelLoadError(f"head {head.spec.name!r} was trained on encoder weights {want[:12]}… "
                                 f"({head.spec.encoder.get('model_id')}), but this model's are {have[:12]}…: load "
                                 "the encoder saved with the head, or pass check_encoder=False to use it anyway")
    param = next(model.encoder.parameters())
    head = head.to(device=param.device, dtype=param.dtype).eval()
    heads = dict(getattr(model, ATTR, None) or {})
    heads[head.spec.name] = head
    object.__setattr__(model, ATTR, heads)  # bypass nn.Module registration on purpose (see docstring)
    return model


def load_with_head(name_or_path: str | os.PathLike | None = None, head: str | Sequence[str] | None = None, *,
                   head_source: str | os.PathLike | None = None, check_encoder: bool = True, **load_kwargs) -> PCLModel:
    """:func:`facepcl.hub.load` plus heads: what ``facepcl.load(..., head=...)`` does.

    Args:
        name_or_path: Model, as for :func:`facepcl.load`.
        head: Name(s) of heads stored with the model (``head-<name>/`` in its
            folder or Hub repository), e.g. "fer" or ["fer", "pose"].
        head_source: Where the heads are when not with the model (a head
            folder, a folder holding ``head-<name>/``, or a Hub id).
        check_encoder: See :func:`attach_head`.
        **load_kwargs: Passed to :func:`facepcl.hub.load` (revision, device, ...);
            revision, cache_dir, local_files_only and token also apply to the heads.

    Returns:
        The model with the heads attached.
    """
    model = load(name_or_path, **load_kwargs)
    if head is None:
        return model
    hub = {k: load_kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token") if k in load_kwargs}
    prov = model.provenance
    if head_source is None:
        # The heads live next to the encoder: same folder, or same Hub repository at the same commit.
        if prov["kind"] == "hf-hub":
            hub["revision"] = prov["revision"]
        head_source = prov["repo_id"] if prov["kind"] == "hf-hub" else prov["folder"]
    for n in [head] if isinstance(head, str) else list(head):
        attach_head(model, head_source, n, check_encoder=check_encoder, **hub)
    return model


def attached_heads(model: PCLModel) -> dict[str, TaskHead]:
    """The heads attached to ``model`` (empty dict if none)."""
    return dict(getattr(model, ATTR, None) or {})


@torch.no_grad()
def predict_crops(model: PCLModel, crops: torch.Tensor | np.ndarray, names: Sequence[str] | None = None,
                  heads: dict[str, TaskHead] | None = None) -> dict[str, HeadPrediction]:
    """Run attached heads on aligned face crops.

    Each head sees the crops resized to its own ``input_size`` (features at
    100 px for expression, 256 px for pose), prepared exactly as in
    training; the encoder runs once per distinct input size.

    Args:
        model: Model with heads attached (:func:`attach_head`).
        crops: Aligned RGB crops: a float tensor ``(B, 3, H, W)`` in [0, 1], or
            uint8 ``(B, H, W, 3)`` (numpy or tensor; ``EmbeddingResult.crops``).
        names: Which heads (default all attached).
        heads: Use these heads instead of the attached ones.

    Returns:
        Head name -> :class:`HeadPrediction` (B rows each).
    """
    heads = _chosen(model, names, heads)
    if isinstance(crops, np.ndarray):
        crops = torch.from_numpy(np.array(crops, copy=True))
    uint8_crops = crops.dtype == torch.uint8 and crops.ndim == 4 and crops.shape[3] == 3
    if not uint8_crops and (crops.ndim != 4 or crops.shape[1] != 3 or not crops.is_floating_point()):
        raise ValueError(f"crops must be float (B, 3, H, W) RGB in [0, 1] or uint8 (B, H, W, 3), got "
                         f"{crops.dtype} {tuple(crops.shape)}")
    param = next(model.encoder.parameters())
    was = model.encoder.training
    model.encoder.eval()
    out: dict[str, HeadPrediction] = {}
    try:
        by_input: dict[tuple[int, str], list[str]] = {}
        for n, h in heads.items():
            by_input.setdefault((h.spec.input_size, h.spec.interpolation), []).append(n)
        for (size, interp), group in by_input.items():
            x = to_input(crops, size, interp, model.config.preprocess, param.device, param.dtype)
            out.update(predict_features(model, model.encoder(x), group, heads))
    finally:
        model.encoder.train(was)
    return out


@torch.no_grad()
def predict_features(model: PCLModel, feats: PCLFeatures, names: Sequence[str] | None = None,
                     heads: dict[str, TaskHead] | None = None) -> dict[str, HeadPrediction]:
    """Run attached heads on encoder features already computed at the heads' input size.

    Args:
        model: Model with heads attached (:func:`attach_head`).
        feats: The encoder's outputs for B faces (any device and float dtype;
            moved to the heads').
        names: Which heads (default all attached).
        heads: Use these heads instead of the attached ones.

    Returns:
        Head name -> :class:`HeadPrediction` (B rows each).
    """
    heads = _chosen(model, names, heads)
    param = next(model.encoder.parameters())
    feats = PCLFeatures(*(f.to(device=param.device, dtype=param.dtype) for f in feats))
    return {n: h.predict(feats) for n, h in heads.items()}


def _chosen(model: PCLModel, names: Sequence[str] | None, heads: dict[str, TaskHead] | None) -> dict[str, TaskHead]:
    heads = heads if heads is not None else attached_heads(model)
    if names is not None:
        unknown = sorted(set(names) - set(heads))
        if unknown:
            raise KeyError(f"no heads {unknown} attached (have {sorted(heads)})")
        heads = {n: heads[n] for n in names}
    return heads
