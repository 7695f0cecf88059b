"""Pose contrastive loss (PCL step c): two views of a frame against Beta-mixed flipped negatives."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed as D
from ._mixing import MixingDraw, at_least_fp32, draw_mixing, mixing_for

#: How negatives are drawn: one set per sample (the paper), or one shared reference set.
POSE_NEGATIVES = ("per_sample", "reference")


class PoseContrastiveLoss(nn.Module):
    """InfoNCE between two views of a frame, with horizontally flipped frames as negatives.

    Each of the ``B`` frames gives two augmented views (the anchors, ``2B``
    rows) and ``M`` augmented copies of its horizontal flip (the negatives:
    same face, mirrored pose). Negatives are grouped into ``B`` groups of
    ``M``; anchor views of frame ``b`` use group ``b``. Inside a group each
    negative is replaced, before L2 normalisation, by ``lam[b, k] * n_k + (1 -
    lam[b, k]) * n_perm[k]`` (``lam ~ Beta(a, a)`` per (frame, slot), shared
    by the frame's two views; ``perm`` one permutation of the ``M`` slots
    shared by all groups). Loss: cross-entropy of ``[cos(q, k), cos(anchor,
    mixed negatives)] / T`` with the positive first, averaged over the 2B
    anchors.

    Grouping (``negatives``):

    - ``"per_sample"`` (the paper): group ``b`` is the ``M`` flips of frame
      ``b``.
    - ``"reference"`` (the authors' code): the ``M x B`` flips are laid out
      view-major (row ``m * B + b`` is flip ``m`` of frame ``b``) and cut into
      ``B`` consecutive groups of ``M`` rows, so group ``g`` holds rows
      ``g*M .. g*M+M-1``: with B = 10, M = 100, ten flips of each of the ten
      frames. Under torch.distributed this layout spans the global batch, so
      the negatives of all ranks are gathered.

    Args:
        temperature: T (0.07 in PCL).
        beta_alpha: a of Beta(a, a) (1.6 in PCL).
        negatives: "per_sample" or "reference".
        gather_distributed: Define the problem on the global batch under
            torch.distributed (the mixing rows are indexed by global frame,
            and "reference" grouping gathers the negatives of all ranks).
    """

    def __init__(self, temperature: float = 0.07, beta_alpha: float = 1.6, negatives: str = "per_sample",
                 gather_distributed: bool = False) -> None:
        super().__init__()
        if negatives not in POSE_NEGATIVES:
            raise ValueError(f"negatives must be one of {POSE_NEGATIVES}, got {negatives!r}")
        self.temperature = float(temperature)
        self.beta_alpha = float(beta_alpha)
        self.negatives = negatives
        self.gather_distributed = bool(gather_distributed)

    def num_frames(self, local_frames: int) -> int:
        """Rows of the mixing draw: the global number of frames when gathering."""
        if self.gather_distributed and D.world_size() > 1:
            return sum(D.all_counts(local_frames))
        return local_frames

    def draw(self, local_frames: int, num_negatives: int, rng: np.random.Generator | None = None) -> MixingDraw:
        """Draw ``lam (B, M)`` and ``perm (M,)`` for the (global) batch."""
        return draw_mixing(self.num_frames(local_frames), num_negatives, self.beta_alpha, rng)

    def forward(self, anchors: torch.Tensor, negatives: torch.Tensor, mixing: MixingDraw | None = None, *,
                rng: np.random.Generator | None = None,
                return_logits: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Compute the loss.

        Args:
            anchors: ``(2b, D)`` projections of this rank's ``b`` frames: rows
                ``0..b-1`` first views, ``b..2b-1`` second views.
            negatives: ``(b, M, D)`` projections of the flipped copies,
                ``negatives[i, m]`` being flip copy ``m`` of frame ``i``.
            mixing: ``lam (B, M)`` and ``perm (M,)`` for the global frames
                (B: the frames of all ranks when gathering). None: drawn from ``rng``.
            rng: numpy Generator used when ``mixing`` is None.
            return_logits: Also return the ``(2b, 1 + M)`` logits (divided by T).

        Returns:
            The scalar loss (float32), and the logits if asked.
        """
        if anchors.dim() != 2 or anchors.shape[0] % 2 or anchors.shape[0] < 2:
            raise ValueError(f"anchors must be (2b, D) with b >= 1, got shape {tuple(anchors.shape)}")
        b = anchors.shape[0] // 2
        if negatives.dim() != 3 or negatives.shape[0] != b or negatives.shape[2] != anchors.shape[1]:
            raise ValueError(f"negatives must be (b={b}, M, D={anchors.shape[1]}), got shape "
                             f"{tuple(negatives.shape)}")
        m_neg = negatives.shape[1]
        anchors, negatives = at_least_fp32(anchors), at_least_fp32(negatives)
        gather = self.gather_distributed and D.world_size() > 1
        counts = D.all_counts(b, anchors.device) if gather else [b]
        offset, frames = sum(counts[:D.rank()]) if gather else 0, sum(counts)
        # This rank's share of the global mean (ranks may hold different numbers of frames).
        weight = b * len(counts) / frames
        if self.negatives == "reference":
            flat = negatives.reshape(b, m_neg * negatives.shape[2])
            every = (D.all_gather_with_grad(flat) if gather else flat).reshape(frames, m_neg, -1)
            # View-major rows (m * B + frame), then B consecutive groups of M rows.
            groups = every.transpose(0, 1).reshape(frames, m_neg, -1)[offset:offset + b]
        else:
            groups = negatives
        lam, perm = mixing_for(mixing, frames, m_neg, self.beta_alpha, rng)
        lam = lam.to(anchors.device, anchors.dtype)[offset:offset + b, :, None]
        mixed = lam * groups + (1.0 - lam) * groups[:, perm.to(anchors.device)]
        mixed = F.normalize(mixed, dim=2)
        unit = F.normalize(anchors, dim=1)
        q, k = unit[:b], unit[b:]
        pos = (q * k).sum(1)
        neg = torch.einsum("vbd,bmd->vbm", unit.view(2, b, -1), mixed).reshape(2 * b, m_neg)
        logits = torch.cat([torch.cat([pos, pos])[:, None], neg], dim=1) / self.temperature
        loss = (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean() * weight
        return (loss, logits) if return_logits else loss
