"""Reconstruction loss (PCL step a): four L1 terms of the face/pose swap."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._mixing import at_least_fp32

TERMS = ("swap_face", "swap_pose", "same", "same_flip")


class ReconstructionLoss(nn.Module):
    """Sum of four mean-L1 reconstruction errors, weight 1 each.

    With ``s`` a frame, ``s^`` its horizontal flip, ``(F_f, F_p)`` the
    features of (noisy) ``s`` and ``(F_f^, F_p^)`` those of (noisy) ``s^``,
    the decoder outputs ``D(F_f^ + F_p)``, ``D(F_f + F_p^)``, ``D(F_f + F_p)``
    and ``D(F_f^ + F_p^)`` are compared with the clean ``s``, ``s^``, ``s``
    and ``s^``. Swapping the face code between a frame and its mirror image
    must not change the picture; swapping the pose code must mirror it.
    """

    def forward(self, recon: Sequence[torch.Tensor], s: torch.Tensor,
                s_flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the loss.

        Args:
            recon: Four ``(n, 3, H, W)`` decoder outputs, in the order
                ``D(F_f^ + F_p)``, ``D(F_f + F_p^)``, ``D(F_f + F_p)``,
                ``D(F_f^ + F_p^)``.
            s: ``(n, 3, H, W)`` clean frames in [0, 1].
            s_flip: ``(n, 3, H, W)`` their horizontal flips.

        Returns:
            ``(total, terms)``: the scalar sum (float32) and the ``(4,)`` terms
            in the order of :data:`TERMS`.
        """
        if len(recon) != 4:
            raise ValueError(f"expected 4 reconstructions, got {len(recon)}")
        targets = (s, s_flip, s, s_flip)
        for r, t in zip(recon, targets, strict=True):
            if r.shape != t.shape:
                raise ValueError(f"reconstruction {tuple(r.shape)} and target {tuple(t.shape)} differ in shape")
        pairs = zip(recon, targets, strict=True)
        terms = torch.stack([F.l1_loss(at_least_fp32(r), at_least_fp32(t)) for r, t in pairs])
        return terms.sum(), terms
