"""Transitional alias of :mod:`facepcl.export._formats` for code outside the export not yet on the public names.

Import from :mod:`facepcl.export` instead (``FEATURES``, ``from_arrow``, ``read_shard`` for ``get_format(...).read``);
this module goes once nothing uses it.
"""

from ._formats import FEATURES, from_arrow, get_format

__all__ = ["FEATURES", "from_arrow", "get_format"]
