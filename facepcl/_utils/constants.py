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

__all__ = ["COMPONENTS", "FEATURES"]
