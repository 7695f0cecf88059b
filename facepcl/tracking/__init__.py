"""Faces in video as tracks: association across frames, approximate head angles, per-track summaries.

- :func:`track` (also ``facepcl.track``): every face of a video or frame sequence, as :class:`Track` objects;
- :class:`Tracker` / :class:`TrackerOptions`: the online association (motion, overlap, face-code continuity,
  Hungarian assignment); :class:`VideoTracker` adds shot cuts and is the per-frame step shared by
  ``facepcl.track`` and ``facepcl embed``;
- :func:`head_angles`: yaw, pitch, roll in degrees from the five landmarks;
- :func:`summarize`: a track's summary row (span, mean face code, representative frame, keyframes).

See docs/tracking.md.
"""

from ._summary import box_sharpness, keyframes, representative, summarize
from ._track import Track, track
from ._tracker import Tracker, TrackerOptions, VideoTracker, colour_histogram, is_cut
from .angles import head_angles

__all__ = ["Track", "Tracker", "TrackerOptions", "VideoTracker", "box_sharpness", "colour_histogram", "head_angles",
           "is_cut", "keyframes", "representative", "summarize", "track"]
