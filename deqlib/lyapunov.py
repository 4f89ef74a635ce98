"""Lyapunov functions, input-convex networks and the stable projection behind LyaDEQ.

The building blocks of a Lyapunov-stable deep equilibrium model (LyaDEQ; Chu, Wei, Liu, Zhao,
"Learning Robust Deep Equilibrium Models" / "Lyapunov-Stable Deep Equilibrium Models", arXiv 2304.12707,
AAAI 2024), written from the description of the method that LyaDEQ rests on:
Manek & Kolter, "Learning Stable Deep Dynamics Models" (NeurIPS 2019).

What follows Manek & Kolter (confirmed from their paper and public code; our own code here):

* :class:`ReHU`, the rectified Huber unit ``0`` (s <= 0), ``s**2 / (2 d)`` (0 < s <= d), ``s - d/2`` (s > d).
* :class:`ICNN`, the input-convex network ``z_1 = σ(W_0 z + b_0)``, ``z_{i+1} = σ(W_i z + b_i + U_i z_i)``
  with ``U_i >= 0`` written as ``softplus`` of a free parameter, ``σ`` convex and non-decreasing.
* :class:`LyapunovFunction`, ``V(z) = ReHU_d(g(z) - g(0)) + eps * ||z||**2`` with their defaults
  ``d = 1``, ``eps = 0.01``: convex, ``V(0) = 0`` and ``V(z) > 0`` elsewhere.
* :func:`stable_projection`, ``F̂ = F - ∇V · ReLU(∇Vᵀ F + α V) / ||∇V||²``, which makes
  ``dV/dt = ∇Vᵀ F̂ <= -α V`` along ``ż = F̂`` (global exponential stability of V's minimum) and leaves ``F``
  unchanged wherever it already decreases ``V`` fast enough. Their default ``α = 0.01``.

What is our reconstruction, NOT taken from the LyaDEQ paper (whose full text, exact architecture,
hyperparameters and code are not available to us; see ``PAPERS.md`` §2):

* the optional ``center`` argument of :class:`LyapunovFunction` / :class:`StableDynamics`, so that a model can
  centre ``V`` on an input-dependent quantity: with a single minimum the projected system has ONE equilibrium,
  the same for every input, and the fixed points of a DEQ would collapse together;
* :class:`StableDynamics`, a wrapper that projects any nominal dynamics ``F(z, x)``, and how it gets ``∇V``
  under ``torch.no_grad()``;
* :func:`lyapunov_decrease`, the discrete-time certificate check
  ``V(z_{k+1}) <= (1 - α·dt) V(z_k)`` along a trajectory, with its tolerance;
* the choices of default activation (``softplus``), of initialisation and of the tiny clamp in the projection.

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

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

__all__ = [
    "ReHU",
    "ICNN",
    "LyapunovFunction",
    "stable_projection",
    "StableDynamics",
    "lyapunov_decrease",
]


def _check_positive(name: str, value: float) -> float:
    """Return ``float(value)``, raising ``ValueError`` unless it is finite and > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _flatten_batch(z: Tensor, name: str = "z") -> Tensor:
    """``(N, *state) -> (N, n)``; a batch dimension is required."""
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if z.dim() < 2:
        raise ValueError(
            f"{name} must have a batch dimension and at least one state dimension, shape (N, *state); "
            f"got shape {tuple(z.shape)}"
        )
    return z.reshape(z.shape[0], -1)


class ReHU(nn.Module):
    """Rectified Huber unit: ``0`` for s <= 0, ``s²/(2d)`` for 0 < s <= d, ``s - d/2`` for s > d.

    Continuously differentiable (the derivative is ``0``, ``s/d``, ``1`` on the three pieces), convex and
    non-decreasing; applied elementwise. Manek & Kolter use it to turn ``g(z) - g(0)`` into a non-negative
    function that is quadratic, hence smooth, near its minimum.

    Args:
        d: width of the quadratic piece, > 0 (default 1.0).

    Raises:
        ValueError: if ``d`` is not a finite number > 0.

    Example:
        >>> ReHU(d=1.0)(torch.tensor([-1.0, 0.5, 2.0]))
        tensor([0.0000, 0.1250, 1.5000])
    """

    def __init__(self, d: float = 1.0) -> None:
        super().__init__()
        self.d = _check_positive("d", d)

    def forward(self, s: Tensor) -> Tensor:
        d = self.d
        # torch.where rather than clamps: the gradient at s = d is exactly 1 and at s = 0 exactly 0.
        quadratic = s * s / (2.0 * d)
        linear = s - d / 2.0
        return torch.where(s <= 0, torch.zeros_like(s), torch.where(s <= d, quadratic, linear))

    def extra_repr(self) -> str:
        return f"d={self.d}"


def _make_activation(activation: Union[str, nn.Module, Callable[[Tensor], Tensor]]) -> nn.Module:
    if isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, str):
        key = activation.strip().lower()
        if key == "softplus":
            return _Softplus()
        if key == "rehu":
            return ReHU(1.0)
        if key == "relu":
            return nn.ReLU()
        raise ValueError(f"unknown activation {activation!r}: expected 'softplus', 'rehu', 'relu' or a module")
    if callable(activation):
        return _Lambda(activation)
    raise ValueError(f"activation must be a name, an nn.Module or a callable, got {activation!r}")


class _Softplus(nn.Module):
    """``log(1 + exp(s))``, switching to the identity only where the two agree to the dtype's precision.

    ``nn.Softplus`` switches at ``threshold=20`` for every dtype: a downward jump of ``log1p(exp(-20))`` ≈ 2e-9,
    below float32's resolution at 20 but a visible break of convexity in float64. We switch at 40 in float64
    (jump ≈ 4e-18, under one ulp) and at 20 otherwise. (``torch.logaddexp(s, 0)`` would avoid the switch, but
    its double backward gives NaN for very negative ``s``, and training through ``∇V`` needs it.)
    """

    def forward(self, s: Tensor) -> Tensor:
        return nnf.softplus(s, beta=1.0, threshold=40.0 if s.dtype == torch.float64 else 20.0)


class _Lambda(nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, s: Tensor) -> Tensor:
        return self.fn(s)


def _softplus_inverse(y: Tensor) -> Tensor:
    """``x`` with ``softplus(x) = y`` for ``y > 0``."""
    return y + torch.log(-torch.expm1(-y))


class ICNN(nn.Module):
    """Input-convex neural network ``g: R^n -> R`` (convex in its input for every value of its parameters).

    ``z_1 = σ(W_0 z + b_0)``, ``z_{i+1} = σ(W_i z + b_i + U_i z_i)`` for the hidden layers, and the scalar output
    ``g(z) = w_L z + b_L + u_L z_L``. The ``W_i`` (from the input) are free; the ``U_i`` (from the previous layer)
    are kept non-negative by writing ``U_i = softplus(Û_i)`` with a free parameter ``Û_i``, so the constraint holds
    after any optimiser step without projection or clamping (a clamp would have zero gradient once clipped and
    need re-applying after each step). With ``σ`` convex and non-decreasing, each ``z_i`` is convex in ``z`` and
    so is ``g``.

    Args:
        in_features: ``n``, the number of entries of one state (``prod(state_shape)``).
        hidden: widths of the hidden layers, at least one (default ``(64, 64)``).
        activation: ``"softplus"`` (default: smooth, so ``∇V`` and the projected dynamics are smooth and can be
            differentiated twice), ``"rehu"`` (C¹, as Manek & Kolter), ``"relu"`` (convex but not smooth: ``∇V``
            jumps), or your own module / callable, which MUST be convex and non-decreasing for ``g`` to be convex.

    Shapes:
        input ``(N, *state_shape)`` with ``prod(state_shape) == in_features`` (flattened per sample); output ``(N,)``.

    Initialisation (ours): the ``W_i`` as ``nn.Linear``; ``softplus(Û_i)`` uniform in ``(0, 2 / fan_in)``, so the
    pass-through from a layer of width ``h`` adds about one unit's worth of signal instead of ``h`` of them.

    Example:
        >>> g = ICNN(3, hidden=(8, 8))
        >>> g(torch.randn(4, 3)).shape
        torch.Size([4])
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: Union[str, nn.Module, Callable[[Tensor], Tensor]] = "softplus",
    ) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features <= 0:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        hidden = tuple(hidden)
        if len(hidden) == 0 or any(isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive ints, got {hidden!r}")
        self.in_features = in_features
        self.hidden = hidden
        self.activation = _make_activation(activation)
        widths = hidden + (1,)
        # W_i: input -> layer i (with bias); layer 0 .. L-1 hidden, layer L the scalar output
        self.input_layers = nn.ModuleList(nn.Linear(in_features, w) for w in widths)
        # Û_i: layer i-1 -> layer i, for i = 1 .. L; U_i = softplus(Û_i) >= 0
        self.passthrough_raw = nn.ParameterList(
            nn.Parameter(torch.empty(widths[i], widths[i - 1])) for i in range(1, len(widths))
        )
        self.reset_passthrough()

    @torch.no_grad()
    def reset_passthrough(self) -> None:
        """Re-initialise the free parameters ``Û_i`` (``softplus(Û_i)`` uniform in ``(0, 2 / fan_in)``)."""
        for raw in self.passthrough_raw:
            fan_in = raw.shape[1]
            target = torch.rand_like(raw).mul_(2.0 / fan_in).clamp_(min=1e-3 / fan_in)
            raw.copy_(_softplus_inverse(target))

    def nonnegative_weights(self) -> list[Tensor]:
        """The effective pass-through matrices ``U_i = softplus(Û_i)`` (all entries >= 0)."""
        return [nnf.softplus(raw) for raw in self.passthrough_raw]

    def forward(self, z: Tensor) -> Tensor:
        flat = _flatten_batch(z)
        if flat.shape[1] != self.in_features:
            raise ValueError(
                f"ICNN expects {self.in_features} entries per sample, got state shape {tuple(z.shape[1:])} "
                f"({flat.shape[1]} entries)"
            )
        h = self.activation(self.input_layers[0](flat))
        last = len(self.input_layers) - 1
        for i in range(1, last + 1):
            pre = self.input_layers[i](flat) + nnf.linear(h, nnf.softplus(self.passthrough_raw[i - 1]))
            h = pre if i == last else self.activation(pre)
        return h.squeeze(1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, hidden={self.hidden}, U_i = softplus(free) >= 0"


class LyapunovFunction(nn.Module):
    """Positive-definite, convex Lyapunov function ``V(z) = ReHU_d(g(z) - g(c)) + eps ||z - c||²``.

    ``g`` is an :class:`ICNN` and ``c`` the centre: ``0`` by default (Manek & Kolter's construction: ``V(0) = 0``
    and ``V > 0`` elsewhere), or a per-sample centre passed to :meth:`forward` (our addition, so that a later
    model can centre ``V`` on an input-dependent point). ``V(c) = 0``, ``V(z) >= eps ||z - c||² > 0`` for
    ``z != c``, and ``V`` is convex in ``z`` (a convex non-decreasing ReHU of a convex function, plus a convex
    quadratic), so ``c`` is its only minimum.

    Args:
        in_features: entries per state (ignored, may be ``None``, when ``icnn`` is given).
        hidden, activation: passed to :class:`ICNN` when ``icnn`` is not given.
        d: ReHU width, > 0 (default 1.0, Manek & Kolter).
        eps: weight of the quadratic term, > 0 (default 0.01, Manek & Kolter).
        icnn: a ready-made convex network ``(N, *state) -> (N,)`` to use as ``g``. Positive definiteness holds for
            any ``g``; convexity of ``V`` needs ``g`` convex.

    Shapes:
        ``z``: ``(N, *state)``; ``center``: ``None``, ``(N, *state)`` (per sample) or ``state`` (one centre
        for the whole batch); output ``(N,)``.

    Example:
        >>> V = LyapunovFunction(2, hidden=(8,))
        >>> V(torch.zeros(3, 2))
        tensor([0., 0., 0.], grad_fn=<AddBackward0>)
    """

    def __init__(
        self,
        in_features: Optional[int] = None,
        hidden: Sequence[int] = (64, 64),
        activation: Union[str, nn.Module, Callable[[Tensor], Tensor]] = "softplus",
        d: float = 1.0,
        eps: float = 0.01,
        *,
        icnn: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.rehu = ReHU(d)
        self.eps = _check_positive("eps", eps)
        if icnn is None:
            if in_features is None:
                raise ValueError("give either in_features or icnn")
            icnn = ICNN(in_features, hidden=hidden, activation=activation)
        elif in_features is not None and getattr(icnn, "in_features", in_features) != in_features:
            raise ValueError(f"in_features={in_features} does not match icnn.in_features={icnn.in_features}")
        self.g = icnn

    @property
    def d(self) -> float:
        return self.rehu.d

    def _center(self, z: Tensor, center: Optional[Tensor]) -> Tensor:
        if center is None:
            return torch.zeros_like(z)
        if not isinstance(center, Tensor):
            raise TypeError(f"center must be a torch.Tensor or None, got {type(center).__name__}")
        if center.shape == z.shape:
            return center
        if center.shape == z.shape[1:]:
            return center.unsqueeze(0).expand_as(z)
        raise ValueError(
            f"center must have the shape of z {tuple(z.shape)} (one centre per sample) or of one state "
            f"{tuple(z.shape[1:])}; got {tuple(center.shape)}"
        )

    def forward(self, z: Tensor, center: Optional[Tensor] = None) -> Tensor:
        """``V(z)`` per sample, shape ``(N,)``."""
        flat = _flatten_batch(z)
        c = self._center(z, center)
        n = z.shape[0]
        # one pass of g over [z; c]: g(z) and g(c) come from the same computation, so V(c) = 0 (exactly on CPU)
        gz_gc = self.g(torch.cat([z, c.to(dtype=z.dtype)], dim=0))
        if gz_gc.shape != (2 * n,):
            raise ValueError(f"g must map (N, *state) to (N,), got output shape {tuple(gz_gc.shape)}")
        gz, gc = gz_gc[:n], gz_gc[n:]
        diff = flat - c.reshape(n, -1)
        return self.rehu(gz - gc) + self.eps * (diff * diff).sum(dim=1)

    def gradient(self, z: Tensor, center: Optional[Tensor] = None, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """``(V(z), ∇_z V(z))`` per sample: shapes ``(N,)`` and ``z.shape``.

        Works under ``torch.no_grad()`` and ``torch.inference_mode()`` (the gradient is taken under a local
        ``torch.enable_grad()`` on a detached copy of ``z``). With ``create_graph=False`` both results are
        detached. With ``create_graph=True`` both stay in the autograd graph (w.r.t. the parameters, ``center``
        and, when it requires grad, ``z``), so a loss on a projected dynamics trains ``g``. The gradient of
        ``sum_i V(z_i)`` is taken; it equals the per-sample gradients because ``V(z_i)`` depends on ``z_i`` only
        (``g`` must not mix samples, e.g. no BatchNorm).
        """
        if not isinstance(z, Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        # inference_mode(False): autograd cannot run inside torch.inference_mode(), so leave it locally and
        # work on normal copies of inference tensors.
        with torch.inference_mode(False), torch.enable_grad():
            if create_graph and z.requires_grad:
                zz = z
            else:
                zz = (z.clone() if z.is_inference() else z.detach()).requires_grad_(True)
            if center is not None and isinstance(center, Tensor) and center.is_inference():
                center = center.clone()
            v = self(zz, center)
            (dv,) = torch.autograd.grad(v.sum(), zz, create_graph=create_graph)
        if not create_graph:
            return v.detach(), dv.detach()
        return v, dv


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
        ValueError: on mismatched shapes, a missing batch dimension or ``alpha <= 0``.
    """
    alpha = _check_positive("alpha", alpha)
    for name, t in (("F", F), ("V", V), ("grad_V", grad_V)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if F.dim() < 2:
        raise ValueError(f"F must have shape (N, *state), got {tuple(F.shape)}")
    if not (F.is_floating_point() and grad_V.is_floating_point() and V.is_floating_point()):
        raise ValueError("F, V and grad_V must be floating-point tensors")
    if grad_V.shape != F.shape:
        raise ValueError(f"grad_V must have the shape of F {tuple(F.shape)}, got {tuple(grad_V.shape)}")
    n = F.shape[0]
    if V.shape != (n,):
        raise ValueError(f"V must have shape (N,) = ({n},), got {tuple(V.shape)}")
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
        if not callable(dynamics):
            raise ValueError(f"dynamics must be callable, got {dynamics!r}")
        if not callable(getattr(lyapunov, "gradient", None)):
            raise ValueError("lyapunov must provide gradient(z, center=None, create_graph=False) -> (V, dV)")
        self.alpha = _check_positive("alpha", alpha)
        self.dynamics = dynamics
        self.lyapunov = lyapunov

    def forward(self, z: Tensor, x: Optional[Tensor] = None, center: Optional[Tensor] = None) -> Tensor:
        v, dv = self.lyapunov.gradient(z, center, create_graph=torch.is_grad_enabled())
        f = self.dynamics(z) if x is None else self.dynamics(z, x)
        if not isinstance(f, Tensor) or f.shape != z.shape:
            raise ValueError(
                f"dynamics must return a tensor of z's shape {tuple(z.shape)}, "
                f"got {tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__}"
            )
        return stable_projection(f, v, dv, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


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
    alpha = _check_positive("alpha", alpha)
    dt = _check_positive("dt", dt)
    factor = 1.0 - alpha * dt
    if factor < 0:
        raise ValueError(f"alpha * dt must be <= 1 (got {alpha * dt}): the bound (1 - alpha*dt) V would be negative")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {tol!r}")
    if isinstance(trajectory, Tensor):
        if trajectory.dim() < 3:
            raise ValueError(f"a stacked trajectory must have shape (K+1, N, *state), got {tuple(trajectory.shape)}")
        states = list(trajectory.unbind(0))
    else:
        states = list(trajectory)
    if len(states) < 2:
        raise ValueError(f"a trajectory needs at least two states z_0, z_1; got {len(states)}")
    first = states[0]
    for k, s in enumerate(states):
        if not isinstance(s, Tensor):
            raise TypeError(f"trajectory[{k}] must be a torch.Tensor, got {type(s).__name__}")
        if s.shape != first.shape:
            raise ValueError(f"trajectory[{k}] has shape {tuple(s.shape)}, expected {tuple(first.shape)}")
    _flatten_batch(first, "trajectory[0]")
    n = first.shape[0]
    values = []
    with torch.no_grad():
        for k, s in enumerate(states):
            v = V_fn(s)
            if not isinstance(v, Tensor) or v.shape != (n,):
                got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                raise ValueError(f"V_fn must return shape (N,) = ({n},), got {got} at state {k}")
            values.append(v.detach().to(torch.float64))
    vals = torch.stack(values)  # (K+1, N)
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
