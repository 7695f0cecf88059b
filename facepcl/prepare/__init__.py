"""Raw videos, frame folders and images -> aligned face tracks that ``facepcl train`` reads.

``facepcl prepare INPUT... -o OUT`` (or :func:`prepare_tracks`) writes
``OUT/identity/video/NNNNNN.png``: for each video (or folder of frames) the
frames of one face, the main one, followed across frames by box overlap and
aligned with the model template. See docs/training.md.
"""

from ._run import DEFAULT_FRAME_SIZE, PrepareSummary, prepare_tracks
from ._sources import Source, list_sources
from ._state import PrepareStateError, read_manifest
from ._tracks import Track, Tracker

__all__ = [
    "DEFAULT_FRAME_SIZE",
    "PrepareStateError",
    "PrepareSummary",
    "Source",
    "Track",
    "Tracker",
    "list_sources",
    "prepare_tracks",
    "read_manifest",
]
