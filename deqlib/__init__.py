"""deqlib: deep equilibrium models and their adversarial robustness.

The top-level namespace holds the core that chapters 1–3 teach; everything else is a module you import by name.

Core (``deqlib.<name>``):

- :mod:`deqlib.config` — the fast / full mode switch, device choice, seeding (``set_mode``, ``choose``, ...).
- :mod:`deqlib.solvers` — ``fixed_point``, ``anderson``, ``broyden`` with one signature, a registry, ``damped_steps``.
- :mod:`deqlib.deq` — the :class:`DEQ` layer with implicit (IFT), phantom and unrolled gradients.
- :mod:`deqlib.cells` — MLP and conv cells, the :class:`DEQClassifier` for [0, 1] images.
- :mod:`deqlib.diagnostics` — spectral radius and Jacobian Frobenius norm at the fixed point.
- :mod:`deqlib.data` — embedded ``digits`` / ``mnist5k`` and torchvision data sets.
- :mod:`deqlib.train` — ``fit`` with progress, history, atomic resumable checkpoints; :mod:`deqlib.checkpoint`.

Imported by name (they need optional packages, or their chapter is not written yet):

- :mod:`deqlib.viz`, :mod:`deqlib.widgets` — figures and ipywidgets explorers (matplotlib, ipywidgets).
- :mod:`deqlib.recipes` — the book's standard training recipes (``python -m deqlib.train`` runs one).
- :mod:`deqlib.threat` — L∞ / L2 balls around [0, 1] images: radii, norms, projection.
- :mod:`deqlib.losses` — cross-entropy, PGD-AT, TRADES, entropy.
- :mod:`deqlib.dynamics` — the solver's iterates as a trajectory: per-state predictions and entropy.
- :mod:`deqlib.state_statistics` — paired tests of the per-state readouts (Yang et al. 2023's finding).
- :mod:`deqlib.sensitivity` — ‖∂z*/∂x‖ by power iteration, residual decay rates, the fold along a segment.
- :mod:`deqlib.attacks` — torchattacks adapters, AutoAttack standard, gradient switch, DEQ-specific attacks.
- :mod:`deqlib.evaluate` — robustness reports and gradient-masking checks.
- :mod:`deqlib.zoo` — the book's trained models by name; :mod:`deqlib.recorded` — the recorded results of
  ``experiments/`` (from a checkout, or downloaded from the book's repository on Colab).
- :mod:`deqlib.lyapunov`, :mod:`deqlib.defenses` — Lyapunov functions; LyaDEQ, early / averaged readouts,
  input entropy reduction, random intermediate states.
- :mod:`deqlib.baselines` — the explicit, weight-untied network of a DEQ's parameter count (chapter 8).

Example:
    >>> import torch, deqlib
    >>> deq = deqlib.DEQ(deqlib.MLPCell(16, activation="tanh", norm=False), solver="anderson", tol=1e-6)
    >>> z = deq(torch.randn(4, 16))
    >>> bool(deq.last_info.converged.all())
    True
"""

from . import checkpoint, config, data, diagnostics, solvers, train
from .cells import (
    ConvCell,
    DEQClassifier,
    MLPCell,
    Normalize,
    classifier_for,
    conv_classifier,
    mlp_classifier,
)
from .checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint, save_model
from .config import choose, get_mode, is_fast, seed_everything, select_device, set_mode
from .deq import DEQ
from .diagnostics import jacobian_frobenius, spectral_radius
from .solvers import (
    SolverConvergenceWarning,
    SolverDivergenceWarning,
    SolverInfo,
    anderson,
    available_solvers,
    broyden,
    damped_steps,
    fixed_point,
    get_solver,
    register_solver,
)
from .train import History, evaluate_accuracy, fit
from .warm_start import WarmStartPool, warm_starts

__version__ = "0.1.0"

__all__ = [
    # modules
    "checkpoint",
    "config",
    "data",
    "diagnostics",
    "solvers",
    "train",
    # the mode switch
    "get_mode",
    "set_mode",
    "is_fast",
    "choose",
    "select_device",
    "seed_everything",
    # solvers
    "fixed_point",
    "anderson",
    "broyden",
    "damped_steps",
    "SolverInfo",
    "SolverDivergenceWarning",
    "SolverConvergenceWarning",
    "register_solver",
    "get_solver",
    "available_solvers",
    # the layer and its cells
    "DEQ",
    "warm_starts",
    "WarmStartPool",
    "MLPCell",
    "ConvCell",
    "Normalize",
    "DEQClassifier",
    "mlp_classifier",
    "conv_classifier",
    "classifier_for",
    "spectral_radius",
    "jacobian_frobenius",
    # training and checkpoints
    "fit",
    "History",
    "evaluate_accuracy",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "save_model",
    "load_model_state",
]
