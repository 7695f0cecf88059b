"""Orthogonality loss (PCL step a): decorrelate the face and pose features."""

from __future__ import annotations

import torch
from torch import nn

from .. import distributed as D
from ._mixing import at_least_fp32


class OrthogonalityLoss(nn.Module):
    """Mean squared entry of the cross-correlation of batch-centred, row-normalised features.

    As in Domain Separation Networks (Bousmalis et al., 2016): centre ``a``
    and ``b`` over the batch, divide each row by its L2 norm (detached) plus
    ``eps``, and return ``mean((a^T b)^2)`` over the ``D_a x D_b`` matrix. It
    is computed as ``sum((a a^T) * (b b^T)) / (D_a D_b)``, which is the same
    number with ``n x n`` instead of ``D x D`` intermediates.

    Args:
        eps: Added to the row norms (1e-6 in PCL).
        gather_distributed: Under torch.distributed, gather the features of
            all ranks (with gradients) so centring and the sum run over the
            global batch; every rank then returns the global loss.
    """

    def __init__(self, eps: float = 1e-6, gather_distributed: bool = False) -> None:
        super().__init__()
        self.eps = float(eps)
        self.gather_distributed = bool(gather_distributed)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = at_least_fp32(x).flatten(1)
        if self.gather_distributed:
            x = D.all_gather_with_grad(x)
        x = x - x.mean(dim=0, keepdim=True)
        return x / (x.norm(dim=1, keepdim=True).detach() + self.eps)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            a: ``(n, D_a)`` features (e.g. F_f), flattened if not 2-D.
            b: ``(n, D_b)`` features of the same samples (e.g. F_p).

        Returns:
            The scalar loss (float32).
        """
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"a and b need the same number of rows, got {a.shape[0]} and {b.shape[0]}")
        a, b = self._prepare(a), self._prepare(b)
        return (a @ a.T * (b @ b.T)).sum() / (a.shape[1] * b.shape[1])
