"""The Lyapunov functions of Manek & Kolter (NeurIPS 2019): the ReHU unit, the input-convex network, ``V``.

Part of :mod:`deqlib.lyapunov` (import the names from there). API: :class:`ReHU`, :class:`ICNN`,
:class:`LyapunovFunction`, :data:`ACTIVATIONS`.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from .._validate import check_callable, check_choice, check_int, check_positive, check_tensor

__all__ = ["ACTIVATIONS", "ReHU", "ICNN", "LyapunovFunction"]

#: The activations of :class:`ICNN` by name (convex and non-decreasing); a module or callable also works.
ACTIVATIONS = ("softplus", "rehu", "relu")


def _flatten_batch(z: Tensor, where: str, name: str = "z") -> Tensor:
    """``(N, *state) -> (N, n)``; a batch dimension and at least one state dimension are required."""
    check_tensor(z, name, where, min_dim=2)
    return z.reshape(z.shape[0], -1)


class ReHU(nn.Module):
    """Rectified Huber unit: ``0`` for s <= 0, ``s²/(2d)`` for 0 < s <= d, ``s - d/2`` for s > d.

    Continuously differentiable (the derivative is ``0``, ``s/d``, ``1`` on the three pieces), convex and
    non-decreasing; applied elementwise. Manek & Kolter use it to turn ``g(z) - g(0)`` into a non-negative
    function that is quadratic, hence smooth, near its minimum.

    Args:
        d: width of the quadratic piece, > 0 (default 1.0).

    Raises:
        TypeError: ``d`` not a number. ValueError: ``d`` not finite or not > 0.

    Example:
        >>> ReHU(d=1.0)(torch.tensor([-1.0, 0.5, 2.0]))
        tensor([0.0000, 0.1250, 1.5000])
    """

    def __init__(self, d: float = 1.0) -> None:
        super().__init__()
        self.d = check_positive(d, "d", "ReHU")

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
        key = check_choice(activation, "activation", "ICNN", ACTIVATIONS, ignore_case=True)
        return {"softplus": _Softplus, "rehu": lambda: ReHU(1.0), "relu": nn.ReLU}[key]()
    return _Lambda(check_callable(activation, "activation", "ICNN", "(a name, an nn.Module or a callable)"))


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
        in_features = check_int(in_features, "in_features", "ICNN", minimum=1)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise TypeError(
                f"ICNN: hidden must be a non-empty sequence of positive ints, e.g. (64, 64), got {hidden!r}"
            )
        hidden = tuple(check_int(h, "a hidden width", "ICNN", minimum=1) for h in hidden)
        if len(hidden) == 0:
            raise ValueError("ICNN: hidden must be a non-empty sequence of positive ints, got ()")
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
        flat = _flatten_batch(z, "ICNN")
        if flat.shape[1] != self.in_features:
            raise ValueError(
                f"ICNN: expects {self.in_features} entries per sample, got state shape {tuple(z.shape[1:])} "
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
        where = "LyapunovFunction"
        self.eps = check_positive(eps, "eps", where)
        if icnn is None:
            if in_features is None:
                raise ValueError(f"{where}: give either in_features or icnn")
            icnn = ICNN(in_features, hidden=hidden, activation=activation)
        elif in_features is not None and getattr(icnn, "in_features", in_features) != in_features:
            raise ValueError(f"{where}: in_features={in_features} does not match icnn.in_features={icnn.in_features}")
        self.g = icnn

    @property
    def d(self) -> float:
        return self.rehu.d

    def _center(self, z: Tensor, center: Optional[Tensor]) -> Tensor:
        if center is None:
            return torch.zeros_like(z)
        check_tensor(center, "center", "LyapunovFunction")
        if center.shape == z.shape:
            return center
        if center.shape == z.shape[1:]:
            return center.unsqueeze(0).expand_as(z)
        raise ValueError(
            f"LyapunovFunction: center must have the shape of z {tuple(z.shape)} (one centre per sample) or of one "
            f"state {tuple(z.shape[1:])}; got {tuple(center.shape)}"
        )

    def forward(self, z: Tensor, center: Optional[Tensor] = None) -> Tensor:
        """``V(z)`` per sample, shape ``(N,)``."""
        flat = _flatten_batch(z, "LyapunovFunction")
        c = self._center(z, center)
        n = z.shape[0]
        # one pass of g over [z; c]: g(z) and g(c) come from the same computation, so V(c) = 0 (exactly on CPU)
        gz_gc = self.g(torch.cat([z, c.to(dtype=z.dtype)], dim=0))
        if gz_gc.shape != (2 * n,):
            raise ValueError(f"LyapunovFunction: g must map (N, *state) to (N,), got output shape {tuple(gz_gc.shape)}")
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
        check_tensor(z, "z", "LyapunovFunction.gradient")
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
