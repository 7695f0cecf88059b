"""The data path in one call: decode, detect, align, transform, encode -> results.

:func:`embed` and :class:`FaceEmbedder` join the steps that live in their own
packages (:mod:`facepcl.io`, :mod:`facepcl.detection`, :mod:`facepcl.align`,
:mod:`facepcl.transforms`, :mod:`facepcl.model`) and return an
:class:`~facepcl.results.EmbeddingResult`.
"""

from ..results import EmbeddingResult, Failure
from ._embedder import Aligned, FaceEmbedder, embed

__all__ = ["Aligned", "EmbeddingResult", "FaceEmbedder", "Failure", "embed"]
