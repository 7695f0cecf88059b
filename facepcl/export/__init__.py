"""Bulk embedding export (``facepcl embed``) and readers for its output folders.

``read_embeddings(OUT)`` returns every row of an export (all shards, all
torchrun ranks, any format) as one ``pyarrow.Table`` in input order, after
checking every shard against the size and SHA-256 its manifest recorded;
``read_errors(OUT)`` the skipped inputs with their reasons;
``read_metadata(OUT)`` the provenance (model, weights, preprocessing);
``read_tracks(OUT)`` one row per face track of the videos (``_tracks.parquet``).
For Parquet exports the plain one-liners work too (without the check):
``pyarrow.parquet.read_table(OUT)`` or ``pandas.read_parquet(OUT)``.

For code that builds on exports (the search index, the command line):
:func:`committed_shards` lists the verified shards with their manifests,
:func:`read_shard` reads one, :func:`from_arrow` turns a table into numpy
columns, :func:`is_export` recognises an output folder, and ``RUN_FILE`` /
``MANIFESTS`` name its bookkeeping. :func:`run_embed` takes an
:class:`Engine` (what embeds the faces: :class:`LocalEngine` by default,
``facepcl.ray.RayEngine`` on a Ray cluster); :func:`batch_rows` turns an
engine's batch into rows.
"""

from ..io.inputs import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, InputItem, iter_inputs
from ._dataset import Shard, committed_shards
from ._formats import FEATURES, from_arrow, read_shard
from ._layout import ERRORS_FILE, INDEX_FILE, MANIFESTS, RUN_FILE, is_export
from ._read import column_to_numpy, read_embeddings, read_errors, read_metadata
from ._runner import BATCH_SIZE, EmbedOptions, Engine, LocalEngine, batch_rows, run_embed
from ._tracks import TRACKS_FILE, read_tracks
from ._types import Cursor, ExportStateError, NonFiniteEmbeddingError

__all__ = [
    "BATCH_SIZE",
    "ERRORS_FILE",
    "FEATURES",
    "IMAGE_EXTENSIONS",
    "INDEX_FILE",
    "MANIFESTS",
    "RUN_FILE",
    "TRACKS_FILE",
    "VIDEO_EXTENSIONS",
    "Cursor",
    "EmbedOptions",
    "Engine",
    "ExportStateError",
    "InputItem",
    "LocalEngine",
    "NonFiniteEmbeddingError",
    "Shard",
    "batch_rows",
    "column_to_numpy",
    "committed_shards",
    "from_arrow",
    "is_export",
    "iter_inputs",
    "read_embeddings",
    "read_errors",
    "read_metadata",
    "read_shard",
    "read_tracks",
    "run_embed",
]
