"""One fingerprint of an encoder's weights: ``encoder_sha256``.

Exports, heads (``head.json``) and evaluation records all pin the encoder
they were made with by this digest, under the one field name
``encoder_sha256``. It hashes the tensors themselves (names, shapes, dtypes
and bytes), so it is the same whether the weights came from a file, the Hub
or memory, and it changes when a fine-tuned encoder changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

FIELD = "encoder_sha256"


def encoder_digest(model: nn.Module) -> str:
    """SHA-256 (64 hex digits) of a model's encoder parameters and buffers.

    Args:
        model: A :class:`facepcl.PCLModel` (its ``encoder`` is hashed) or an
            encoder module itself.

    Returns:
        The hex digest of every tensor of the encoder's ``state_dict``, sorted
        by name, each hashed with its name, shape and dtype: a model cast to
        another dtype has another digest.
    """
    encoder = getattr(model, "encoder", model)
    h = hashlib.sha256()
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}\0{tuple(t.shape)}\0{t.dtype}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def recorded_digest(record: Mapping[str, Any] | None) -> str | None:
    """The encoder digest (:data:`FIELD`) a ``head.json`` ``encoder`` entry or an evaluation record holds, or None."""
    if not record:
        return None
    return record.get(FIELD)


__all__ = ["FIELD", "encoder_digest", "recorded_digest"]
