"""The per-epoch record of a training run: :class:`History`, a plain ``dict`` of lists."""

from __future__ import annotations

from collections.abc import Iterable as _Iterable
from typing import Any, Dict, Iterable, List, Mapping

__all__ = ["History"]


class History(dict):
    """Per-epoch training records: a ``dict`` mapping each metric to a list with one entry per epoch.

    Keys: ``epoch`` (1-based), ``train_loss``, ``train_acc`` (``None`` where the loss returned no logits),
    ``val_acc`` (only with validation data), ``solver_steps``, ``backward_steps``, ``solver_nonconverged``,
    ``backward_nonconverged``, ``lr`` (learning rate of the epoch's last step) and ``seconds``. Metrics are also
    readable as attributes (``history.train_loss``).

    ``solver_steps`` is the mean number of solver steps per sample over ALL the forward solves of the epoch's
    training batches, in every :class:`~deqlib.deq.DEQ` of the model: fit registers a solve listener
    (:meth:`~deqlib.deq.DEQ.add_solve_listener`) on each of them, so a loss that calls the model several times
    per batch (an adversarial loss: k attack steps, then the training forward) has all of its solves counted,
    each sample of each solve once. ``backward_steps`` is the same for the adjoint solves of implicit (IFT)
    gradients, those of the attack's input gradients included. Either is ``None`` when the epoch made no such
    solve (no DEQ; a phantom or unrolled gradient has no adjoint solve). The validation pass is not counted.

    ``solver_nonconverged`` / ``backward_nonconverged`` are the fractions of those same samples (every sample of
    every forward solve of ``deq(x)``, resp. of every adjoint solve, of the epoch's training batches) that did not
    reach the solver's tolerance within its budget (diverged ones included); ``None`` as above. They are counted
    from each DEQ's ``convergence`` (:func:`deqlib.diagnostics.convergence_report`), which leaves out the analysis
    ``DEQ.solve``. A nonzero fraction also gives one :class:`~deqlib.solvers.SolverConvergenceWarning` per epoch.

    It is a plain dict of lists of numbers, so ``json.dumps(history)`` works and ``history.to_dict()`` goes into a
    checkpoint that loads with ``weights_only=True``.

    Example:
        >>> h = History()
        >>> h.append({"epoch": 1, "train_loss": 0.5})
        >>> h.train_loss, h.last()
        ([0.5], {'epoch': 1, 'train_loss': 0.5})
    """

    def __getattr__(self, name: str) -> List[Any]:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"History has no metric {name!r}; it has {sorted(self)}") from None

    @property
    def num_epochs(self) -> int:
        """Number of epochs recorded."""
        return len(self.get("epoch", []))

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one epoch's record (a dict metric -> value).

        Raises:
            TypeError: ``record`` is not a mapping of metric names to values.
        """
        if not isinstance(record, Mapping):
            raise TypeError(f"History.append: record must be a dict metric -> value, got {type(record).__name__}")
        n = self.num_epochs
        for key, value in record.items():
            self.setdefault(key, [None] * n).append(value)
        for key, values in self.items():
            if len(values) < n + 1:
                values.append(None)

    def last(self) -> Dict[str, Any]:
        """The last epoch's record as a dict (empty if nothing was recorded)."""
        return {key: values[-1] for key, values in self.items() if values}

    def records(self) -> List[Dict[str, Any]]:
        """One dict per epoch."""
        return [{key: values[i] for key, values in self.items()} for i in range(self.num_epochs)]

    def to_dict(self) -> Dict[str, List[Any]]:
        """A plain ``dict`` of lists (for checkpoints and JSON)."""
        return {key: list(values) for key, values in self.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Iterable[Any]]) -> "History":
        """Rebuild from :meth:`to_dict`'s output.

        Raises:
            TypeError: ``data`` is not a mapping of metric names to lists.
            ValueError: the lists have different lengths (one entry per epoch for every metric).
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"History.from_dict: data must be a dict metric -> list, got {type(data).__name__}")
        out = {}
        for key, values in data.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, _Iterable):
                raise TypeError(
                    f"History.from_dict: metric {key!r} must be a list (one entry per epoch), got {type(values).__name__}"
                )
            out[str(key)] = list(values)
        lengths = {key: len(values) for key, values in out.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"History.from_dict: every metric needs one entry per epoch, got lengths {lengths}")
        return cls(out)

    def __repr__(self) -> str:
        return f"History({dict.__repr__(self)})"
