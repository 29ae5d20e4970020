"""torch.distributed plumbing for ``torchrun``: launch checks, rendezvous with a timeout,
DistributedDataParallel for the training step, sharded inference with an ordered gather.

One process per device.  ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` checks them, joins the process
group (NCCL on GPUs, gloo on CPU) within a short timeout and says which variables to look at
when it cannot, instead of hanging for torch's default 10-30 minutes.

Without those variables everything here degrades to a single process: rank 0 of 1, no
collective is ever called, so the single-process code path is unchanged.
"""

import datetime
import os
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Subset

from reid_srdl.core.errors import ReidSrdlError

#: Overrides ``train.dist_timeout`` (seconds) without touching the config.
TIMEOUT_ENV = "REID_SRDL_DIST_TIMEOUT"
_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedSetupError(ReidSrdlError, RuntimeError):
    """A torchrun launch is inconsistent or a rank cannot reach the rendezvous in time."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: rank ``rank`` of ``world_size``; the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = DistEnv()


# --------------------------------------------------------------------------- launch
def launched_with_torchrun(environ: Mapping[str, str] = os.environ) -> bool:
    """True when a launcher (torchrun, or a scheduler doing its job) set RANK/WORLD_SIZE."""
    return "RANK" in environ or "WORLD_SIZE" in environ


def _int_var(environ: Mapping[str, str], name: str) -> int:
    raw = environ.get(name)
    if raw is None:
        raise DistributedSetupError(
            f"distributed launch: environment variable {name} is not set (torchrun sets "
            f"{', '.join(_LAUNCH_VARS)}; set all of them when launching by hand)"
        )
    try:
        return int(raw)
    except ValueError:
        raise DistributedSetupError(f"distributed launch: {name}={raw!r} is not an integer") from None


def read_launch_env(environ: Mapping[str, str] = os.environ) -> DistEnv:
    """Check the launcher's variables; a clear error names the one that is wrong."""
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not environ.get(name):
            raise DistributedSetupError(
                f"distributed launch: {name} is not set; torchrun sets it, or export "
                f"MASTER_ADDR=<host of rank 0> MASTER_PORT=<free port> on every node"
            )
    world = _int_var(environ, "WORLD_SIZE")
    rank = _int_var(environ, "RANK")
    if world < 1:
        raise DistributedSetupError(f"distributed launch: WORLD_SIZE={world} must be >= 1")
    if not 0 <= rank < world:
        raise DistributedSetupError(f"distributed launch: RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    local_rank = int(environ.get("LOCAL_RANK", "0") or 0)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank)


def resolve_timeout(config_seconds: float, environ: Mapping[str, str] = os.environ) -> float:
    """Rendezvous/collective timeout in seconds: ``$REID_SRDL_DIST_TIMEOUT`` if set, else the config's."""
    raw = environ.get(TIMEOUT_ENV)
    value = config_seconds
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise DistributedSetupError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise DistributedSetupError(f"the distributed timeout must be > 0 seconds, got {value}")
    return float(value)


def init_distributed(timeout_seconds: float, use_cuda: bool, environ: Mapping[str, str] = os.environ) -> DistEnv:
    """Join the process group torchrun describes (or return the single-process env).

    NCCL when ``use_cuda`` (each process on ``cuda:LOCAL_RANK``), gloo otherwise.  The same
    ``timeout_seconds`` bounds the rendezvous and every later collective, so a rank that never
    arrives (a wrong WORLD_SIZE, a node that cannot reach MASTER_ADDR:MASTER_PORT) ends the run
    with :class:`DistributedSetupError` instead of a hang.
    """
    if not launched_with_torchrun(environ):
        return SINGLE_PROCESS
    env = read_launch_env(environ)
    if dist.is_initialized():
        return current_env()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(env.local_rank)
    where = (
        f"MASTER_ADDR={environ.get('MASTER_ADDR')} MASTER_PORT={environ.get('MASTER_PORT')} "
        f"RANK={env.rank} WORLD_SIZE={env.world_size}"
    )
    timeout = resolve_timeout(timeout_seconds, environ)
    try:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
        # Every rank states the world it was launched into; a mismatch is caught here,
        # before any training step, rather than as a deadlock later.
        sizes = [None] * env.world_size
        dist.all_gather_object(sizes, env.world_size)
    except DistributedSetupError:
        raise
    except Exception as e:  # DistStoreError, DistNetworkError, timeouts: all mean "no rendezvous"
        _destroy_quietly()
        first = str(e).strip().splitlines()[0].rstrip(".") if str(e).strip() else type(e).__name__
        raise DistributedSetupError(
            f"distributed rendezvous failed within {timeout:g}s ({where}): {first}. Check that all "
            f"WORLD_SIZE processes were started with the same WORLD_SIZE, that every node can reach "
            f"MASTER_ADDR:MASTER_PORT, and raise train.dist_timeout (or ${TIMEOUT_ENV}) for slow starts"
        ) from None
    if any(s != env.world_size for s in sizes):
        _destroy_quietly()
        raise DistributedSetupError(f"distributed launch: ranks disagree on WORLD_SIZE ({sizes}); {where}")
    return DistEnv(env.rank, env.world_size, env.local_rank, backend)


def _destroy_quietly() -> None:
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # already broken: nothing more to release
            pass


def shutdown() -> None:
    """Leave the process group (no-op in a single process)."""
    _destroy_quietly()


def current_env() -> DistEnv:
    """The running process group's view, or the single-process env when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE_PROCESS
    return DistEnv(
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0") or 0), dist.get_backend()
    )


def process_group_active() -> bool:
    """True under torchrun (after :func:`init_distributed`), even with WORLD_SIZE=1."""
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    return current_env().is_main


def barrier() -> None:
    if current_env().enabled:
        dist.barrier()


# --------------------------------------------------------------------------- collectives
def broadcast_from_main(obj):
    """Rank 0's ``obj`` on every rank (pickled; for small things: a path, an error message)."""
    if not current_env().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks of a small CPU float64 tensor (epoch loss sums, counts)."""
    if not current_env().enabled:
        return values
    env = current_env()
    device = torch.device("cuda", torch.cuda.current_device()) if env.backend == "nccl" else torch.device("cpu")
    out = values.to(device)
    dist.all_reduce(out)
    return out.cpu()


@torch.no_grad()
def broadcast_module_state(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module``.

    DDP keeps the parameters equal, but each rank's BatchNorm running statistics come from
    its own shard; inference that is sharded across ranks must use one model, rank 0's (the
    one that is checkpointed).
    """
    if not current_env().enabled:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def wrap_for_training(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel when the process group spans several ranks.

    Buffers are synced from rank 0 when wrapping, not at every forward (rank 0's running statistics are what is
    saved; :func:`broadcast_module_state` aligns the others before sharded inference).
    """
    if not current_env().enabled:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)


# --------------------------------------------------------------------------- sharded inference
def shard_loader(loader: DataLoader, rank: int, world_size: int) -> DataLoader:
    """The same loader over every ``world_size``-th sample starting at ``rank`` (file order kept)."""
    dataset = loader.dataset
    subset = Subset(dataset, list(range(rank, len(dataset), world_size)))
    return DataLoader(
        subset,
        batch_size=loader.batch_size,
        shuffle=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=False,
    )


def gather_shards(local: torch.Tensor, total: int) -> torch.Tensor:
    """Reassemble rows computed by :func:`shard_loader` on every rank into dataset order.

    ``local`` holds this rank's rows ``rank, rank + W, rank + 2W, ...``; the result is the full
    ``(total, ...)`` tensor on every rank.
    """
    env = current_env()
    if not env.enabled:
        return local
    shards = [None] * env.world_size
    dist.all_gather_object(shards, local.cpu())
    out = torch.empty((total,) + tuple(local.shape[1:]), dtype=local.dtype)
    for rank, shard in enumerate(shards):
        expected = len(range(rank, total, env.world_size))
        if shard.shape[0] != expected:
            raise RuntimeError(f"rank {rank} returned {shard.shape[0]} rows for its shard of {expected}")
        out[rank :: env.world_size] = shard
    return out


def sharded_map(fn: Callable[[DataLoader], torch.Tensor], loader: DataLoader) -> torch.Tensor:
    """``fn(loader)`` computed on 1/W of the samples per rank, gathered in dataset order.

    ``fn`` maps a loader to one row per sample, in order; in a single process it simply runs
    on the whole loader.
    """
    env = current_env()
    if not env.enabled:
        return fn(loader)
    local = fn(shard_loader(loader, env.rank, env.world_size))
    return gather_shards(torch.as_tensor(local), len(loader.dataset))
