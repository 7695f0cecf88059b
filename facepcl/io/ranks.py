"""Running as one of several processes under torchrun (``torch.distributed.run``).

Ranks need no communication while they work: each takes a disjoint slice of
the inputs (item ``i`` goes to rank ``i % WORLD_SIZE``) and writes its own
shards. Only at the end do they meet once, over a gloo process group on the
CPU (also on GPU machines: a few counters do not need NCCL), so that rank 0
can add up the counts and rebuild ``_errors.jsonl`` after every rank's last
shard has landed. The group is created at the end, not the start, so a
rank's model loading or a long run never waits on the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class DistInfo:
    """This process's place among the torchrun processes.

    Attributes:
        rank: Global rank (``RANK``), 0 when not under torchrun.
        world_size: Number of processes (``WORLD_SIZE``).
        local_rank: Rank on this machine (``LOCAL_RANK``), used to pick a GPU.
        local_world_size: Processes on this machine (``LOCAL_WORLD_SIZE``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def from_env(env: dict[str, str] | None = None) -> DistInfo:
    """Read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` as torchrun sets them.

    Raises:
        ValueError: The variables are not integers or are inconsistent.
    """
    env = os.environ if env is None else env

    def get(name: str, default: int) -> int:
        value = env.get(name)
        if value in (None, ""):
            return default
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"environment variable {name}={value!r} is not an integer") from None

    world = get("WORLD_SIZE", 1)
    rank = get("RANK", 0)
    local_rank = get("LOCAL_RANK", 0)
    local_world = get("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent (need 0 <= RANK < WORLD_SIZE); "
                         "start the processes with torchrun")
    return DistInfo(rank, world, local_rank, max(1, local_world))


def rank_device(device: str | None, info: DistInfo) -> str | None:
    """The device of this rank: ``cuda`` (or the default on a CUDA machine) becomes ``cuda:LOCAL_RANK``."""
    if not info.distributed:
        return device
    import torch

    if device == "cuda" or (device is None and torch.cuda.is_available()):
        return f"cuda:{info.local_rank % max(1, torch.cuda.device_count())}"
    return device


# Ranks finish at different times (unequal inputs, videos); torchrun stops every process when one
# fails, so a long wait here cannot hang forever on a dead rank.
FINAL_TIMEOUT = timedelta(hours=24)


def reduce_at_end(info: DistInfo, counts: list[int], seconds: float) -> tuple[list[int], float, bool]:
    """Sum ``counts`` and take the longest ``seconds`` over all ranks; wait for every rank.

    Returns:
        ``(summed counts, max seconds, synced)``; ``synced`` is False when no
        process group could be formed (not started by torchrun), in which
        case the values are this rank's own.
    """
    if not info.distributed:
        return counts, seconds, True
    if not os.environ.get("MASTER_ADDR") or not os.environ.get("MASTER_PORT"):
        return counts, seconds, False
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=FINAL_TIMEOUT)
    try:
        total = torch.tensor(counts, dtype=torch.int64)
        dist.all_reduce(total)
        longest = torch.tensor([seconds], dtype=torch.float64)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        return [int(v) for v in total.tolist()], float(longest.item()), True
    except BaseException:
        dist.destroy_process_group()
        raise


def barrier_and_close(info: DistInfo, synced: bool) -> None:
    """Let every rank wait until rank 0 has written the merged files, then close the group."""
    if not (info.distributed and synced):
        return
    import torch.distributed as dist

    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()
