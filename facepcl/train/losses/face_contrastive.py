"""Face contrastive loss (PCL step b): NT-Xent with Beta-mixed negatives."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed as D
from ._mixing import MixingDraw, at_least_fp32, draw_mixing, mixing_for


class FaceContrastiveLoss(nn.Module):
    """NT-Xent over two views per frame, each negative replaced by a Beta mix of two negatives.

    For the ``2N`` views ``z`` (all frames' first views, then all second
    views), anchor ``i``'s positive is the other view of its frame and its
    negatives are the other ``K = 2N - 2`` embeddings, in increasing index
    order (slot ``k``). Each negative is replaced, before L2 normalisation,
    by ``lam[i, k] * n_k + (1 - lam[i, k]) * n_perm[k]`` with ``lam ~
    Beta(a, a)`` per (anchor, slot) and ``perm`` one permutation of the slots
    shared by all anchors. The loss is the cross-entropy of
    ``[cos(positive), cos(mixed negatives)] / T`` with the positive at index
    0, averaged over anchors (PCL, Liu et al., CVPR 2023, following
    SimCLR's NT-Xent).

    The mixed negatives are never materialised: their dot products with an
    anchor and their norms follow from two ``2N x 2N`` Gram matrices, so
    memory is O(N^2) rather than O(N^2 D).

    Args:
        temperature: T (0.07 in PCL).
        beta_alpha: a of Beta(a, a) (1.6 in PCL).
        gather_distributed: Under torch.distributed, gather the views of all
            ranks (with gradients) so the loss is that of the global batch;
            each rank returns the mean over its own anchors times its share
            of the global batch (``n * world_size / N``), which makes DDP's
            gradient average the global gradient however unevenly the batch
            is split.
    """

    def __init__(self, temperature: float = 0.07, beta_alpha: float = 1.6, gather_distributed: bool = False) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.beta_alpha = float(beta_alpha)
        self.gather_distributed = bool(gather_distributed)

    def num_anchors(self, local_views: int) -> int:
        """Rows of the mixing draw for ``local_views`` views on this rank (the global 2N when gathering)."""
        if self.gather_distributed and D.world_size() > 1:
            return sum(D.all_counts(local_views))
        return local_views

    def draw(self, local_views: int, rng: np.random.Generator | None = None) -> MixingDraw:
        """Draw the mixing for the (global) problem: ``lam (2N, 2N-2)``, ``perm (2N-2,)``."""
        n2 = self.num_anchors(local_views)
        return draw_mixing(n2, n2 - 2, self.beta_alpha, rng)

    def forward(self, z: torch.Tensor, mixing: MixingDraw | None = None, *, rng: np.random.Generator | None = None,
                return_logits: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Compute the loss.

        Args:
            z: ``(2n, D)`` projections of this rank: rows ``0..n-1`` are the
                first views of its ``n`` frames, rows ``n..2n-1`` the second
                views of the same frames. Not normalised.
            mixing: ``lam (2N, 2N-2)`` and ``perm (2N-2,)`` for the global
                batch (N: the frames of all ranks when gathering). None: drawn
                from ``rng`` (every rank must then pass the same ``rng`` state).
            rng: numpy Generator used when ``mixing`` is None.
            return_logits: Also return the ``(2n, 1 + 2N - 2)`` logits
                (positive first), already divided by T.

        Returns:
            The scalar loss (float32), and the logits if asked.
        """
        if z.dim() != 2 or z.shape[0] % 2 or z.shape[0] < 2:
            raise ValueError(f"z must be (2n, D) with n >= 1 frames, got shape {tuple(z.shape)}")
        z = at_least_fp32(z)
        n = z.shape[0] // 2
        if self.gather_distributed and D.world_size() > 1:
            # Gather each view separately so the global order is [views 1 of all frames, views 2 of all frames].
            first, offset = D.gather_rows(z[:n])
            big = torch.cat([first, D.all_gather_with_grad(z[n:])])
            # This rank's share of the global mean (ranks may hold different numbers of frames).
            weight = 2 * n * D.world_size() / big.shape[0]
        else:
            big, offset, weight = z, 0, 1.0
        total = big.shape[0]
        half = total // 2
        if total < 4:
            raise ValueError("the face contrastive loss needs at least 2 frames (4 views) in the (global) batch")
        slots = total - 2
        lam, perm = mixing_for(mixing, total, slots, self.beta_alpha, rng)
        dev = z.device
        local = torch.arange(n, device=dev) + offset
        anchors = torch.cat([local, local + half])
        pair = (anchors + half) % total
        lam = lam.to(dev, z.dtype)[anchors]
        perm = perm.to(dev)

        # Slot k of anchor i is the k-th index of range(total) without i and its pair.
        lo, hi = torch.minimum(anchors, pair)[:, None], torch.maximum(anchors, pair)[:, None]
        j = torch.arange(slots, device=dev).expand(anchors.shape[0], slots)
        j = j + (j >= lo)
        j = j + (j >= hi)
        jp = j[:, perm]

        unit = F.normalize(big, dim=1)
        f = unit[anchors]
        dots = f @ big.T  # anchor . raw negative, (A, total)
        gram = big @ big.T  # raw . raw, (total, total)
        sq = gram.diagonal()
        lam_c = 1.0 - lam
        num = lam * dots.gather(1, j) + lam_c * dots.gather(1, jp)
        norm2 = lam * lam * sq[j] + lam_c * lam_c * sq[jp] + 2.0 * lam * lam_c * gram[j, jp]
        # F.normalize divides by max(|x|, 1e-12); the same on the squared norm.
        neg = num * torch.rsqrt(norm2.clamp_min(1e-24))
        pos = (f * unit[pair]).sum(1, keepdim=True)
        logits = torch.cat([pos, neg], dim=1) / self.temperature
        loss = (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean() * weight
        return (loss, logits) if return_logits else loss
