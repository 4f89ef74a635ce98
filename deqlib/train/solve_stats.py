"""Solver statistics of a training run, gathered by an explicit listener on every DEQ of the model.

:class:`SolveStats` is registered with :meth:`deqlib.deq.DEQ.add_solve_listener` on each
:class:`~deqlib.deq.DEQ` inside a model (:meth:`SolveStats.listening`, a context manager that removes the
listeners on exit, whatever happens) and sums the steps of every solve it hears, by tag: "forward" for the
forward solves (all of them: an adversarial loss makes several per batch), "backward" for the adjoint solves of
implicit gradients.

Example:
    >>> import torch
    >>> from deqlib import DEQ, MLPCell
    >>> deq, stats = DEQ(MLPCell(8)), SolveStats()
    >>> with stats.listening(deq):
    ...     _ = deq(torch.randn(3, 8)), deq(torch.randn(2, 8))
    >>> stats.samples["forward"], stats.mean("backward")
    (5, None)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, Optional

from torch import nn

from .._modules import deq_modules
from ..deq import SOLVE_TAGS
from ..solvers import SolverInfo

__all__ = ["SolveStats"]


class SolveStats:
    """Total solver steps and samples per tag over the solves heard since the last :meth:`reset`."""

    def __init__(self) -> None:
        self.steps: Dict[str, float] = {}
        self.samples: Dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Forget everything heard so far."""
        self.steps = {tag: 0.0 for tag in SOLVE_TAGS}
        self.samples = {tag: 0 for tag in SOLVE_TAGS}

    def __call__(self, tag: str, info: SolverInfo) -> None:
        """The listener: add this solve's per-sample steps (``info.steps``, shape (N,)) to ``tag``'s totals."""
        steps = info.steps
        if steps.numel():
            self.steps[tag] += float(steps.sum())
            self.samples[tag] += int(steps.numel())

    def mean(self, tag: str) -> Optional[float]:
        """Mean steps per sample over all the solves of ``tag`` heard (None if there was none)."""
        n = self.samples[tag]
        return self.steps[tag] / n if n else None

    @contextmanager
    def listening(self, model: nn.Module) -> Iterator["SolveStats"]:
        """Listen to every DEQ of ``model`` inside the ``with`` block; the listeners are removed on exit."""
        handles = []
        try:
            for deq in deq_modules(model):
                handles.append(deq.add_solve_listener(self))
            yield self
        finally:
            for handle in handles:
                handle.remove()
