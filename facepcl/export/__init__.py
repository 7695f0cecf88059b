"""Bulk embedding export (``facepcl embed``) and readers for its output folders.

``read_embeddings(OUT)`` returns every row of an export (all shards, all
torchrun ranks, any format) as one ``pyarrow.Table`` in input order;
``read_errors(OUT)`` the skipped inputs with their reasons;
``read_metadata(OUT)`` the provenance (model, weights, preprocessing).
For Parquet exports the plain one-liners work too:
``pyarrow.parquet.read_table(OUT)`` or ``pandas.read_parquet(OUT)``.
"""

from ..io.inputs import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, InputItem, iter_inputs
from ._read import column_to_numpy, read_embeddings, read_errors, read_metadata
from ._runner import EmbedOptions, run_embed

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "EmbedOptions",
    "InputItem",
    "column_to_numpy",
    "iter_inputs",
    "read_embeddings",
    "read_errors",
    "read_metadata",
    "run_embed",
]
