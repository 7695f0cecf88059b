"""The four PCL pretraining losses, one module each.

- :class:`FaceContrastiveLoss`: NT-Xent on face projections with Beta-mixed negatives (step b).
- :class:`PoseContrastiveLoss`: InfoNCE on pose projections against flipped negatives (step c).
- :class:`ReconstructionLoss`: the four L1 terms of the swap reconstruction (step a).
- :class:`OrthogonalityLoss`: the squared cross-correlation of face and pose features (step a).
"""

from ._mixing import MixingDraw, draw_mixing
from .face_contrastive import FaceContrastiveLoss
from .orthogonality import OrthogonalityLoss
from .pose_contrastive import PoseContrastiveLoss
from .reconstruction import ReconstructionLoss

__all__ = [
    "FaceContrastiveLoss",
    "MixingDraw",
    "OrthogonalityLoss",
    "PoseContrastiveLoss",
    "ReconstructionLoss",
    "draw_mixing",
]
