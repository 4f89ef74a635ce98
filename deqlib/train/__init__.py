"""Training: :func:`fit` with a progress bar, a history, atomic checkpoints and exact resume.

:func:`fit` trains any ``nn.Module`` with a pluggable loss ``loss_fn(model, x, y)`` (clean cross-entropy by
default; adversarial-training losses that call the model several times per batch plug in the same way).
It records, per epoch, the loss, the accuracy, the mean number of solver steps per sample over every solve of
every DEQ inside the model (forward and, with implicit gradients, backward), the share of those samples that did
not converge, the learning rate and the time.

API map:

- :func:`fit` (``loop.py``) — the training loop; its settings are a validated :class:`FitSettings`
  (``settings.py``), given as keyword arguments or as ``settings=FitSettings(...)``. :data:`OPTIMIZERS`,
  :data:`SCHEDULERS`: the names it accepts.
- :class:`History` (``history.py``) — the per-epoch records, a plain dict of lists.
- :func:`evaluate_accuracy` (``accuracy.py``) — clean accuracy on a data set.
- ``solve_stats.SolveStats`` — the solve listener behind ``solver_steps`` / ``backward_steps``;
  :func:`deqlib.diagnostics.convergence_report` is behind ``solver_nonconverged`` / ``backward_nonconverged``.
- :mod:`deqlib.train.distributed` — data-parallel training under torchrun (DistributedDataParallel, every
  process's share of the single-process global batches, process 0 checkpoints and logs, resume); :func:`fit`
  uses it by itself inside a process group of several processes.
- ``python -m deqlib.train`` (``__main__.py``) trains the book's standard classifier
  (:func:`deqlib.recipes.train_classifier`).

Example:
    >>> from deqlib import data, cells, train
    >>> ds = data.load("digits", "train")
    >>> model = cells.classifier_for(ds, "mlp", width=32)
    >>> history = train.fit(model, ds, epochs=2, lr=3e-3, progress=False)
    >>> history["epoch"], sorted(history)
    ([1, 2], ['backward_nonconverged', 'backward_steps', 'epoch', 'lr', 'seconds', 'solver_nonconverged',
              'solver_steps', 'train_acc', 'train_loss'])
"""

from . import distributed  # noqa: F401  (deqlib.train.distributed, documented on its own)
from .accuracy import evaluate_accuracy
from .history import History
from .loop import fit
from .settings import OPTIMIZERS, SCHEDULERS, FitSettings

__all__ = ["fit", "FitSettings", "History", "evaluate_accuracy", "OPTIMIZERS", "SCHEDULERS"]
