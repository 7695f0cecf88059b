"""Data parallelism: process-group setup, all-gather with gradients, global BatchNorm.

The training objective is defined on the GLOBAL batch. A global batch of G
samples is cut into ``world_size`` contiguous blocks (:func:`split`): the
first ``G % world_size`` ranks take ``G // world_size + 1`` samples, the
others ``G // world_size``, so any G >= world_size runs on any number of
processes. The contrastive and orthogonality losses gather the features of
every process with :func:`all_gather_with_grad` (blocks of any size), and
BatchNorm statistics are reduced over all processes by
:class:`GlobalBatchNorm`. Every process's loss is ``world_size`` times its
share of the global loss: ``local_sum / global_count * world_size`` where
the loss is a mean over samples (:func:`share` gives that weight), the whole
loss where it is not. DistributedDataParallel's gradient average then equals
the gradient of the global loss, because the backward of every collective
here SUMS the gradients of all processes.

Feature collectives run on their own process group, so they never
interleave with DDP's gradient buckets on the default group.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

_FEATURE_GROUP: dist.ProcessGroup | None = None


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits.

    Attributes:
        rank: Global rank (0 when not distributed).
        world_size: Number of processes (1 when not distributed).
        local_rank: Rank on this machine (selects the GPU).
        device: The device this process computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment (if any).

    Reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with ``WORLD_SIZE`` > 1
    it initialises NCCL (CUDA) or gloo (CPU) and pins the process to GPU
    ``LOCAL_RANK``. Without them it is a single process.

    Args:
        device: "cpu", "cuda", "cuda:N" or None (CUDA when available).
        timeout_s: Collective timeout.

    Returns:
        The :class:`DistEnv`.
    """
    from .._utils.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    if world > 1:
        setup_feature_group()
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def setup_feature_group() -> None:
    """Create the process group used for feature collectives (idempotent)."""
    global _FEATURE_GROUP
    if _FEATURE_GROUP is None and dist.is_initialized():
        _FEATURE_GROUP = dist.new_group(backend=dist.get_backend())


def shutdown() -> None:
    """Leave the process group (if any)."""
    global _FEATURE_GROUP
    if dist.is_initialized():
        dist.destroy_process_group()
    _FEATURE_GROUP = None


def feature_group() -> dist.ProcessGroup | None:
    return _FEATURE_GROUP


def world_size() -> int:
    """Number of processes (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when torch.distributed is not initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def split(total: int, world: int, rank: int) -> tuple[int, int]:
    """This rank's contiguous block of a global batch: ``(offset, count)``.

    The first ``total % world`` ranks take one sample more than the others,
    so the blocks differ by at most one and concatenate, in rank order, to
    the global batch.

    Args:
        total: Global batch size.
        world: Number of processes.
        rank: This process.
    """
    base, extra = divmod(total, world)
    return rank * base + min(rank, extra), base + (1 if rank < extra else 0)


class _AllGather(torch.autograd.Function):
    """Concatenate the tensors of all ranks along dim 0 (any number of rows each); backward sums and slices."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        group = _FEATURE_GROUP
        n = dist.get_world_size(group)
        rows = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
        sizes = [torch.empty_like(rows) for _ in range(n)]
        dist.all_gather(sizes, rows, group=group)
        counts = [int(c.item()) for c in sizes]
        me = dist.get_rank(group)
        ctx.offset, ctx.rows = sum(counts[:me]), x.shape[0]
        # Collectives need equal shapes: pad every block to the largest, then drop the padding.
        most = max(counts)
        x = x.contiguous()
        if x.shape[0] < most:
            x = torch.cat([x, x.new_zeros((most - x.shape[0], *x.shape[1:]))])
        out = [torch.empty_like(x) for _ in range(n)]
        dist.all_gather(out, x, group=group)
        return torch.cat([o[:c] for o, c in zip(out, counts, strict=True)], dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # Every rank's loss used every rank's features: the gradient of a
        # local block is the sum over ranks. all_reduce is what every backend
        # supports (gloo has no reduce_scatter).
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=_FEATURE_GROUP)
        return grad[ctx.offset:ctx.offset + ctx.rows]


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=_FEATURE_GROUP)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=_FEATURE_GROUP)
        return grad


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` concatenated in rank order, differentiable.

    Args:
        x: ``(n_r, ...)``; the row count ``n_r`` may differ between ranks,
            the other dimensions may not.

    Returns:
        ``(sum of n_r, ...)``; ``x`` itself when not distributed. The
        backward of rank r receives the sum over ranks of the gradients of
        its own rows.
    """
    if world_size() == 1:
        return x
    setup_feature_group()
    return _AllGather.apply(x)


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """:func:`all_gather_with_grad` and the index of this rank's first row in the result."""
    if world_size() == 1:
        return x, 0
    counts = all_counts(x.shape[0], x.device)
    return all_gather_with_grad(x), sum(counts[:rank()])


def all_counts(n: int, device: torch.device | str | None = None) -> list[int]:
    """Every rank's ``n`` (e.g. its local batch size), in rank order.

    Args:
        n: This rank's number.
        device: Where the collective's tensor lives; None: the current CUDA
            device under NCCL, else the CPU.
    """
    if world_size() == 1:
        return [n]
    setup_feature_group()
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    mine = torch.tensor([n], device=device, dtype=torch.long)
    out = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(out, mine, group=_FEATURE_GROUP)
    return [int(c.item()) for c in out]


def share(n: int, device: torch.device | str | None = None) -> float:
    """Weight of a per-sample mean over this rank's ``n`` samples: ``n * world_size / global count``.

    A rank that returns ``share(n) * mean over its n samples`` makes DDP's
    average over ranks the mean over the global batch, however unevenly it
    is split. 1.0 when not distributed.
    """
    if world_size() == 1:
        return 1.0
    return n * world_size() / max(1, sum(all_counts(n, device)))


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks, differentiable (identity when not distributed)."""
    if world_size() == 1:
        return x
    setup_feature_group()
    return _AllReduceSum.apply(x)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a tensor without gradient (metrics)."""
    if world_size() == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / world_size()


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics cover the samples of every rank.

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm1d/2d``,
    so checkpoints and exports are unchanged. In training mode under
    torch.distributed the mean and the (biased) variance are reduced over
    all ranks in two passes (mean first, then centred squares, in float32)
    and the running statistics get the unbiased global variance, exactly as
    one process with the whole batch would compute them. Outside training,
    or with one process, it is ordinary BatchNorm. Ranks may hold different
    numbers of samples: the count is reduced with the sums.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x if x.dtype == torch.float64 else x.float()
        local = xf.new_tensor([xf.numel() // xf.shape[1]])
        # The sample count rides with the sums in one collective (it has no gradient to carry).
        reduced = all_reduce_sum_with_grad(torch.cat([xf.sum(dims), local]))
        count = reduced[-1].detach()  # a tensor: no device sync
        mean = reduced[:-1] / count
        centred = xf - mean.view(shape)
        var = all_reduce_sum_with_grad(centred.pow(2).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (count / (count - 1).clamp_min(1)), alpha=m)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel for PCL's objective.

    Each of the three steps uses part of the network, so unused parameters
    are expected. Buffers (BatchNorm running statistics) are not re-broadcast
    at every forward: with :class:`GlobalBatchNorm` they are the same on
    every rank already.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    known = inspect.signature(DistributedDataParallel.__init__).parameters
    # torch >= 2.10 renamed broadcast_buffers; both keep the initial sync from rank 0.
    sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in known else {"broadcast_buffers": False}
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None,
                                   find_unused_parameters=True, **sync)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d in ``module`` by a :class:`GlobalBatchNorm` with the same state.

    Returns:
        The module (converted in place where possible; a bare BatchNorm is
        returned as a new object).
    """
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        ref = next(t for t in module.state_dict().values() if t.is_floating_point())
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, device=ref.device, dtype=ref.dtype)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module
