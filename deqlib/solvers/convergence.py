"""Non-convergence made visible: :class:`SolverConvergenceWarning`, :func:`quiet_convergence`, running counts.

A solve that stops at ``max_iter`` returns its best iterate, an approximate fixed point (and, in the adjoint of an
implicit gradient, an approximate gradient). The solvers report it per sample (``SolverInfo.converged``); a
:class:`~deqlib.deq.DEQ`, which hides that report behind its output, also says it:

* one :class:`SolverConvergenceWarning` per forward or adjoint solve in which some samples did not converge
  (``DEQ forward solve: 3/8 samples did not converge (anderson, max_iter 30, tol 0.0001 rel; worst rel. residual
  0.0021)``). It is an ordinary warning: ``warnings.simplefilter("error", SolverConvergenceWarning)`` turns it into
  an error, ``"ignore"`` silences it. :class:`~deqlib.solvers.SolverDivergenceWarning` (samples that blew up, which
  the solvers themselves emit) is a subclass: a filter on this class covers both.
* running counts on every DEQ, ``deq.convergence`` (a :class:`ConvergenceCounts`): samples solved and samples not
  converged, forward and adjoint, since the DEQ was built or last ``reset()``.
* :func:`quiet_convergence`, a context manager for loops that would warn thousands of times (attacks,
  evaluations, training): inside it neither warning is emitted, the counts still accumulate, and the loop reports
  the fractions instead (:func:`deqlib.diagnostics.convergence_report` sums them over a model).

Example:
    >>> import torch, warnings
    >>> from deqlib import DEQ, MLPCell
    >>> deq = DEQ(MLPCell(8), max_iter=2, tol=1e-12)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = deq(torch.randn(3, 8))
    >>> [w.category.__name__ for w in caught], deq.convergence.fractions()
    (['SolverConvergenceWarning'], {'forward': 1.0, 'backward': None})
    >>> with quiet_convergence():
    ...     _ = deq(torch.randn(5, 8))  # no warning, still counted
    >>> deq.convergence.forward_samples, deq.convergence.forward_nonconverged
    (8, 8)
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

from torch.utils.hooks import RemovableHandle

__all__ = [
    "SolverConvergenceWarning",
    "quiet_convergence",
    "convergence_warnings_quiet",
    "ConvergenceCounts",
    "warn_not_converged",
    "warn_counts",
]


class SolverConvergenceWarning(RuntimeWarning):
    """Some samples of a solve did not reach the tolerance: the returned state (or gradient) is approximate."""


# A plain module-level depth, not a context variable: the adjoint solves of implicit gradients run in autograd's
# threads (on a GPU), which must see the setting of the thread that called ``backward()``.
_QUIET = [0]


@contextmanager
def quiet_convergence() -> Iterator[None]:
    """Inside the block, no :class:`SolverConvergenceWarning` (nor divergence warning) is emitted; counts go on.

    Re-entrant. For code that solves many times and reports the non-converged fractions itself: an attack's
    iterations, an evaluation over many batches, a training epoch (:func:`deqlib.train.fit` records them in its
    History and warns once per epoch).
    """
    _QUIET[0] += 1
    try:
        yield
    finally:
        _QUIET[0] -= 1


def convergence_warnings_quiet() -> bool:
    """Whether a :func:`quiet_convergence` block is active (then no convergence or divergence warning is emitted)."""
    return _QUIET[0] > 0


def _worst(info: Any, mask: Any) -> Optional[float]:
    values = [v for v in info.residual[mask].tolist() if math.isfinite(v)]
    return max(values) if values else None


def warn_not_converged(
    where: str, info: Any, *, solver: str, max_iter: Optional[int] = None, stacklevel: int = 2
) -> bool:
    """Emit one :class:`SolverConvergenceWarning` if some samples of ``info`` did not converge; return whether.

    Nothing is emitted inside :func:`quiet_convergence` (the return value still says whether samples failed).
    """
    failed = ~info.converged
    n_failed, n = int(failed.sum()), int(info.converged.numel())
    if n_failed == 0:
        return False
    if convergence_warnings_quiet():
        return True
    kind = "rel." if info.stop_mode == "rel" else "abs."
    worst = _worst(info, failed)
    n_div = int((info.diverged & failed).sum())
    budget = f", max_iter {max_iter}" if max_iter is not None else ""
    warnings.warn(
        f"{where}: {n_failed}/{n} samples did not converge ({solver}{budget}, tol {info.tol:g} {info.stop_mode}; "
        f"worst {kind} residual {'non-finite' if worst is None else format(worst, '.3g')}"
        + (f"; {n_div} diverged" if n_div else "")
        + "). The result is approximate: raise max_iter, or see deq.convergence.",
        SolverConvergenceWarning,
        stacklevel=stacklevel + 1,
    )
    return True


def warn_counts(where: str, counts: "ConvergenceCounts", *, note: str = "", stacklevel: int = 2) -> bool:
    """One :class:`SolverConvergenceWarning` summing up many solves (``counts``), if some samples did not converge.

    For a loop run inside :func:`quiet_convergence` (an epoch, an evaluation): call it after the block. Nothing is
    emitted inside an enclosing quiet block. Returns whether some samples did not converge.
    """
    parts = []
    for tag, label in (("forward", "forward"), ("backward", "adjoint")):
        n, k = getattr(counts, f"{tag}_samples"), getattr(counts, f"{tag}_nonconverged")
        if k:
            parts.append(f"{k}/{n} samples ({k / n:.2%}) of the {label} solves")
    if not parts:
        return False
    if not convergence_warnings_quiet():
        warnings.warn(
            f"{where}: {' and '.join(parts)} did not converge{note}",
            SolverConvergenceWarning,
            stacklevel=stacklevel + 1,
        )
    return True


class ConvergenceCounts:
    """Running counts of solved and non-converged samples, forward and adjoint (``deq.convergence``).

    Attributes:
        forward_samples, forward_nonconverged: samples of the forward solves (``deq(x)``), and how many of them
            did not reach the tolerance (diverged ones included). ``DEQ.solve`` (analysis, often truncated on
            purpose) is not counted.
        backward_samples, backward_nonconverged: the same for the adjoint solves of implicit (IFT) gradients.
        forward_solves, backward_solves: number of solve calls.

    Other counts can be attached (:meth:`attach`): every solve added here is added to them too, which is how
    :func:`deqlib.diagnostics.convergence_report` sums a model's DEQs over a block of code.
    """

    def __init__(self) -> None:
        self._sinks: "OrderedDict[int, ConvergenceCounts]" = OrderedDict()
        self.reset()

    def reset(self) -> None:
        """Set every count to zero (attached counts are kept attached, and not reset)."""
        self.forward_samples = self.forward_nonconverged = self.forward_solves = 0
        self.backward_samples = self.backward_nonconverged = self.backward_solves = 0

    def add(self, tag: str, info: Any) -> None:
        """Count one solve: ``tag`` "forward" or "backward", ``info`` its :class:`~deqlib.solvers.SolverInfo`."""
        if tag not in ("forward", "backward"):
            raise ValueError(f"ConvergenceCounts.add: tag must be 'forward' or 'backward', got {tag!r}")
        n, failed = int(info.converged.numel()), int((~info.converged).sum())
        setattr(self, f"{tag}_samples", getattr(self, f"{tag}_samples") + n)
        setattr(self, f"{tag}_nonconverged", getattr(self, f"{tag}_nonconverged") + failed)
        setattr(self, f"{tag}_solves", getattr(self, f"{tag}_solves") + 1)
        for sink in list(self._sinks.values()):
            sink.add(tag, info)

    def __call__(self, tag: str, info: Any) -> None:
        """The counts as a solve listener (:meth:`deqlib.deq.DEQ.add_solve_listener`)."""
        self.add(tag, info)

    def attach(self, other: "ConvergenceCounts") -> RemovableHandle:
        """Add every later solve to ``other`` too, until the returned handle's ``remove()``."""
        if not isinstance(other, ConvergenceCounts):
            raise TypeError(f"ConvergenceCounts.attach: expected ConvergenceCounts, got {type(other).__name__}")
        handle = RemovableHandle(self._sinks)
        self._sinks[handle.id] = other
        return handle

    def fractions(self) -> Dict[str, Optional[float]]:
        """``{"forward": share not converged, "backward": ...}``, ``None`` where no sample was solved."""
        return {
            tag: (getattr(self, f"{tag}_nonconverged") / n if (n := getattr(self, f"{tag}_samples")) else None)
            for tag in ("forward", "backward")
        }

    def as_dict(self) -> Dict[str, Any]:
        """The fractions and the counts, JSON-ready."""
        frac = self.fractions()
        return {
            "forward_nonconverged_fraction": frac["forward"],
            "backward_nonconverged_fraction": frac["backward"],
            "forward_solves": self.forward_solves,
            "backward_solves": self.backward_solves,
            "forward_samples": self.forward_samples,
            "forward_nonconverged": self.forward_nonconverged,
            "backward_samples": self.backward_samples,
            "backward_nonconverged": self.backward_nonconverged,
        }

    def __getstate__(self) -> Dict[str, Any]:
        # Copies (copy.deepcopy of a model, pickling) keep the counts, not the attachments of the original.
        state = dict(self.__dict__)
        state["_sinks"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        f = self.fractions()
        show = {k: (None if v is None else round(v, 4)) for k, v in f.items()}
        return (
            f"ConvergenceCounts(forward {self.forward_nonconverged}/{self.forward_samples}, backward "
            f"{self.backward_nonconverged}/{self.backward_samples} not converged; fractions {show})"
        )
