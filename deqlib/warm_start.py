"""Warm starts: begin each DEQ solve from the equilibrium of a nearby input solved a moment ago.

An attack calls a DEQ again and again on inputs that move by at most a step size; APGD's restarts and target classes,
Square's queries and adversarial training's inner attack do the same. The equilibrium of the previous call is then an
excellent initial state for the next one, per sample, and the adjoint solution of the previous backward pass for the
next adjoint solve. API map:

- :func:`warm_starts` — a ``with`` block in which every DEQ of a model starts its forward (and IFT adjoint) solves
  from a pool of its recent solutions; ``warm_starts(model, enabled=False)`` is THE switch that turns warm starts off
  for everything inside it (the attacks of :mod:`deqlib.attacks` and the inner attacks of PGD-AT / TRADES open their
  own block, on by default);
- :class:`WarmStartPool` — the pool: matches each new input to its nearest stored input (a random projection finds the
  candidate, the full relative distance decides) and hands out that input's equilibrium.

What a warm start changes: only the initial state. The solver still iterates to its tolerance, so for a solver that
converges the result differs from a cold start by at most about the tolerance; the forward value never depends on the
pool otherwise. Not used where the start matters beyond that: ``grad="unroll"`` with autograd on (the gradient is that
of the iterations taken) and :meth:`deqlib.deq.DEQ.solve` (analysis solves see their own trajectory).

Example:
    >>> import torch
    >>> from deqlib.cells import mlp_classifier
    >>> model = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=16).eval()
    >>> x = torch.rand(4, 1, 8, 8)
    >>> with warm_starts(model) as pools:
    ...     _ = model(x)
    ...     _ = model((x + 0.01).clamp(0, 1))  # starts from the first call's equilibria
    >>> pools[0].stats["warm"], pools[0].stats["cold"]
    (4, 4)
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ._modules import deq_modules
from ._validate import check_bool, check_int, check_positive

__all__ = ["WarmStartPool", "warm_starts"]

#: Dimension of the random projection that proposes the nearest stored input.
KEY_DIM = 16


class WarmStartPool:
    """A ring buffer of recent (input, equilibrium, adjoint) rows of one DEQ.

    Args:
        capacity: rows kept; the oldest are overwritten first.
        radius: a stored input is used for a new input u only if ``||u - u_stored|| <= radius * ||u_stored||``
            (relative Euclidean distance of the DEQ's inputs, i.e. of the injections).
    """

    def __init__(self, capacity: int = 4096, radius: float = 0.5) -> None:
        self.capacity = check_int(capacity, "capacity", "WarmStartPool", minimum=1)
        self.radius = check_positive(radius, "radius", "WarmStartPool")
        self.stats: Dict[str, int] = {"warm": 0, "cold": 0, "adjoint_warm": 0, "adjoint_cold": 0}
        self._inputs: Optional[Tensor] = None  # (capacity, d) flattened inputs
        self._keys: Optional[Tensor] = None  # (capacity, KEY_DIM)
        self._states: Optional[Tensor] = None  # (capacity, *state)
        self._adjoints: Optional[Tensor] = None
        self._has_adjoint: Optional[Tensor] = None  # (capacity,) bool
        self._filled = 0
        self._next = 0
        self._projection: Optional[Tensor] = None
        self._last_query: Optional[Tuple[Tensor, Tensor, Tensor]] = None  # (input, flattened, keys) of match()

    def _compatible(self, u: Tensor, state: Tensor) -> bool:
        s = self._states
        return s is not None and s.shape[1:] == state.shape[1:] and s.dtype == state.dtype and s.device == u.device

    def _reset(self, u: Tensor, state: Tensor) -> None:
        flat = u.reshape(len(u), -1)
        gen = torch.Generator().manual_seed(0)
        proj = torch.randn(flat.shape[1], KEY_DIM, generator=gen, dtype=torch.float64)
        self._projection = proj.to(device=u.device, dtype=u.dtype)
        self._inputs = flat.new_zeros(self.capacity, flat.shape[1])
        self._keys = flat.new_zeros(self.capacity, KEY_DIM)
        self._states = state.new_zeros(self.capacity, *state.shape[1:])
        self._adjoints = torch.zeros_like(self._states)
        self._has_adjoint = torch.zeros(self.capacity, dtype=torch.bool, device=u.device)
        self._filled = self._next = 0

    def match(self, u: Tensor) -> Tensor:
        """For each row of u, the slot of its nearest stored input within the radius, else -1. Shape (N,)."""
        n = len(u)
        if self._filled == 0 or self._inputs is None or u.reshape(n, -1).shape[1] != self._inputs.shape[1]:
            return torch.full((n,), -1, dtype=torch.long, device=u.device)
        flat = u.detach().reshape(n, -1).to(self._inputs.dtype)
        keys = flat @ self._projection
        self._last_query = (u, flat, keys)  # store() of the same input reuses them
        stored = self._inputs[: self._filled]
        nearest = torch.cdist(keys, self._keys[: self._filled]).argmin(dim=1)
        near = stored[nearest]
        ok = (flat - near).norm(dim=1) <= self.radius * near.norm(dim=1)
        return torch.where(ok, nearest, -1)

    def initial_state(self, u: Tensor, default: Tensor) -> Tuple[Tensor, Tensor]:
        """``default`` with the stored equilibria in the rows that match; and the matched slots (-1: none)."""
        self._last_query = None
        if not self._compatible(u, default):
            slots = torch.full((len(u),), -1, dtype=torch.long, device=u.device)
        else:
            slots = self.match(u)
        hit = slots >= 0
        n_hit = int(hit.sum())
        self.stats["warm"] += n_hit
        self.stats["cold"] += len(u) - n_hit
        if n_hit == 0:
            return default, slots
        if n_hit == len(u):  # the usual case inside an attack: no mask needed
            return self._states[slots], slots
        z0 = torch.where(hit.view(-1, *([1] * (default.dim() - 1))), self._states[slots.clamp_min(0)], default)
        return z0, slots

    def store(self, u: Tensor, state: Tensor, slots: Tensor) -> Tensor:
        """Keep (u, state) per row: matched rows overwrite their slot, the others take the next free ones.

        Returns:
            The slot of every row (for :meth:`initial_adjoint` / :meth:`store_adjoint` in the backward pass).
        """
        query, self._last_query = self._last_query, None
        if not self._compatible(u, state):
            self._reset(u, state)
            slots, query = torch.full((len(u),), -1, dtype=torch.long, device=u.device), None
        new = (slots < 0).nonzero().flatten()
        if len(new):
            slots = slots.clone()
            slots[new] = (self._next + torch.arange(len(new), device=u.device)) % self.capacity
            self._next = (self._next + len(new)) % self.capacity
            self._filled = min(self.capacity, self._filled + len(new))
            self._has_adjoint[slots[new]] = False
        if query is not None and query[0] is u:
            flat, keys = query[1], query[2]
        else:
            flat = u.detach().reshape(len(u), -1).to(self._inputs.dtype)
            keys = flat @ self._projection
        self._inputs[slots] = flat
        self._keys[slots] = keys
        self._states[slots] = state.detach()
        return slots

    def initial_adjoint(self, slots: Tensor, default: Tensor) -> Tensor:
        """``default`` with the stored adjoint solutions of the rows whose slot holds one."""
        if self._adjoints is None or self._adjoints.shape[1:] != default.shape[1:]:
            return default
        has = self._has_adjoint[slots]
        self.stats["adjoint_warm"] += int(has.sum())
        self.stats["adjoint_cold"] += len(slots) - int(has.sum())
        if not has.any():
            return default
        g0 = default.clone()
        g0[has] = self._adjoints[slots[has]].to(default.dtype)
        return g0

    def store_adjoint(self, slots: Tensor, g: Tensor) -> None:
        """Keep the adjoint solution of every row in its slot."""
        if self._adjoints is not None and self._adjoints.shape[1:] == g.shape[1:]:
            self._adjoints[slots] = g.detach().to(self._adjoints.dtype)
            self._has_adjoint[slots] = True


@contextlib.contextmanager
def warm_starts(
    model: nn.Module, enabled: bool = True, *, capacity: int = 4096, radius: float = 0.5
) -> Iterator[List[WarmStartPool]]:
    """Inside the block, every DEQ of ``model`` starts its solves from a pool of its recent solutions.

    Nested blocks share the outermost pool. ``enabled=False`` turns warm starts off for the whole block, including the
    blocks that attacks and adversarial-training losses open inside it: the one switch for a run without them.

    Args:
        model: a module containing DEQ layers (a model without any is left alone).
        enabled: False: no warm start anywhere inside the block.
        capacity, radius: see :class:`WarmStartPool`.

    Yields:
        The pools in use, one per DEQ (empty when disabled): read ``pool.stats`` for the warm / cold counts.
    """
    check_bool(enabled, "enabled", "warm_starts")
    if not isinstance(model, nn.Module):
        raise TypeError(f"warm_starts: model must be a torch.nn.Module, got {type(model).__name__}")
    deqs = deq_modules(model)
    saved = [(d.warm_start, d.warm_start_allowed) for d in deqs]
    try:
        for d in deqs:
            if not enabled:
                d.warm_start, d.warm_start_allowed = None, False
            elif d.warm_start is None and d.warm_start_allowed:
                d.warm_start = WarmStartPool(capacity, radius)
        yield [d.warm_start for d in deqs if d.warm_start is not None]
    finally:
        for d, (pool, allowed) in zip(deqs, saved):
            d.warm_start, d.warm_start_allowed = pool, allowed
