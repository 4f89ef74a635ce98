"""Data-parallel training on several processes (``torchrun``): what :func:`deqlib.train.fit` does there.

:func:`~deqlib.train.fit` trains data-parallel when it is called inside a process group of two or more processes
(:func:`init_from_env` joins the one torchrun describes in the environment):

- the model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` (:func:`wrap`), which averages the
  gradients over the processes; attributes the wrapper lacks are looked up on the model, so losses that call
  ``model.pinned_depth()`` or ``model.deq`` work unchanged;
- ``batch_size`` stays the *global* batch: every process draws the global batches of sample indices with the
  single-process loader of fit (over :class:`SampleIndices`) and takes its share of each (:func:`shard_of`).
  Torch's stock ``DistributedSampler`` draws another permutation and pads the data with repeated samples, so one
  process and several would train on different batches; this sampling does not. Each process's loss is weighted
  by its share of the batch (``Shard.weight``), so the averaged gradient is the gradient of the global
  batch's mean loss, the last, smaller batch included: ``N`` processes and one process train to the same weights,
  up to float rounding, for a loss without randomness (random attack starts are drawn per process, so adversarial
  training matches in distribution only);
- the epoch's loss, accuracy, solver and convergence counts and the validation accuracy (each process scores a
  slice of the validation set) are summed over the processes (:func:`sum_over`);
- process 0 alone writes the checkpoints and logs, the others wait for it (:func:`barrier`); on resume every process
  reads the same checkpoint;
- after every epoch the processes' weights are compared (:func:`check_in_sync`): weights that differ (a gradient
  that bypassed the all-reduce) stop the run with an error instead of drifting apart silently.

Example (two processes on a CPU)::

    torchrun --nproc_per_node=2 -m deqlib.zoo train mnist5k-mlp-standard --cache --no-progress
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Subset, default_collate

from .._validate import check_choice

__all__ = [
    "Group",
    "current",
    "init_from_env",
    "wrap",
    "Shard",
    "shard_of",
    "SampleIndices",
    "fetch",
    "sum_over",
    "barrier",
    "check_in_sync",
    "sum_epoch",
    "sharded_accuracy",
    "BACKENDS",
]

BACKENDS = ("gloo", "nccl")
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Group:
    """This process's place in the process group: its ``rank``, the ``world_size`` and its ``local_rank``."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes checkpoints and logs."""
        return self.rank == 0


def current() -> Optional[Group]:
    """The process group fit trains in: None unless one of two or more processes is initialised."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    rank = dist.get_rank()
    return Group(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))


def init_from_env(backend: Optional[str] = None) -> Optional[Group]:
    """Join the process group that torchrun describes in the environment; None when it runs one process.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default NCCL where CUDA is available, else gloo.

    Returns:
        This process's :class:`Group`, or None (``WORLD_SIZE`` unset or 1: a single-process run).

    Raises:
        RuntimeError: ``WORLD_SIZE`` > 1 but torchrun's other variables are missing (the command was not started
            by torchrun).
        ValueError: an unknown backend.
    """
    if current() is not None:
        return current()
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"deqlib.train: WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set: start "
            "several processes with torchrun (torchrun --nproc_per_node=N ...), or unset WORLD_SIZE"
        )
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    check_choice(backend, "backend", "init_from_env", BACKENDS)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return current()


class _DDP(DistributedDataParallel):
    """DistributedDataParallel that hands the attributes it lacks to the wrapped model."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (on ``device``'s GPU when it is one); attributes pass through."""
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return _DDP(model, device_ids=ids)


@dataclass(frozen=True)
class Shard:
    """One process's share of one global batch: its sample ``indices`` and the ``weight`` of its loss."""

    indices: List[int]
    weight: float


def shard_of(batch: Sequence[int], group: Group) -> Shard:
    """This process's :class:`Shard` of a global batch of sample indices.

    Process ``rank`` takes positions ``rank``, ``rank + world_size``, ... of the batch; its loss weight is
    ``world_size * (its samples) / (batch size)``, so the mean over processes of the weighted gradients is the
    gradient of the batch's mean loss. A process left without a sample (a batch smaller than the world) gets the
    batch's first sample with weight 0.

    Example:
        >>> shard_of([7, 3, 5], Group(rank=1, world_size=2, local_rank=1))
        Shard(indices=[3], weight=0.6666666666666666)
    """
    mine = list(batch[group.rank :: group.world_size])
    return Shard(mine, group.world_size * len(mine) / len(batch)) if mine else Shard(list(batch[:1]), 0.0)


class SampleIndices(Dataset):
    """The indices ``0 .. n - 1`` as a data set: fit draws the global batches from it with its single-process
    loader, so one process and several shuffle alike."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def fetch(dataset: Any, shard: Shard) -> Any:
    """The batch of ``dataset`` samples at the shard's indices (collated as a DataLoader does)."""
    return default_collate([dataset[i] for i in shard.indices])


def _reduce_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_over(values: Sequence[float]) -> List[float]:
    """The sums over all processes of ``values`` (float64; every process must pass as many)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier() -> None:
    """Wait until every process gets here."""
    dist.barrier()


def _checksum(model: nn.Module) -> torch.Tensor:
    """Three numbers that differ between processes whose weights differ: the sum, the absolute sum, a weighted sum."""
    vec = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    ramp = torch.linspace(-1.0, 1.0, vec.numel(), dtype=torch.float64, device=vec.device)
    return torch.stack([vec.sum(), vec.abs().sum(), (vec * ramp).sum()])


def check_in_sync(model: nn.Module, where: str, rtol: float = 1e-6) -> None:
    """Raise if the processes' weights of ``model`` differ (beyond ``rtol`` relative to their size).

    Raises:
        RuntimeError: the weights differ between processes; ``where`` names the point of the run.
    """
    mine = _checksum(model).to(_reduce_device())
    hi, lo = mine.clone(), mine.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    if bool(((hi - lo).abs() > rtol * (1.0 + hi.abs())).any()):
        raise RuntimeError(
            f"deqlib.train: after {where}, the weights differ between the {dist.get_world_size()} processes "
            f"(checksums from {lo.tolist()} to {hi.tolist()}): some gradient did not pass through "
            "DistributedDataParallel's all-reduce (a loss that computes the logits without calling the model?)"
        )


def sum_epoch(meter: Any, stats: Any, conv: Any) -> None:
    """Replace this process's sums of an epoch by the group's: the loss meter (``loss_sum, seen, correct,
    counted``), the solver steps (a :class:`~deqlib.train.solve_stats.SolveStats`) and the convergence counts (a
    :class:`~deqlib.solvers.ConvergenceCounts`)."""
    fields = [f"{tag}_{what}" for tag in ("forward", "backward") for what in ("samples", "nonconverged", "solves")]
    tags = sorted(stats.steps)
    mine = [meter.loss_sum, meter.seen, meter.correct, meter.counted]
    mine += [stats.steps[t] for t in tags] + [stats.samples[t] for t in tags] + [getattr(conv, f) for f in fields]
    total = sum_over(mine)
    meter.loss_sum, meter.seen, meter.correct, meter.counted = total[0], *(int(v) for v in total[1:4])
    k = len(tags)
    stats.steps = dict(zip(tags, total[4 : 4 + k]))
    stats.samples = {t: int(v) for t, v in zip(tags, total[4 + k : 4 + 2 * k])}
    for f, v in zip(fields, total[4 + 2 * k :]):
        setattr(conv, f, int(v))


def sharded_accuracy(model: nn.Module, data: Any, group: Group, *, batch_size: int, device: torch.device) -> float:
    """Accuracy on ``data``: each process scores every ``world_size``-th sample, and the counts add up."""
    from .accuracy import evaluate_accuracy

    mine = list(range(group.rank, len(data), group.world_size))
    acc = evaluate_accuracy(model, Subset(data, mine), batch_size=batch_size, device=device) if mine else 0.0
    correct, total = sum_over([acc * len(mine), len(mine)])
    return correct / total
