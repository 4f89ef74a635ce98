"""LyaDEQ: a deep equilibrium model made Lyapunov stable by a stable projection (our reconstruction).

The paper: Chu, Wei, Liu, Zhao (v3 with Miyatake), "Learning Robust Deep Equilibrium Models" / "Lyapunov-Stable
Deep Equilibrium Models", arXiv 2304.12707, AAAI 2024. It views the DEQ as a dynamical system, makes its fixed
points Lyapunov stable with a learned Lyapunov function (an ICNN, following Manek & Kolter, NeurIPS 2019), and puts
an orthogonal fully connected layer after the stable module "so that fixed points of different classes do not
crowd together". Its full text, exact architecture, hyperparameters and code are NOT available to us (see
``PAPERS.md`` §2): everything below the building blocks of :mod:`deqlib.lyapunov` is our reconstruction, and the
docstrings say which part is which.

The maths
---------
A DEQ cell ``f(z, u)`` (``u`` the input injection) defines the discrete dynamics ``z_{k+1} = f(z_k, u)``. We take as
the *nominal continuous dynamics*

    F(z, u) = f(z, u) - z,                       (zeros of F = fixed points of the DEQ)

so that ``z_{k+1} = z_k + h F(z_k, u)`` is the forward-Euler discretisation with step ``h`` (``h = 1`` is the DEQ's
own iteration). Given a scalar function ``W(z)`` with ``W >= 0``, Manek & Kolter's projection (per sample)

    F̂ = F - ∇W · ReLU(∇Wᵀ F + α W) / ||∇W||²                    (:func:`deqlib.lyapunov.stable_projection`)

gives ``dW/dt = ∇Wᵀ F̂ = min(∇Wᵀ F, -α W) <= -α W`` along ``ż = F̂``: ``W`` decays at least like ``exp(-α t)``.
``F̂ = F`` wherever ``F`` already decreases ``W`` at rate α. The stabilised cell is the Euler step

    z  <-  z + h F̂(z, u),    h ∈ (0, 1]                         (:class:`LyapunovStableCell`)

which is ``f`` itself (``h = 1``) wherever the projection is inactive. Its fixed points are the zeros of ``F̂``
for every ``h``. Two choices of ``W``:

``center="origin"`` — ``W(z) = V(z)``, V a :class:`~deqlib.lyapunov.LyapunovFunction` centred on the origin of the
    latent space: Manek & Kolter's construction, and what the description of LyaDEQ implies. Then ``V(z(t)) -> 0``
    for EVERY input: all trajectories go to the one minimiser ``z = 0`` of ``V``. The projected field has no other
    zero (``F̂(z) = 0`` would give ``0 = ∇Vᵀ F̂ <= -α V(z) < 0``), and at ``z = 0`` itself ``∇V = 0`` leaves
    ``F̂(0) = f(0, u)``, which is not zero in general: the field is discontinuous there and the continuous trajectory
    slides into ``0`` (``V`` still decays exponentially). The discrete iteration chatters in a ball around ``0``
    whose radius shrinks with ``h``. Either way the input-dependent fixed points COLLAPSE towards one
    input-independent point, and a classifier head on ``z*`` can no longer tell inputs apart. This is the problem
    the book demonstrates (:func:`fixed_point_spread`). Measured on 64 digits, MLP width 32, fixed-point iteration
    for ``20 / h`` steps: the mean pairwise distance of the equilibria drops to 0.74 / 0.29 / 0.09 / 0.03 of the
    nominal model's for ``h = 1 / 0.5 / 0.2 / 0.1`` (α = 1; about the same for α = 0.1), ``||z*||`` from 2.8 to
    under 0.1 for small ``h``, and no sample ever converges. Since there is no true fixed point, ``grad="ift"``
    is not justified for this variant (its adjoint iteration may diverge): use ``"phantom"`` or ``"unroll"``.

``center="residual"`` — ``W(z) = V(r(z))`` with ``r(z) = f(z, u) - z = F(z, u)``, V a Lyapunov function on the
    residual's space (``V(0) = 0``, ``V > 0`` elsewhere, ``∇V(0) = 0``). Its gradient w.r.t. the STATE is

        ∇_z W = J_rᵀ ∇V(r),    J_r = ∂f/∂z - I,

    taken by autograd through ``f`` (one vector-Jacobian product). Then:

    * every fixed point is kept: where ``r = 0``, ``W = 0`` and ``∇_z W = 0``, so the correction vanishes and
      ``F̂ = F = 0``;
    * none is added: ``F̂ = 0`` with ``r ≠ 0`` would give ``0 = ∇Wᵀ F̂ <= -α W < 0``;
    * along ``ż = F̂`` the residual's Lyapunov value decays exponentially, ``V(r(t)) <= exp(-α t) V(r(0))``, so the
      residual goes to 0 — as long as ``∇_z W`` does not vanish on the way (below).

    Caveats. (1) Where ``J_r`` is singular (an eigenvalue 1 of ``∂f/∂z``) and ``∇V(r)`` is in its left null space,
    ``∇_z W = 0`` with ``W > 0``: no direction decreases ``W``, the correction ``α W / ||∇W||`` blows up and the
    guarantee is void. For a contractive ``f`` (``||∂f/∂z|| < 1``) ``J_r`` is never singular; for an expanding ``f``
    ``W`` can have such critical points (with an MLP cell whose orthogonal weight has scale 2 we saw the projected
    iteration stall at ``W ≈ 1e-4`` with large, chattering corrections). (2) By convexity ``∇V(r)ᵀ r >= V(r)``, so
    where ``∂f/∂z`` is small (e.g. saturated units) ``F = r`` already decreases ``W`` at rate ~1 and the projection is
    inactive for ``α <~ 1``: with a contractive cell it acts only for larger ``α`` or near the fixed points.
    (3) Near a fixed point the correction is positively homogeneous of
    degree 1 in ``r`` but in general not linear: ``F̂`` is Lipschitz, not differentiable, at ``z*``. The implicit
    gradient is nevertheless exact, because ``F̂ = G(r)`` with ``G`` invertible near 0 gives
    ``dz*/du = -J_r⁻¹ ∂r/∂u``, the nominal DEQ's own implicit derivative (tested by ``gradcheck``).

    Consequence worth teaching: the map ``u -> z*(u)`` is the nominal DEQ's (when its fixed point is unique), so the
    residual variant changes HOW the equilibrium is reached (and certifies it), not WHICH function the converged
    classifier computes. In particular, with ``grad="ift"`` the loss does not depend on the Lyapunov network's
    parameters at all (their gradient is ``O(residual)``, i.e. numerically ~0); ``"phantom"`` / ``"unroll"``
    gradients, which see the finite-step transient, do train it.

What follows the paper / Manek & Kolter and what is ours
--------------------------------------------------------
* Paper (from its public description): a DEQ, a learned ICNN Lyapunov function, stable fixed points, an orthogonal
  FC layer after the stable module, classification on MNIST/SVHN/CIFAR.
* Manek & Kolter (confirmed from their paper and code): the ICNN, ``V = ReHU(g(z) - g(0)) + ε||z||²``, the
  projection formula, computed per sample (see :mod:`deqlib.lyapunov`).
* SODEF (Kang et al. 2021) and the first author's later public code: the orthogonal layer is a bias-free linear map
  with orthonormal rows.
* Ours: ``F = f - z`` as the nominal dynamics; the Euler cell with step ``h``; the ``"residual"`` centring; where
  the orthogonal layer sits and what follows it (:func:`orthogonal_head`); the default ``alpha = 0.1`` (Manek &
  Kolter's default is 0.01); :func:`fixed_point_spread`; :func:`certificate_check`.

Example:
    >>> import torch
    >>> from deqlib.data import load
    >>> from deqlib.lyadeq import lyadeq_classifier, certificate_check
    >>> data = load("digits", "train")
    >>> model = lyadeq_classifier(data, width=32, lyapunov_hidden=(32,), center="residual", alpha=0.1)
    >>> x = data.images[:4]
    >>> model(x).shape
    torch.Size([4, 10])
    >>> sorted(certificate_check(model, x, steps=5))[:3]
    ['V_final', 'V_initial', 'alpha']
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import orthogonal as _orthogonal

from .cells import DEQClassifier, conv_classifier, mlp_classifier
from .deq import DEQ
from .lyapunov import LyapunovFunction, lyapunov_decrease, stable_projection
from .solvers import get_solver

__all__ = [
    "CENTERS",
    "READOUTS",
    "LyapunovStableCell",
    "orthogonal_linear",
    "orthogonal_head",
    "LyaDEQClassifier",
    "lyadeq_classifier",
    "fixed_point_spread",
    "certificate_check",
]

#: Where the Lyapunov function is centred: on the latent origin (Manek & Kolter) or on the residual f(z, u) - z.
CENTERS = ("origin", "residual")
#: Heads after the DEQ: orthogonal then linear (default), or the orthogonal map as the classifier itself.
READOUTS = ("orthogonal+linear", "orthogonal")


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _check_center(center: Any) -> str:
    if not isinstance(center, str) or center not in CENTERS:
        raise ValueError(f"unknown center {center!r}; expected one of {CENTERS}")
    return center


def _check_h(h: Any) -> float:
    if isinstance(h, bool):
        raise ValueError(f"h must be a number in (0, 1], got {h!r}")
    try:
        v = float(h)
    except (TypeError, ValueError):
        raise ValueError(f"h must be a number in (0, 1], got {h!r}") from None
    if not (math.isfinite(v) and 0.0 < v <= 1.0):
        raise ValueError(f"h must be in (0, 1], got {h!r}")
    return v


class LyapunovStableCell(nn.Module):
    """The DEQ cell ``z <- z + h F̂(z, u)``: an Euler step of the Lyapunov-stable projection of ``F = f(z, u) - z``.

    A drop-in cell for :class:`~deqlib.deq.DEQ`: solvers, the ``"ift"`` / ``"phantom"`` / ``"unroll"`` gradients,
    trajectories and diagnostics work unchanged. See the module docstring for the maths of the two centrings.

    * Under ``torch.no_grad()`` (the solver) ``∇W`` is computed under a local ``torch.enable_grad()`` on a detached
      copy of ``z`` (also inside ``torch.inference_mode()``); the result carries no graph.
    * With gradients on, ``∇W`` is taken with ``create_graph=True``, on ``z`` itself when it requires grad, so the
      output is differentiable w.r.t. ``z`` (IFT's vector-Jacobian products, phantom and unrolled steps), ``u``, the
      nominal cell's and the Lyapunov function's parameters.

    The nominal cell must treat samples independently (no BatchNorm): ``∇W`` is the gradient of the batch sum.

    Args:
        cell: the nominal DEQ cell ``f(z, u) -> next z``.
        lyapunov: a :class:`~deqlib.lyapunov.LyapunovFunction` on the state space (its ``in_features`` is the number
            of entries of one state, for either centring: the residual has the state's shape).
        alpha: decay rate α > 0 (default 0.1, ours).
        h: Euler step in (0, 1] (default 1.0: the cell is ``f`` wherever the projection is inactive).
        center: ``"origin"`` (Manek & Kolter; fixed points collapse) or ``"residual"`` (default; keeps the DEQ's fixed
            points).

    Raises:
        ValueError: unknown ``center``, ``alpha <= 0``, ``h`` outside (0, 1], or a ``lyapunov`` without a
            ``forward(z)`` returning ``(N,)`` values.

    Example:
        >>> from deqlib.cells import MLPCell
        >>> from deqlib.lyapunov import LyapunovFunction
        >>> cell = LyapunovStableCell(MLPCell(8), LyapunovFunction(8, hidden=(16,)), alpha=0.5, h=0.5)
        >>> deq = DEQ(cell, solver="anderson", grad="ift", max_iter=50)
        >>> deq(torch.randn(3, 8)).shape
        torch.Size([3, 8])
    """

    def __init__(
        self,
        cell: nn.Module,
        lyapunov: nn.Module,
        alpha: float = 0.1,
        h: float = 1.0,
        center: str = "residual",
    ) -> None:
        super().__init__()
        if not callable(cell):
            raise ValueError(f"cell must be callable as cell(z, u), got {type(cell).__name__}")
        if not callable(lyapunov):
            raise ValueError(f"lyapunov must be callable as V(z) -> (N,), got {type(lyapunov).__name__}")
        self.center = _check_center(center)
        self.alpha = _positive("alpha", alpha)
        self.h = _check_h(h)
        self.cell = cell
        self.lyapunov = lyapunov

    def extra_repr(self) -> str:
        return f"center={self.center!r}, alpha={self.alpha}, h={self.h}"

    def state_shape(self, u: Tensor) -> tuple:
        """The nominal cell's state shape for injection ``u`` (``u``'s shape if it does not say)."""
        fn = getattr(self.cell, "state_shape", None)
        return tuple(fn(u)) if fn is not None else tuple(u.shape)

    # ------------------------------------------------------------------ the field
    def _terms(self, z: Tensor, u: Tensor, create_graph: bool):
        """``(zz, F, F̂, W, ∇W)`` at ``z``; ``zz`` is ``z`` or a copy that requires grad."""
        if create_graph and z.requires_grad:
            zz = z
        else:
            zz = (z.clone() if z.is_inference() else z.detach()).requires_grad_(True)
        F = self.cell(zz, u) - zz
        if not isinstance(F, Tensor) or F.shape != zz.shape:
            raise ValueError(f"the nominal cell must return a state of shape {tuple(zz.shape)}")
        W = self.lyapunov(zz if self.center == "origin" else F)
        if not isinstance(W, Tensor) or W.shape != (zz.shape[0],):
            got = tuple(W.shape) if isinstance(W, Tensor) else type(W).__name__
            raise ValueError(f"lyapunov must return one value per sample, shape ({zz.shape[0]},); got {got}")
        (gW,) = torch.autograd.grad(W.sum(), zz, create_graph=create_graph)
        Fhat = stable_projection(F, W, gW, self.alpha)
        return zz, F, Fhat, W, gW

    def field(self, z: Tensor, u: Tensor) -> dict:
        """The continuous-time picture at ``z``: ``{"F", "F_hat", "W", "grad_W", "active"}``, per sample.

        ``F`` the nominal field ``f(z, u) - z``; ``F_hat`` the projected field; ``W`` the certified quantity
        (``V(z)`` or ``V(f(z, u) - z)``); ``grad_W`` its gradient w.r.t. ``z``; ``active`` (bool, ``(N,)``) where the
        projection changed ``F``. Differentiable when gradients are on, detached otherwise.
        """
        grad_on = torch.is_grad_enabled()
        if grad_on:
            _, F, Fhat, W, gW = self._terms(z, u, True)
        else:
            with torch.inference_mode(False), torch.enable_grad():
                uu = u.clone() if u.is_inference() else u
                _, F, Fhat, W, gW = self._terms(z, uu, False)
            F, Fhat, W, gW = F.detach(), Fhat.detach(), W.detach(), gW.detach()
        n = F.shape[0]
        active = (Fhat - F).reshape(n, -1).abs().amax(dim=1) > 0
        return {"F": F, "F_hat": Fhat, "W": W, "grad_W": gW, "active": active.detach()}

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            zz, _, Fhat, _, _ = self._terms(z, u, True)
            return zz + self.h * Fhat
        with torch.inference_mode(False), torch.enable_grad():
            uu = u.clone() if u.is_inference() else u
            zz, _, Fhat, _, _ = self._terms(z, uu, False)
            out = zz.detach() + self.h * Fhat.detach()
        return out

    @torch.no_grad()
    def lyapunov_value(self, z: Tensor, u: Tensor) -> Tensor:
        """The certified quantity ``W(z)``: ``V(z)`` (origin) or ``V(f(z, u) - z)`` (residual); ``(N,)``, no graph."""
        if self.center == "origin":
            return self.lyapunov(z)
        return self.lyapunov(self.cell(z, u) - z)


def orthogonal_linear(in_features: int, out_features: Optional[int] = None) -> nn.Linear:
    """A bias-free ``nn.Linear`` whose weight stays orthogonal under any optimiser step.

    ``torch.nn.utils.parametrizations.orthogonal``: with ``out_features <= in_features`` the rows are orthonormal
    (``W Wᵀ = I``: a projection onto ``out_features`` orthonormal directions, 1-Lipschitz; square: an isometry), as in
    SODEF and the first author's code; with ``out_features > in_features`` the columns are (``Wᵀ W = I``: an isometric
    embedding).

    Example:
        >>> lin = orthogonal_linear(6, 4)
        >>> torch.allclose(lin.weight @ lin.weight.T, torch.eye(4), atol=1e-5)
        True
    """
    for name, v in (("in_features", in_features), ("out_features", out_features)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    out_features = in_features if out_features is None else out_features
    return _orthogonal(nn.Linear(in_features, out_features, bias=False))


def _is_orthogonal_linear(m: nn.Module) -> bool:
    if not (isinstance(m, nn.Linear) and parametrize.is_parametrized(m, "weight")):
        return False
    return any(type(p).__name__ == "_Orthogonal" for p in m.parametrizations.weight)


def orthogonal_head(
    in_features: int,
    num_classes: int,
    *,
    features: Optional[int] = None,
    readout: str = "orthogonal+linear",
    pre: Optional[nn.Module] = None,
) -> nn.Sequential:
    """The head after the stable DEQ: ``pre`` (default ``Flatten``) → orthogonal linear → linear classifier.

    Our decision (the paper's exact head is not available):

    * ``readout="orthogonal+linear"`` (default): ``Linear(features, num_classes)(Q z)`` with ``Q`` a bias-free
      orthogonal map to ``features`` dimensions (default ``in_features``: square, an isometry). Reason: ``Q`` keeps
      the geometry of the equilibria (distances between fixed points are preserved, or at most shrunk by a
      projection), which is the role the paper gives the orthogonal layer, while the trailing linear layer gives a
      learnable logit scale, bias and any number of classes. Note that orthogonal-then-linear is, as a function,
      just a linear map: the orthogonal layer changes the parametrisation (and so the training dynamics), not what
      the head can express.
    * ``readout="orthogonal"``: ``Q`` maps straight to ``num_classes`` logits (the first author's GNN habit): the
      head is then exactly 1-Lipschitz, ``||Δ logits|| <= ||Δ z*||``, at the price of no bias and a logit scale fixed
      by the state's norm. ``features`` must then be ``None`` or ``num_classes``.

    Args:
        in_features: entries of the (pre-processed) state.
        num_classes: number of logits.
        features: output size of the orthogonal layer (``orthogonal+linear`` only).
        readout: one of :data:`READOUTS`.
        pre: module applied to the state first (default ``nn.Flatten()``; the conv builder pools first).
    """
    if readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r}; expected one of {READOUTS}")
    pre = nn.Flatten() if pre is None else pre
    if readout == "orthogonal":
        if features not in (None, num_classes):
            raise ValueError(f"readout='orthogonal' maps to the classes: features must be None or {num_classes}")
        return nn.Sequential(pre, orthogonal_linear(in_features, num_classes))
    features = in_features if features is None else features
    return nn.Sequential(pre, orthogonal_linear(in_features, features), nn.Linear(features, num_classes))


class LyaDEQClassifier(DEQClassifier):
    """[0, 1] images → normalise → injection → DEQ with a :class:`LyapunovStableCell` → head → logits.

    A :class:`~deqlib.cells.DEQClassifier` whose cell is the Lyapunov-stable wrapper of the nominal ``cell`` and whose
    head should contain an orthogonal layer (see :func:`orthogonal_head`; :func:`lyadeq_classifier` builds both).
    ``forward``, ``inject``, ``logits_from_state`` and ``solve`` are the parent's.

    Args:
        injection, head, image_shape, mean, std, **deq_options: as for :class:`~deqlib.cells.DEQClassifier`.
        cell: the NOMINAL cell ``f(z, u)``; it is wrapped as ``LyapunovStableCell(cell, lyapunov, alpha, h, center)``.
        lyapunov: the Lyapunov function on the state space.
        alpha, h, center: see :class:`LyapunovStableCell`.
    """

    def __init__(
        self,
        injection: nn.Module,
        cell: nn.Module,
        lyapunov: nn.Module,
        head: nn.Module,
        *,
        alpha: float = 0.1,
        h: float = 1.0,
        center: str = "residual",
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        **deq_options: Any,
    ) -> None:
        stable = LyapunovStableCell(cell, lyapunov, alpha=alpha, h=h, center=center)
        super().__init__(injection, stable, head, image_shape=image_shape, mean=mean, std=std, **deq_options)

    @property
    def stable_cell(self) -> LyapunovStableCell:
        return self.deq.cell

    @property
    def nominal_cell(self) -> nn.Module:
        return self.deq.cell.cell

    @property
    def lyapunov(self) -> nn.Module:
        return self.deq.cell.lyapunov

    @property
    def orthogonal(self) -> Optional[nn.Linear]:
        """The first orthogonally parametrised linear layer of the head (``None`` if there is none)."""
        for m in self.head.modules():
            if _is_orthogonal_linear(m):
                return m
        return None


def _builder_options(builder) -> set:
    sig = inspect.signature(builder)
    return {
        name
        for name, p in sig.parameters.items()
        if p.kind == inspect.Parameter.KEYWORD_ONLY and name not in ("mean", "std")
    }


def lyadeq_classifier(
    dataset: Any,
    kind: str = "mlp",
    *,
    center: str = "residual",
    alpha: float = 0.1,
    h: float = 1.0,
    lyapunov_hidden: Sequence[int] = (64, 64),
    lyapunov_activation: str = "softplus",
    lyapunov_d: float = 1.0,
    lyapunov_eps: float = 0.01,
    features: Optional[int] = None,
    readout: str = "orthogonal+linear",
    **kwargs: Any,
) -> LyaDEQClassifier:
    """A LyaDEQ classifier matched to a data set, like :func:`deqlib.cells.classifier_for`.

    The injection and nominal cell are those of :func:`~deqlib.cells.mlp_classifier` / :func:`~deqlib.cells.conv_classifier`
    (their options, e.g. ``width``, ``channels``, ``weight_scale``, pass through ``kwargs``); the cell is wrapped in a
    :class:`LyapunovStableCell` with a :class:`~deqlib.lyapunov.LyapunovFunction` on the state space
    (``LyapunovFunction(n_state, lyapunov_hidden, lyapunov_activation, lyapunov_d, lyapunov_eps)``); the head is
    :func:`orthogonal_head` (the conv model average-pools the state to 2x2 first, as ``conv_classifier``).
    The remaining ``kwargs`` go to :class:`~deqlib.deq.DEQ` (``solver``, ``grad``, ``max_iter``, ``tol``, ...).

    Args:
        dataset: anything with ``image_shape``, ``num_classes``, ``mean`` and ``std``.
        kind: ``"mlp"`` or ``"conv"``.
        center, alpha, h: see :class:`LyapunovStableCell`.
        features, readout: see :func:`orthogonal_head`.

    Example:
        >>> from deqlib.data import load
        >>> model = lyadeq_classifier(load("digits"), width=32, lyapunov_hidden=(32,), solver="anderson")
        >>> model(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    builders = {"mlp": mlp_classifier, "conv": conv_classifier}
    if kind not in builders:
        raise ValueError(f"unknown classifier kind {kind!r}; expected one of {tuple(builders)}")
    _check_center(center)
    _positive("alpha", alpha)
    _check_h(h)
    builder = builders[kind]
    own = _builder_options(builder)
    model_kw = {k: v for k, v in kwargs.items() if k in own}
    deq_kw = {k: v for k, v in kwargs.items() if k not in own}
    image_shape, num_classes = tuple(dataset.image_shape), int(dataset.num_classes)
    base = builder(image_shape, num_classes, mean=dataset.mean, std=dataset.std, **model_kw)
    with torch.no_grad():
        state = base.injection(torch.zeros(1, *image_shape))
    n_state = int(state[0].numel())
    lyap = LyapunovFunction(
        n_state, hidden=tuple(lyapunov_hidden), activation=lyapunov_activation, d=lyapunov_d, eps=lyapunov_eps
    )
    if kind == "mlp":
        pre, n_head = nn.Flatten(), n_state
    else:
        channels = int(state.shape[1])
        pre, n_head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()), 4 * channels
    head = orthogonal_head(n_head, num_classes, features=features, readout=readout, pre=pre)
    return LyaDEQClassifier(
        base.injection,
        base.deq.cell,
        lyap,
        head,
        alpha=alpha,
        h=h,
        center=center,
        image_shape=image_shape,
        mean=dataset.mean,
        std=dataset.std,
        **deq_kw,
    )


# ---------------------------------------------------------------------- measurements
def _deq_and_injection(model: nn.Module, x: Tensor):
    """``(deq, u)``: a DEQ classifier's DEQ and injection of images x, or a bare DEQ and x itself."""
    if isinstance(model, DEQ):
        return model, x
    deq = getattr(model, "deq", None)
    if not isinstance(deq, DEQ) or not callable(getattr(model, "inject", None)):
        raise TypeError(f"model must be a DEQ classifier (with .deq and .inject) or a DEQ, got {type(model).__name__}")
    with torch.no_grad():
        return deq, model.inject(x)


def _mean_pairwise_distance(z: Tensor) -> float:
    flat = z.reshape(z.shape[0], -1).to(torch.float64)
    return float(torch.pdist(flat).mean())


def fixed_point_spread(model: nn.Module, x: Tensor, **solver_overrides: Any) -> dict:
    """How far apart the equilibria of different inputs are, with and without the Lyapunov projection.

    Solves the model's DEQ for the inputs ``x`` (a batch of at least two), and the same DEQ with the NOMINAL cell
    (the projection removed; same solver and settings), and reports the mean pairwise Euclidean distance of the
    flattened ``z*``. With ``center="origin"`` the projected equilibria collapse towards ``V``'s minimiser ``0``:
    ``ratio`` ≪ 1. With ``center="residual"`` the equilibria are the nominal ones: ``ratio`` ≈ 1.

    Args:
        model: a :class:`LyaDEQClassifier` (or any DEQ classifier / ``DEQ`` whose cell is a
            :class:`LyapunovStableCell`; with another cell both measurements coincide).
        x: images for a classifier, injections for a bare ``DEQ``; ``N >= 2``.
        **solver_overrides: replace solver settings for both solves (e.g. ``max_iter=200``).

    Returns:
        ``{"spread", "spread_nominal", "ratio", "norm", "norm_nominal", "converged", "converged_nominal"}``:
        mean pairwise distances, ``ratio = spread / spread_nominal``, mean ``||z*||`` (the distance to the origin
        variant's collapse point), and the fraction of samples whose solve converged.
    """
    deq, u = _deq_and_injection(model, x)
    if u.shape[0] < 2:
        raise ValueError(f"fixed_point_spread needs at least two inputs, got {u.shape[0]}")
    cell = deq.cell
    nominal = cell.cell if isinstance(cell, LyapunovStableCell) else cell
    opts = {"max_iter": deq.max_iter, "tol": deq.tol, "stop_mode": deq.stop_mode, **deq.solver_options}
    opts.update(solver_overrides)
    solver = get_solver(deq.solver)
    z0 = deq.initial_state(u)
    with torch.no_grad():
        z, info = solver(lambda s: cell(s, u), z0, record=False, **opts)
        zn, info_n = solver(lambda s: nominal(s, u), z0, record=False, **opts)
    spread, spread_n = _mean_pairwise_distance(z), _mean_pairwise_distance(zn)
    n = u.shape[0]
    return {
        "spread": spread,
        "spread_nominal": spread_n,
        "ratio": spread / spread_n if spread_n > 0 else float("nan"),
        "norm": float(z.reshape(n, -1).norm(dim=1).mean()),
        "norm_nominal": float(zn.reshape(n, -1).norm(dim=1).mean()),
        "converged": float(info.converged.float().mean()),
        "converged_nominal": float(info_n.converged.float().mean()),
    }


def certificate_check(
    model: nn.Module,
    x: Tensor,
    *,
    steps: int = 20,
    alpha: Optional[float] = None,
    source: str = "dynamics",
    z0: Optional[Tensor] = None,
    rtol: float = 1e-6,
    atol: Optional[float] = None,
) -> dict:
    """Check the Lyapunov certificate along the model's discrete trajectory: ``W_{k+1} <= (1 - α h) W_k``.

    ``W`` is the cell's certified quantity (``V(z)`` for ``center="origin"``, ``V(f(z, u) - z)`` for
    ``"residual"``), evaluated along

    * ``source="dynamics"`` (default): ``steps`` iterations of the stabilised cell ``z <- z + h F̂(z, u)`` from the
      DEQ's initial state (or ``z0``), i.e. the forward-Euler discretisation of ``ż = F̂`` with ``dt = h``;
    * ``source="solver"``: the states the model's own solver visits (``steps`` is its ``max_iter``). With Anderson or
      Broyden these are not a trajectory of the dynamics and the certificate makes no promise about them.

    and checked with :func:`deqlib.lyapunov.lyapunov_decrease` at ``dt = h``.

    The guarantee ``dW/dt <= -α W`` is for CONTINUOUS time. The Euler step adds an ``O(h²)`` error against an
    ``O(α h)`` margin (zero margin beyond ``α h`` wherever the projection is active), and ``1 - α h`` is slightly
    stricter than the exact factor ``exp(-α h)``: the discrete check can legitimately fail for large ``h`` (and for
    the origin variant, whose iterates chatter around the discontinuity of ``F̂`` at 0). Small ``h`` should pass.

    Args:
        model: a :class:`LyaDEQClassifier`, a DEQ classifier or a ``DEQ`` whose cell is a :class:`LyapunovStableCell`.
        x: images (classifier) or injections (bare ``DEQ``).
        steps: number of steps ``K >= 1``.
        alpha: rate to check (default: the cell's α); ``alpha * h <= 1``.
        source: ``"dynamics"`` or ``"solver"``.
        z0: initial state (default: the DEQ's, zeros).
        rtol: relative tolerance of :func:`~deqlib.lyapunov.lyapunov_decrease` (float rounding).
        atol: absolute tolerance; default ``eps(dtype) * max W`` over the trajectory, the level below which ``W``
            is rounding noise (a converged trajectory stalls there).

    Returns:
        ``{"violations", "steps", "rate", "max_excess", "per_step", "alpha", "dt", "center", "source", "rtol",
        "atol", "V_initial", "V_final"}``: the first five from :func:`~deqlib.lyapunov.lyapunov_decrease`
        (``rate`` = violations / steps in [0, 1], ``steps`` = K·N (step, sample) pairs), the settings used, and the
        batch means of ``W`` at the first and last state.

    Raises:
        TypeError: if the model's cell is not a :class:`LyapunovStableCell`.
        ValueError: bad ``steps``, ``source``, ``alpha`` or ``alpha * h > 1``.
    """
    deq, u = _deq_and_injection(model, x)
    cell = deq.cell
    if not isinstance(cell, LyapunovStableCell):
        raise TypeError(f"certificate_check needs a LyapunovStableCell in the DEQ, got {type(cell).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if source not in ("dynamics", "solver"):
        raise ValueError(f"unknown source {source!r}; expected 'dynamics' or 'solver'")
    a = cell.alpha if alpha is None else _positive("alpha", alpha)
    dt = cell.h
    if a * dt > 1:
        raise ValueError(f"alpha * h must be <= 1 for the discrete check, got {a} * {dt}")
    with torch.no_grad():
        if source == "dynamics":
            z = deq.initial_state(u) if z0 is None else z0.detach()
            traj = [z]
            for _ in range(steps):
                z = cell(z, u)
                traj.append(z)
            traj_t = torch.stack(traj)
        else:
            _, info = deq.solve(u, z0, record=True, max_iter=steps)
            traj_t = info.trajectory
        values = torch.stack([cell.lyapunov_value(s, u) for s in traj_t.unbind(0)]).to(torch.float64)
    if atol is None:
        vmax = float(values[torch.isfinite(values)].max()) if bool(torch.isfinite(values).any()) else 0.0
        atol = float(torch.finfo(traj_t.dtype).eps) * vmax
    # lyapunov_decrease evaluates V_fn on the states in order: hand it the values computed above.
    cached = iter(values.unbind(0))
    report = lyapunov_decrease(lambda s: next(cached), traj_t, a, dt, rtol=rtol, atol=atol)
    report.update(
        alpha=a,
        dt=dt,
        center=cell.center,
        source=source,
        rtol=rtol,
        atol=atol,
        V_initial=float(values[0].mean()),
        V_final=float(values[-1].mean()),
    )
    return report
