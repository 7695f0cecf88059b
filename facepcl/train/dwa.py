"""Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019) on PCL's two contrastive losses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


class DynamicWeightAverage:
    """Loss weights from the ratio of each task's last two per-epoch mean losses.

    For epoch ``t >= start_epoch`` (1-based): ``w_k = L_k(t-1) / L_k(t-2)``
    from the per-epoch means of the UNWEIGHTED losses, and
    ``lambda_k = K * exp(w_k / T) / sum_j exp(w_j / T)``; earlier epochs use
    ``lambda_k = 1``. PCL applies it to the face and pose contrastive losses
    (K = 2, T = 2).

    Args:
        num_tasks: K.
        temperature: T.
        start_epoch: First epoch that uses the ratios (>= 3; PCL: 3).
    """

    def __init__(self, num_tasks: int = 2, temperature: float = 2.0, start_epoch: int = 3) -> None:
        if start_epoch < 3:
            raise ValueError("start_epoch must be >= 3: the weights need the means of the two previous epochs")
        self.num_tasks = int(num_tasks)
        self.temperature = float(temperature)
        self.start_epoch = int(start_epoch)
        self.history: dict[int, list[float]] = {}

    def record(self, epoch: int, mean_losses: Sequence[float]) -> None:
        """Store the per-epoch mean unweighted losses of ``epoch`` (one per task)."""
        if len(mean_losses) != self.num_tasks:
            raise ValueError(f"expected {self.num_tasks} losses, got {len(mean_losses)}")
        self.history[int(epoch)] = [float(v) for v in mean_losses]

    def weights(self, epoch: int) -> list[float]:
        """The loss weights for ``epoch``."""
        prev, prev2 = self.history.get(epoch - 1), self.history.get(epoch - 2)
        if epoch < self.start_epoch or prev is None or prev2 is None:
            return [1.0] * self.num_tasks
        ratios = [a / b for a, b in zip(prev, prev2, strict=True)]
        top = max(ratios)  # subtracted before exp for stability; it cancels in the ratio
        e = [math.exp((r - top) / self.temperature) for r in ratios]
        s = sum(e)
        return [self.num_tasks * v / s for v in e]

    def state_dict(self) -> dict[str, Any]:
        return {"num_tasks": self.num_tasks, "temperature": self.temperature, "start_epoch": self.start_epoch,
                "history": {str(k): list(v) for k, v in self.history.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_tasks = int(state["num_tasks"])
        self.temperature = float(state["temperature"])
        self.start_epoch = int(state["start_epoch"])
        self.history = {int(k): [float(x) for x in v] for k, v in state["history"].items()}
