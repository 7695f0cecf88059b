"""Search exported faces by face code (who, whatever the pose), pose code (head pose, whoever) or trunk.

:class:`FaceIndex` holds the vectors of one or more ``facepcl embed``
exports with each row's provenance; ``facepcl index`` builds one and
``facepcl search`` queries it with photos, export rows or raw vectors.
Search is exact (FAISS flat inner product) below ``exact_below`` rows and
approximate (FAISS IVF, float16 storage) from there on; see docs/search.md.
"""

from ._backend import EXACT_BELOW, normalize
from ._files import IndexFileError
from ._grid import render_search_grid
from ._index import FaceIndex, SearchResult
from ._query import Query, resolve_queries

__all__ = ["EXACT_BELOW", "FaceIndex", "IndexFileError", "Query", "SearchResult", "normalize", "render_search_grid",
           "resolve_queries"]
