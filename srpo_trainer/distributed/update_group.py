"""One rank's share of a data-parallel RL update, over ``torch.distributed`` (DistributedDataParallel).

Every rank holds the same policy and optimizer and sees the whole step's batch; each mini-batch's decisions are
split between the ranks (rank r takes every world-th one), each rank backpropagates its share of the mini-batch
loss, and DDP averages the gradients. The shares are scaled so that the average equals the gradient of the
single-process loss on the whole mini-batch: for a loss that is a weighted sum over decisions,

    L = sum_r L_r,     grad L = (1 / world) sum_r grad (world * L_r)      (what DDP computes)

Anything that steers the control flow (the KL guard, the adaptive step size) is all-reduced first, so every rank
takes the same decisions and the ranks never wait on each other at different collectives. With ``world == 1`` the
group is the identity and the update is the single-process one, bit for bit.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn


class _CallInside(nn.Module):
    """DDP only synchronises gradients of what runs through its ``forward``; the trainer's losses are functions of
    the policy, so the wrapper's forward simply calls them."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, fn: Callable[..., torch.Tensor], *args):
        return fn(*args)


class UpdateGroup:
    """This process's rank in the update: ``shard`` picks its decisions, ``all_sum`` adds numbers over the ranks,
    ``loss`` runs a loss so that its ``backward`` averages the gradients over the ranks (DDP)."""

    def __init__(self, module: nn.Module | None = None, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world
        self._ddp = None
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            if module is None:
                raise ValueError("a distributed update group needs the module it trains")
            # the trainer's loss functions use the policy's parameters selectively (a frozen text encoder, a
            # log-std the fixed exploration mode ignores): unused ones contribute zero gradients
            self._ddp = DistributedDataParallel(_CallInside(module), find_unused_parameters=True)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(idx)[self.rank :: self.world]

    def all_sum(self, *values: float) -> list[float]:
        """The sums over the ranks of ``values`` (float64; each rank gets the same numbers)."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def loss(self, fn: Callable[..., torch.Tensor], *args) -> torch.Tensor:
        """``fn(*args)``, through DDP when distributed: the backward of the result all-reduces the gradients."""
        return fn(*args) if self._ddp is None else self._ddp(fn, *args)


LOCAL = UpdateGroup()

__all__ = ["LOCAL", "UpdateGroup"]
