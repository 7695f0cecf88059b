"""What the embedder was given: one input or many, read as a numbered stream in chunks."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image


def is_single(x: Any) -> bool:
    """One input (a path, bytes, an image, a 2-D/3-D array or tensor), not a list or batch of them."""
    if isinstance(x, (str, bytes, bytearray, memoryview, os.PathLike, Image.Image)):
        return True
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x.ndim != 4
    return not isinstance(x, Iterable)


def as_stream(images: Any) -> tuple[bool, Iterator[tuple[int, Any]]]:
    """``(single, (index, input) pairs)``: one input, or a list / iterable / 4-D batch of them."""
    if is_single(images):
        return True, iter([(0, images)])
    return False, enumerate(images)


def chunks(stream: Iterator[tuple[int, Any]], size: int) -> Iterator[list[tuple[int, Any]]]:
    """Lists of up to ``size`` consecutive items of ``stream``."""
    chunk: list[tuple[int, Any]] = []
    for item in stream:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
