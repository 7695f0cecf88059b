"""Head networks: the paper's linear probe, its BatchNorm variant for pose, and an MLP.

Every head maps ``(B, in_dim)`` features to ``(B, out_dim)`` outputs
(class logits, AU logits, angles in degrees, or a verification embedding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

HEAD_KINDS = ("linear", "bn-linear", "mlp")


class LinearHead(nn.Module):
    """``Linear(in_dim, out_dim)``: the paper's expression probe (on F at 100 px: ``Linear(6272, 7)``).

    Weights start from N(0, 0.01) and the bias from zero, as the reference's
    probe does.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim) -> (B, out_dim)``."""
        return self.fc(x)


class BNLinearHead(nn.Module):
    """``BatchNorm1d(in_dim)`` then ``Linear(in_dim, out_dim)``: the paper's pose probe.

    On F at 256 px this is ``BatchNorm1d(32768) + Linear(32768, 3)``. The
    reference leaves both layers at PyTorch's default initialisation; so
    does this class. The BatchNorm uses batch statistics in training and
    running statistics in eval mode, so it must be put in eval mode to
    predict (``head.eval()``).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_dim)
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim) -> (B, out_dim)``."""
        return self.fc(self.bn(x))


class MLPHead(nn.Module):
    """``[Linear -> BatchNorm1d -> ReLU -> Dropout] x len(hidden_dims)`` then ``Linear``.

    Args:
        in_dim: Input features.
        out_dim: Outputs.
        hidden_dims: Width of each hidden layer (default one of 512).
        dropout: Dropout probability after each hidden layer.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dims: Sequence[int] = (512,), dropout: float = 0.0) -> None:
        super().__init__()
        if not hidden_dims:
            raise ValueError("MLPHead needs at least one hidden layer; use LinearHead for none")
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden_dims:
            layers += [nn.Linear(prev, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = h
        layers.append(nn.Linear(prev, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim) -> (B, out_dim)``."""
        return self.layers(x)


def build_head(kind: str, in_dim: int, out_dim: int, *, hidden_dims: Sequence[int] = (512,),
               dropout: float = 0.0) -> nn.Module:
    """Build a head by name: "linear", "bn-linear" or "mlp"."""
    if in_dim <= 0 or out_dim <= 0:
        raise ValueError(f"head sizes must be positive, got in_dim={in_dim}, out_dim={out_dim}")
    if kind == "linear":
        return LinearHead(in_dim, out_dim)
    if kind == "bn-linear":
        return BNLinearHead(in_dim, out_dim)
    if kind == "mlp":
        return MLPHead(in_dim, out_dim, hidden_dims, dropout)
    raise ValueError(f"unknown head kind {kind!r}; choose from {list(HEAD_KINDS)}")
