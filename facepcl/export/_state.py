"""Transitional alias for code outside the export not yet on the public names.

Import ``MANIFESTS`` and ``RUN_FILE`` from :mod:`facepcl.export` instead; this module goes once nothing uses it.
"""

from ._layout import MANIFESTS, RUN_FILE

__all__ = ["MANIFESTS", "RUN_FILE"]
