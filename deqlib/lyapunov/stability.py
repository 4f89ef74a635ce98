"""The stable projection of a dynamics, and the discrete-time check of the exponential decrease it certifies.

Part of :mod:`deqlib.lyapunov` (import the names from there). API: :func:`stable_projection`,
:class:`StableDynamics`, :func:`lyapunov_decrease`.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .._validate import check_callable, check_nonnegative, check_positive, check_tensor
from .functions import LyapunovFunction

__all__ = ["stable_projection", "StableDynamics", "lyapunov_decrease"]


def stable_projection(F: Tensor, V: Tensor, grad_V: Tensor, alpha: float) -> Tensor:
    """Project dynamics onto the set where ``V`` decreases exponentially, per sample (Manek & Kolter).

    ``F̂ = F - ∇V · ReLU(∇Vᵀ F + α V) / ||∇V||²``, with the inner product and norm taken per sample over all
    state entries. Then ``∇Vᵀ F̂ = min(∇Vᵀ F, -α V) <= -α V``: samples whose ``F`` already decreases ``V`` at rate
    ``α`` are left exactly unchanged; the others lose just the component along ``∇V`` needed to reach
    ``-α V``.

    Guard: ``||∇V||²`` is clamped below by the smallest normal number of the dtype (``torch.finfo(dtype).tiny``).
    For our positive-definite ``V`` the gradient vanishes only at the centre, where ``V = 0`` and ``∇V = 0`` make
    the numerator ``0``, so the correction is ``0`` there and no NaN appears; away from it the clamp never acts.

    Args:
        F: nominal dynamics, ``(N, *state)``.
        V: Lyapunov function values, ``(N,)``.
        grad_V: ``∇_z V``, same shape as ``F``.
        alpha: decay rate, > 0.

    Returns:
        ``F̂``, same shape as ``F``; differentiable in all inputs.

    Raises:
        TypeError: a non-tensor or non-floating-point input, or ``alpha`` not a number.
        ValueError: mismatched shapes, a missing batch dimension or ``alpha <= 0``.
    """
    where = "stable_projection"
    alpha = check_positive(alpha, "alpha", where)
    check_tensor(F, "F", where, floating=True, min_dim=2)
    check_tensor(V, "V", where, floating=True)
    check_tensor(grad_V, "grad_V", where, floating=True)
    if grad_V.shape != F.shape:
        raise ValueError(f"{where}: grad_V must have the shape of F {tuple(F.shape)}, got {tuple(grad_V.shape)}")
    n = F.shape[0]
    if V.shape != (n,):
        raise ValueError(f"{where}: V must have shape (N,) = ({n},), got {tuple(V.shape)}")
    f = F.reshape(n, -1)
    g = grad_V.reshape(n, -1)
    dot = (g * f).sum(dim=1)
    sq = (g * g).sum(dim=1).clamp_min(torch.finfo(g.dtype).tiny)
    coef = torch.relu(dot + alpha * V) / sq
    return F - coef.reshape((n,) + (1,) * (F.dim() - 1)) * grad_V


class StableDynamics(nn.Module):
    """Any nominal dynamics ``F(z, x)`` made Lyapunov stable by :func:`stable_projection`.

    ``forward(z, x, center)`` returns ``F̂(z, x) = F(z, x) - ∇V(z) · ReLU(∇V(z)ᵀ F(z, x) + α V(z)) / ||∇V(z)||²``
    per sample, with ``V`` centred on ``center`` (``0`` by default). Along ``ż = F̂``, ``dV/dt <= -α V``.

    * With gradients on, ``∇V`` is taken with ``create_graph=True``, so a loss on ``F̂`` trains the nominal
      dynamics AND the Lyapunov function, and ``F̂`` is differentiable w.r.t. ``z`` (an attacker's or an implicit
      backward pass's view).
    * Under ``torch.no_grad()`` (solvers, evaluation), ``∇V`` is computed under a local ``torch.enable_grad()`` on a
      detached copy of ``z`` and the result carries no graph.

    Args:
        dynamics: a module or callable ``F(z, x) -> dz`` with ``dz`` of ``z``'s shape; called as ``F(z)`` when
            ``x`` is ``None``.
        lyapunov: a :class:`LyapunovFunction` (anything with its ``gradient(z, center, create_graph)``).
        alpha: decay rate, > 0 (default 0.01, Manek & Kolter's default).

    Example:
        >>> V = LyapunovFunction(2, hidden=(8,))
        >>> sd = StableDynamics(lambda z, x: z + x, V, alpha=0.5)
        >>> with torch.no_grad():
        ...     out = sd(torch.randn(3, 2), torch.randn(3, 2))
        >>> out.shape
        torch.Size([3, 2])
    """

    def __init__(self, dynamics: Callable[..., Tensor], lyapunov: LyapunovFunction, alpha: float = 0.01) -> None:
        super().__init__()
        where = "StableDynamics"
        self.dynamics = check_callable(dynamics, "dynamics", where, "as F(z, x) or F(z)")
        check_callable(
            getattr(lyapunov, "gradient", None), "lyapunov.gradient", where, "as gradient(z, center, create_graph)"
        )
        self.alpha = check_positive(alpha, "alpha", where)
        self.lyapunov = lyapunov

    def forward(self, z: Tensor, x: Optional[Tensor] = None, center: Optional[Tensor] = None) -> Tensor:
        v, dv = self.lyapunov.gradient(z, center, create_graph=torch.is_grad_enabled())
        f = self.dynamics(z) if x is None else self.dynamics(z, x)
        if not isinstance(f, Tensor) or f.shape != z.shape:
            raise ValueError(
                f"StableDynamics: dynamics must return a tensor of z's shape {tuple(z.shape)}, "
                f"got {tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__}"
            )
        return stable_projection(f, v, dv, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def _trajectory_states(trajectory: Union[Tensor, Sequence[Tensor]], where: str) -> list:
    """The states z_0 .. z_K of a trajectory (a stacked tensor or a sequence), checked: K >= 1, one shape, a batch."""
    if isinstance(trajectory, Tensor):
        if trajectory.dim() < 3:
            raise ValueError(
                f"{where}: a stacked trajectory must have shape (K+1, N, *state), got {tuple(trajectory.shape)}"
            )
        states = list(trajectory.unbind(0))
    else:
        states = list(trajectory)
    if len(states) < 2:
        raise ValueError(f"{where}: a trajectory needs at least two states z_0, z_1; got {len(states)}")
    first = check_tensor(states[0], "trajectory[0]", where, min_dim=2)
    for k, s in enumerate(states):
        check_tensor(s, f"trajectory[{k}]", where)
        if s.shape != first.shape:
            raise ValueError(f"{where}: trajectory[{k}] has shape {tuple(s.shape)}, expected {tuple(first.shape)}")
    return states


def _values_along(V_fn: Callable[[Tensor], Tensor], states: list, where: str) -> Tensor:
    """``V_fn`` on each state, in order, without a graph: (K+1, N) in float64."""
    n = states[0].shape[0]
    values = []
    with torch.no_grad():
        for k, s in enumerate(states):
            v = V_fn(s)
            if not isinstance(v, Tensor) or v.shape != (n,):
                got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                raise ValueError(f"{where}: V_fn must return shape (N,) = ({n},), got {got} at state {k}")
            values.append(v.detach().to(torch.float64))
    return torch.stack(values)


# size: most of it is the docstring (the tolerance rules and the report's fields)
def lyapunov_decrease(
    V_fn: Callable[[Tensor], Tensor],
    trajectory: Union[Tensor, Sequence[Tensor]],
    alpha: float,
    dt: float = 1.0,
    *,
    rtol: float = 1e-6,
    atol: float = 0.0,
) -> dict:
    """Check exponential decrease ``V(z_{k+1}) <= (1 - α·dt) V(z_k)`` along a discrete-time trajectory.

    The certificate check: the fraction of (step, sample) pairs where ``V`` does not shrink by the factor
    ``1 - α·dt``. For a fixed-point iteration ``dt = 1``; for a forward-Euler discretisation of ``ż = F̂`` with
    step ``dt`` this is the first-order version of ``dV/dt <= -α V``. (The exact flow only guarantees the factor
    ``exp(-α·dt) >= 1 - α·dt``, so the check is slightly stricter than continuous time, by ``O((α·dt)²)``.
    And an Euler step of the projected field itself adds an ``O(dt²)`` error against an ``O(dt)`` margin, so a
    rollout with a large ``dt`` can violate the check even though ``dV/dt <= -α V`` holds everywhere.)

    Tolerance: a step violates when ``V(z_{k+1}) - (1 - α·dt) V(z_k) > rtol·|V(z_k)| + atol``. The default
    relative tolerance ``rtol = 1e-6`` absorbs float rounding in ``V`` (about 10 float32 ulps); ``atol = 0`` by
    default, so a trajectory that has converged to a noise floor (``V`` around 1e-12 and no longer decreasing)
    is counted as violating: pass ``atol`` at that floor when steps at convergence should pass. A NaN or inf
    value of ``V`` counts as a violation. ``V`` is evaluated under ``torch.no_grad()``, in float64 for the
    comparison.

    Args:
        V_fn: any callable ``(N, *state) -> (N,)``, e.g. a :class:`LyapunovFunction` or
            ``lambda z: V(z, center=c)``.
        trajectory: states ``z_0 .. z_K`` as a tensor ``(K+1, N, *state)`` or a sequence of ``(N, *state)``
            tensors, ``K >= 1``.
        alpha: decay rate, > 0, with ``alpha * dt <= 1``.
        dt: time step, > 0 (default 1.0).
        rtol, atol: non-negative tolerances (above).

    Returns:
        ``{"violations": int, "steps": int, "rate": float, "max_excess": float, "per_step": list[int]}``:
        ``steps = K·N`` (step, sample) pairs, ``rate = violations / steps``, ``max_excess`` the largest
        ``V(z_{k+1}) - (1 - α·dt) V(z_k)`` (negative: every step decreased with that margin to spare), and
        ``per_step[k]`` the number of samples violating at step ``k -> k+1``.

    Example:
        >>> V = lambda z: (z ** 2).sum(dim=1)
        >>> traj = [torch.ones(2, 3) * 0.5 ** k for k in range(4)]   # V shrinks by 4 each step
        >>> lyapunov_decrease(V, traj, alpha=0.5)["violations"]
        0
    """
    where = "lyapunov_decrease"
    alpha = check_positive(alpha, "alpha", where)
    dt = check_positive(dt, "dt", where)
    factor = 1.0 - alpha * dt
    if factor < 0:
        raise ValueError(
            f"{where}: alpha * dt must be <= 1 (got {alpha * dt}): the bound (1 - alpha*dt) V would be negative"
        )
    rtol = check_nonnegative(rtol, "rtol", where)
    atol = check_nonnegative(atol, "atol", where)
    vals = _values_along(V_fn, _trajectory_states(trajectory, where), where)  # (K+1, N)
    prev, nxt = vals[:-1], vals[1:]
    excess = nxt - factor * prev
    ok = excess <= rtol * prev.abs() + atol  # False for NaN, so NaN counts as a violation
    violated = ~ok
    violations = int(violated.sum())
    steps = int(violated.numel())
    return {
        "violations": violations,
        "steps": steps,
        "rate": violations / steps if steps else 0.0,
        "max_excess": float(excess.max()) if steps else float("nan"),
        "per_step": [int(c) for c in violated.sum(dim=1)],
    }
