"""LyaDEQ: a deep equilibrium model made Lyapunov stable by a stable projection (our reconstruction).

Taught in chapter 6 (not yet written). The paper: Chu, Wei, Liu, Zhao, "Learning Robust Deep Equilibrium Models" /
"Lyapunov-Stable Deep Equilibrium Models" (arXiv 2304.12707, AAAI 2024); its full text, architecture and code are not
available to us, so everything above the building blocks of :mod:`deqlib.lyapunov` is our reconstruction.

The cell replaces the DEQ's step ``z <- f(z, u)`` by the Euler step ``z <- z + h F̂(z, u)`` of the Lyapunov-stable
projection ``F̂`` (Manek & Kolter 2019) of ``F = f(z, u) - z``, with the Lyapunov function centred on the latent
origin (``center="origin"``: every input's equilibrium collapses towards 0) or on the residual ``f(z, u) - z``
(``center="residual"``: the DEQ's fixed points are kept and certified). The derivation, the caveats, what follows the
paper and what is ours, and the measurements: ``experiments/results/lyadeq_reconstruction.md``.

API:
    * :class:`LyapunovStableCell` — the stabilised cell (a drop-in cell for :class:`~deqlib.deq.DEQ`).
    * :func:`orthogonal_linear`, :func:`orthogonal_head` — the orthogonal layer and the head around it.
    * :class:`LyaDEQClassifier`, :func:`lyadeq_classifier` — the classifier and its builder for a data set.
    * :data:`CENTERS`, :data:`READOUTS` — the choices of ``center`` and ``readout``.
    * In :mod:`deqlib.defenses.lyadeq_checks`: :func:`~deqlib.defenses.lyadeq_checks.fixed_point_spread` (the
      collapse) and :func:`~deqlib.defenses.lyadeq_checks.certificate_check` (the discrete certificate).

Example:
    >>> import torch
    >>> from deqlib.data import load
    >>> from deqlib.defenses import lyadeq_classifier, certificate_check
    >>> data = load("digits", "train")
    >>> model = lyadeq_classifier(data, width=32, lyapunov_hidden=(32,), center="residual", alpha=0.1)
    >>> x = data.images[:4]
    >>> model(x).shape
    torch.Size([4, 10])
    >>> report = certificate_check(model, x, steps=5)   # the model's own solver iterates, and the nominal control
    >>> report["map"].split(" iterates")[0], sorted(report["nominal"])[:3]
    ('anderson', ['V_final', 'V_initial', 'converged'])
"""

from __future__ import annotations

import inspect
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import orthogonal as _orthogonal

from .._validate import check_callable, check_choice, check_dataset_like, check_fraction, check_int, check_positive
from ..cells import DEQClassifier, conv_classifier, mlp_classifier
from ..lyapunov import LyapunovFunction, stable_projection

__all__ = [
    "CENTERS",
    "READOUTS",
    "LyapunovStableCell",
    "orthogonal_linear",
    "orthogonal_head",
    "LyaDEQClassifier",
    "lyadeq_classifier",
]

#: Where the Lyapunov function is centred: on the latent origin (Manek & Kolter) or on the residual f(z, u) - z.
CENTERS = ("origin", "residual")
#: Heads after the DEQ: orthogonal then linear (default), or the orthogonal map as the classifier itself.
READOUTS = ("orthogonal+linear", "orthogonal")

_BUILDERS = {"mlp": mlp_classifier, "conv": conv_classifier}


def _check_settings(center: Any, alpha: Any, h: Any, where: str) -> Tuple[str, float, float]:
    """``(center, alpha, h)`` checked: one of :data:`CENTERS`, a rate > 0, an Euler step in (0, 1]."""
    return (
        check_choice(center, "center", where, CENTERS),
        check_positive(alpha, "alpha", where),
        check_fraction(h, "h", where),
    )


class LyapunovStableCell(nn.Module):
    """The DEQ cell ``z <- z + h F̂(z, u)``: an Euler step of the Lyapunov-stable projection of ``F = f(z, u) - z``.

    A drop-in cell for :class:`~deqlib.deq.DEQ`: solvers, the ``"ift"`` / ``"phantom"`` / ``"unroll"`` gradients,
    trajectories and diagnostics work unchanged. The maths of the two centrings: the module docstring and
    ``experiments/results/lyadeq_reconstruction.md``.

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
        TypeError: ``cell`` or ``lyapunov`` not callable, or a setting of the wrong type.
        ValueError: unknown ``center``, ``alpha <= 0``, ``h`` outside (0, 1]; when called, a ``lyapunov`` that does not
            return ``(N,)`` values.

    Example:
        >>> from deqlib.cells import MLPCell
        >>> from deqlib.deq import DEQ
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
        where = "LyapunovStableCell"
        self.cell = check_callable(cell, "cell", where, "as cell(z, u)")
        self.lyapunov = check_callable(lyapunov, "lyapunov", where, "as V(z) -> (N,)")
        self.center, self.alpha, self.h = _check_settings(center, alpha, h, where)

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
    def nominal_step(self, z: Tensor, u: Tensor) -> Tensor:
        """The same Euler step WITHOUT the projection: ``z + h (f(z, u) - z)`` (``f(z, u)`` itself for ``h = 1``).

        The control map of :func:`~deqlib.defenses.lyadeq_checks.certificate_check`; no graph.
        """
        fz = self.cell(z, u)
        return fz if self.h == 1.0 else z + self.h * (fz - z)

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
    in_features = check_int(in_features, "in_features", "orthogonal_linear", minimum=1)
    out_features = in_features if out_features is None else out_features
    out_features = check_int(out_features, "out_features", "orthogonal_linear", minimum=1)
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
    readout = check_choice(readout, "readout", "orthogonal_head", READOUTS)
    pre = nn.Flatten() if pre is None else pre
    if readout == "orthogonal":
        if features not in (None, num_classes):
            raise ValueError(
                f"orthogonal_head: readout='orthogonal' maps to the classes: features must be None or {num_classes}"
            )
        return nn.Sequential(pre, orthogonal_linear(in_features, num_classes))
    features = in_features if features is None else features
    return nn.Sequential(pre, orthogonal_linear(in_features, features), nn.Linear(features, num_classes))


class LyaDEQClassifier(DEQClassifier):
    """[0, 1] images → normalise → injection → DEQ with a :class:`LyapunovStableCell` → head → logits.

    A :class:`~deqlib.cells.DEQClassifier` whose cell is the Lyapunov-stable wrapper of the nominal ``cell`` and whose
    head should contain an orthogonal layer (see :func:`orthogonal_head`; :func:`lyadeq_classifier` builds both).
    ``forward``, ``inject``, ``logits_from_state`` and ``solve`` are the parent's.

    Args:
        injection, head, image_shape, mean, std, deq_options: as for :class:`~deqlib.cells.DEQClassifier`.
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

    The injection and nominal cell are those of :func:`~deqlib.cells.mlp_classifier` /
    :func:`~deqlib.cells.conv_classifier` (their options, e.g. ``width``, ``channels``, ``weight_scale``, pass through
    ``kwargs``); the cell is wrapped in a :class:`LyapunovStableCell` with a :class:`~deqlib.lyapunov.LyapunovFunction`
    on the state space (``LyapunovFunction(n_state, lyapunov_hidden, lyapunov_activation, lyapunov_d, lyapunov_eps)``);
    the head is :func:`orthogonal_head` (the conv model average-pools the state to 2x2 first, as ``conv_classifier``).
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
    where = "lyadeq_classifier"
    check_dataset_like(dataset, where)
    kind = check_choice(kind, "classifier kind", where, tuple(_BUILDERS))
    _check_settings(center, alpha, h, where)
    base, deq_kw = _nominal_classifier(dataset, kind, kwargs)
    with torch.no_grad():
        state = base.injection(torch.zeros(1, *tuple(dataset.image_shape)))
    n_state, hidden = int(state[0].numel()), lyapunov_hidden
    lyap = LyapunovFunction(n_state, hidden=hidden, activation=lyapunov_activation, d=lyapunov_d, eps=lyapunov_eps)
    head = _stable_head(kind, state, int(dataset.num_classes), features, readout)
    settings = dict(alpha=alpha, h=h, center=center, image_shape=tuple(dataset.image_shape))
    return LyaDEQClassifier(
        base.injection, base.deq.cell, lyap, head, mean=dataset.mean, std=dataset.std, **settings, **deq_kw
    )


def _nominal_classifier(dataset: Any, kind: str, kwargs: dict) -> Tuple[DEQClassifier, dict]:
    """The nominal ``mlp_classifier`` / ``conv_classifier`` for the data set, and the kwargs left for the DEQ."""
    builder = _BUILDERS[kind]
    own = _builder_options(builder)
    model_kw = {k: v for k, v in kwargs.items() if k in own}
    deq_kw = {k: v for k, v in kwargs.items() if k not in own}
    image_shape, num_classes = tuple(dataset.image_shape), int(dataset.num_classes)
    return builder(image_shape, num_classes, mean=dataset.mean, std=dataset.std, **model_kw), deq_kw


def _stable_head(kind: str, state: Tensor, num_classes: int, features: Optional[int], readout: str) -> nn.Sequential:
    """:func:`orthogonal_head` on the flattened state (mlp) or on the state average-pooled to 2x2 (conv)."""
    if kind == "mlp":
        pre, n_head = nn.Flatten(), int(state[0].numel())
    else:
        pre, n_head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()), 4 * int(state.shape[1])
    return orthogonal_head(n_head, num_classes, features=features, readout=readout, pre=pre)
