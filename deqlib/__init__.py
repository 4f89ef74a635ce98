"""deqlib: deep equilibrium models and their adversarial robustness.

The layers, from the bottom up:

- :mod:`deqlib.config` — the fast / full mode switch, device choice, seeding.
- :mod:`deqlib.solvers` — ``fixed_point``, ``anderson``, ``broyden`` with one signature, and a registry.
- :mod:`deqlib.deq` — the :class:`DEQ` layer with implicit (IFT), phantom and unrolled gradients.
- :mod:`deqlib.cells` — MLP and conv cells, the :class:`DEQClassifier` for [0, 1] images.
- :mod:`deqlib.diagnostics` — spectral radius and Jacobian Frobenius norm at the fixed point.
- :mod:`deqlib.data` — embedded ``digits`` / ``mnist5k`` and torchvision data sets.
- :mod:`deqlib.train` — ``fit`` with progress, history, atomic resumable checkpoints; the book's recipes.
- :mod:`deqlib.viz`, :mod:`deqlib.widgets` — figures and ipywidgets explorers (each with a static counterpart).
- :mod:`deqlib.lyapunov` — ICNN, Lyapunov functions and the stable projection.
- :mod:`deqlib.lyadeq` — the Lyapunov-stable DEQ (LyaDEQ, our reconstruction): stable cell, orthogonal head,
  fixed-point collapse, certificate check.
- :mod:`deqlib.attacks` — torchattacks adapters, AutoAttack standard, gradient switch, intermediate-state
  attacks, robust accuracy (imported on first use: it needs torchattacks).
- :mod:`deqlib.evaluate` — robustness reports and gradient-masking checks (imported on first use).
- :mod:`deqlib.losses` — cross-entropy, PGD-AT, TRADES, entropy, random intermediate states.
- :mod:`deqlib.dynamics` — intermediate-state predictions and entropy, early / averaged readouts, input
  entropy reduction and an adaptive attack on it (imported on first use).

Example:
    >>> import torch, deqlib
    >>> deq = deqlib.DEQ(deqlib.MLPCell(16, activation="tanh", norm=False), solver="anderson", tol=1e-6)
    >>> z = deq(torch.randn(4, 16))
    >>> bool(deq.last_info.converged.all())
    True
"""

from . import config, data, diagnostics, losses, lyadeq, lyapunov, solvers
from .cells import (
    ConvCell,
    DEQClassifier,
    MLPCell,
    Normalize,
    classifier_for,
    conv_classifier,
    mlp_classifier,
)
from .config import choose, get_mode, is_fast, seed_everything, select_device, set_mode
from .deq import DEQ
from .diagnostics import jacobian_frobenius, spectral_radius
from .losses import PGDAT, TRADES, RandomDepthClassifier, cross_entropy, entropy, mean_entropy
from .lyadeq import (
    LyaDEQClassifier,
    LyapunovStableCell,
    certificate_check,
    fixed_point_spread,
    lyadeq_classifier,
    orthogonal_head,
    orthogonal_linear,
)
from .lyapunov import ICNN, LyapunovFunction, ReHU, StableDynamics, lyapunov_decrease, stable_projection
from .solvers import (
    SolverDivergenceWarning,
    SolverInfo,
    anderson,
    available_solvers,
    broyden,
    fixed_point,
    get_solver,
    register_solver,
)

__version__ = "0.1.0"

# Imported on first use: attacks / evaluate / dynamics need torchattacks (installed with --no-deps, see README),
# viz needs matplotlib and widgets ipywidgets (the [viz] extra); train is lazy so that `python -m deqlib.train`
# does not import itself twice.
_LAZY_MODULES = ("attacks", "evaluate", "dynamics", "viz", "widgets", "train", "checkpoint")
_LAZY_NAMES = {
    "fit": "train",
    "History": "train",
    "evaluate_accuracy": "train",
    "recipe": "train",
    "train_classifier": "train",
    "CheckpointError": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_model": "checkpoint",
    "load_model_state": "checkpoint",
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'deqlib' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_NAMES))


__all__ = [
    "train",
    "checkpoint",
    "viz",
    "widgets",
    "fit",
    "History",
    "evaluate_accuracy",
    "recipe",
    "train_classifier",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "save_model",
    "load_model_state",
    "attacks",
    "evaluate",
    "dynamics",
    "losses",
    "PGDAT",
    "TRADES",
    "RandomDepthClassifier",
    "cross_entropy",
    "entropy",
    "mean_entropy",
    "config",
    "data",
    "diagnostics",
    "lyapunov",
    "lyadeq",
    "solvers",
    "DEQ",
    "MLPCell",
    "ConvCell",
    "Normalize",
    "DEQClassifier",
    "mlp_classifier",
    "conv_classifier",
    "classifier_for",
    "fixed_point",
    "anderson",
    "broyden",
    "SolverInfo",
    "SolverDivergenceWarning",
    "register_solver",
    "get_solver",
    "available_solvers",
    "spectral_radius",
    "jacobian_frobenius",
    "ReHU",
    "ICNN",
    "LyapunovFunction",
    "stable_projection",
    "StableDynamics",
    "lyapunov_decrease",
    "LyapunovStableCell",
    "LyaDEQClassifier",
    "lyadeq_classifier",
    "orthogonal_linear",
    "orthogonal_head",
    "fixed_point_spread",
    "certificate_check",
    "get_mode",
    "set_mode",
    "is_fast",
    "choose",
    "select_device",
    "seed_everything",
]
