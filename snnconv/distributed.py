"""Many processes, one report: the processes torchrun starts share out the data and merge.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK in every process; without them (or with
WORLD_SIZE=1) everything runs as one process and nothing here does anything. With them, ``join``
opens the process group (gloo on the CPU, nccl on CUDA devices), ``shard`` gives each rank a
contiguous run of whole batches (the same batches, cut at the same places, as one process would
compute, so every per-batch figure is bit for bit the one-process figure), and ``gather``
collects each rank's partial state in rank order. Merging those states is exact: maxima,
integer counts and integer-valued float sums do not depend on the order of combination.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main process (rank 0) prints and writes files."""
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.size > 1


SINGLE = World()


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise UsageError(f"environment variable {name}={v!r} is not an integer") from None


def from_env() -> World:
    """The world torchrun describes in the environment (one process without it)."""
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return SINGLE
    rank = _env_int("RANK", 0)
    if not 0 <= rank < size:
        raise UsageError(f"RANK={rank} is outside WORLD_SIZE={size}")
    return World(rank, size, _env_int("LOCAL_RANK", rank))


def join(device=None) -> World:
    """Join the process group torchrun set up (once per process) and return the world.

    The backend follows the device: nccl for CUDA, gloo otherwise."""
    world = from_env()
    if not world.many:
        return world
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = device is not None and getattr(device, "type", "cpu") == "cuda"
        if cuda:
            import torch

            torch.cuda.set_device(device.torch)
        try:
            dist.init_process_group("nccl" if cuda else "gloo")
        except (ValueError, RuntimeError) as e:  # WORLD_SIZE set, but no torchrun behind it
            raise UsageError(f"WORLD_SIZE={world.size}: cannot join the other processes "
                             f"({str(e).splitlines()[0]})",
                             hint="start the command with torchrun, or unset WORLD_SIZE") \
                from None
    if dist.get_world_size() != world.size or dist.get_rank() != world.rank:
        raise UsageError("the process group does not match WORLD_SIZE / RANK")
    return world


def shard(total: int, batch_size: int, world: World) -> tuple[int, int]:
    """[start, stop) of this rank's samples: a contiguous run of whole batches of
    ``batch_size`` (the last rank's may end with the one short batch). Ranks beyond the number
    of batches get none."""
    if not world.many:
        return 0, total
    batches = -(-total // batch_size)
    lo = world.rank * batches // world.size
    hi = (world.rank + 1) * batches // world.size
    return min(total, lo * batch_size), min(total, hi * batch_size)


def gather(obj, world: World) -> list:
    """Every rank's ``obj`` (plain data: dicts, numbers, numpy arrays), in rank order, on every
    rank."""
    if not world.many:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def from_main(obj, world: World):
    """Rank 0's ``obj`` on every rank (what only the main process computes)."""
    if not world.many:
        return obj
    import torch.distributed as dist

    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
