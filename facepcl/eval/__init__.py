"""Downstream evaluation: dataset readers, feature caching, metrics and the paper's protocols.

``facepcl.eval.metrics`` and ``facepcl.eval.datasets`` are light; the
protocols (``facepcl.eval.protocols``) train heads and import the training
code, so import them explicitly.
"""

from . import metrics

__all__ = ["metrics"]
