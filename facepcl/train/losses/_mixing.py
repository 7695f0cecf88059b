"""Beta mixing of contrastive negatives (shared by the face and pose losses)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class MixingDraw(NamedTuple):
    """The random part of a mixed-negative contrastive loss.

    Attributes:
        lam: ``(rows, slots)`` float32 mixing weights, one per (row, negative slot).
        perm: ``(slots,)`` int64 permutation of the negative slots, shared by all rows.
    """

    lam: torch.Tensor
    perm: torch.Tensor


def draw_mixing(rows: int, slots: int, alpha: float, rng: np.random.Generator | None = None) -> MixingDraw:
    """Draw ``lam ~ Beta(alpha, alpha)`` per (row, slot) and one permutation of the slots.

    Args:
        rows: Number of rows (anchors for the face loss, frames for the pose loss).
        slots: Number of negatives per row.
        alpha: Beta parameter (1.6 in PCL).
        rng: numpy Generator. Under torch.distributed every rank must pass a
            generator in the same state, so all ranks draw the same global
            mixing. None: a fresh unseeded generator.

    Returns:
        A :class:`MixingDraw` on the CPU.
    """
    rng = rng if rng is not None else np.random.default_rng()
    lam = rng.beta(alpha, alpha, size=(rows, slots)).astype(np.float32)
    perm = rng.permutation(slots)
    return MixingDraw(torch.from_numpy(lam), torch.from_numpy(perm).long())


def mixing_for(mixing: MixingDraw | None, rows: int, slots: int, alpha: float,
               rng: np.random.Generator | None) -> MixingDraw:
    """``mixing`` checked against this batch's ``(rows, slots)``, or a fresh draw when None.

    Raises:
        ValueError: ``mixing`` was drawn for another batch shape.
    """
    if mixing is None:
        return draw_mixing(rows, slots, alpha, rng)
    lam, perm = mixing
    if lam.shape != (rows, slots) or perm.shape != (slots,):
        raise ValueError(f"mixing draw has lam {tuple(lam.shape)} and perm {tuple(perm.shape)}; this batch "
                         f"needs lam ({rows}, {slots}) and perm ({slots},)")
    return mixing


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Losses run in float32 (or float64 when given it), whatever autocast produced."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
