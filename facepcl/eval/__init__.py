"""Downstream evaluation: dataset readers, feature caching and the paper's protocols.

``facepcl.eval.datasets`` is light; the protocols (``facepcl.eval.protocols``)
train heads, so import them explicitly. Metrics live with the heads that
report them (:mod:`facepcl.heads.metrics`).
"""
