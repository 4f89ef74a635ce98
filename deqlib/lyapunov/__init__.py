"""Lyapunov functions, input-convex networks and the stable projection behind LyaDEQ (Manek & Kolter, NeurIPS 2019).

Taught in chapter 6 (not yet written). Import the names from here (the code is in :mod:`~deqlib.lyapunov.functions` and
:mod:`~deqlib.lyapunov.stability`). The building blocks of :mod:`deqlib.defenses.lyadeq`, written from Manek &
Kolter's "Learning Stable Deep Dynamics Models" (paper and public code; our own code). What follows them and what is
ours (the ``center`` argument, :class:`StableDynamics`, :func:`lyapunov_decrease`, default activation, initialisation
and the clamp in the projection): ``experiments/results/lyadeq_reconstruction.md``.

API:
    * :class:`ReHU` — the rectified Huber unit ``0`` (s <= 0), ``s**2 / (2 d)`` (0 < s <= d), ``s - d/2`` (s > d).
    * :class:`ICNN` — the input-convex network ``z_1 = σ(W_0 z + b_0)``, ``z_{i+1} = σ(W_i z + b_i + U_i z_i)``,
      ``U_i = softplus(free) >= 0``, ``σ`` convex and non-decreasing.
    * :class:`LyapunovFunction` — ``V(z) = ReHU_d(g(z) - g(c)) + eps * ||z - c||**2`` (Manek & Kolter's defaults
      ``d = 1``, ``eps = 0.01``, centre ``c = 0``): convex, ``V(c) = 0`` and ``V(z) > 0`` elsewhere.
    * :func:`stable_projection` — ``F̂ = F - ∇V · ReLU(∇Vᵀ F + α V) / ||∇V||²``, so that ``dV/dt = ∇Vᵀ F̂ <= -α V``
      along ``ż = F̂`` and ``F`` is unchanged wherever it already decreases ``V`` fast enough.
    * :class:`StableDynamics` — any nominal dynamics ``F(z, x)`` made stable by that projection.
    * :func:`lyapunov_decrease` — the discrete-time certificate check ``V(z_{k+1}) <= (1 - α·dt) V(z_k)``.

Everything works per sample: a batch ``(N, *state)`` is flattened to ``(N, n)`` and every norm, inner product
and correction is taken row by row, so a sample's result never depends on the other samples in its batch.

Example:
    >>> import torch
    >>> from deqlib.lyapunov import LyapunovFunction, StableDynamics
    >>> V = LyapunovFunction(2, hidden=(16, 16))
    >>> nominal = lambda z, x: z + x          # an unstable nominal dynamics
    >>> stable = StableDynamics(nominal, V, alpha=0.1)
    >>> z, x = torch.randn(5, 2), torch.randn(5, 2)
    >>> Fhat = stable(z, x)                   # (5, 2), and ∇V(z)ᵀ Fhat <= -0.1 V(z) per sample
"""

from .functions import ACTIVATIONS, ICNN, LyapunovFunction, ReHU
from .stability import StableDynamics, lyapunov_decrease, stable_projection

__all__ = [
    "ACTIVATIONS",
    "ReHU",
    "ICNN",
    "LyapunovFunction",
    "stable_projection",
    "StableDynamics",
    "lyapunov_decrease",
]
