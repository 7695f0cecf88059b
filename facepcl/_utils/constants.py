"""Names shared across the package, defined once.

Every module that lists encoder features or model components imports them
from here, so an order or a spelling cannot drift between the pipeline,
exports, heads, evaluation and training.
"""

from __future__ import annotations

# The encoder's outputs, in the order exports, results and plots show them:
# F_f (face, pose-unrelated), F_p (pose) and F (trunk).
FEATURES = ("face", "pose", "trunk")

# The parts of a PCL model a weights file may hold, in the order they are saved.
COMPONENTS = ("encoder", "face_head", "pose_head", "decoder")



def parse_features(value: str) -> list[str]:
    """A comma-separated subset of :data:`FEATURES` (``"face,pose"``), in the order given.

    Raises:
        ValueError: An unknown name, or no name.
    """
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in FEATURES]
    if bad or not names:
        raise ValueError(f"expected a comma-separated subset of {','.join(FEATURES)}, got {value!r}")
    return names


__all__ = ["COMPONENTS", "FEATURES", "parse_features"]
