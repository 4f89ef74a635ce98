"""What a LyaDEQ reading changes, measured: stability w.r.t. the initial state vs sensitivity w.r.t. the input.

Taught in chapter 6 (``notebooks/06_lyapunov_stability_and_lyadeq.ipynb``). Lyapunov stability of ``z*`` says that a
perturbation of the INITIAL STATE dies out; an adversary perturbs the INPUT. These functions measure both, on the state
each model's head actually reads, for every reading of chapter 6 (a DEQ or LyaDEQ classifier, a
:class:`~deqlib.defenses.HorizonClassifier`, a :class:`~deqlib.defenses.OneShotLyapunovClassifier`), and compare a
model with its Lyapunov part removed.

API:
    * :func:`state_read` — the state the head reads, and :func:`state_from` the same from another initial state.
    * :func:`initial_state_stability` — ``||Δ z_read|| / ||δ||`` for a perturbation ``δ`` of the initial state.
    * :func:`input_state_sensitivity` — ``||Δ z_read|| / ||δ||`` and the logit change for a random input step.
    * :func:`input_jacobian_norm` — ``||∂z_read/∂x||₂`` per sample (power iteration on the exact gradient).
    * :func:`without_lyapunov` — a copy with the projection or correction removed (the same other weights).
    * :func:`function_agreement` — how often two models agree, and their largest logit difference.
"""

from __future__ import annotations

import copy
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from .._validate import check_int, check_positive
from ..cells import DEQClassifier
from .horizon import EulerCell, HorizonClassifier
from .lyadeq import LyapunovStableCell
from .one_shot import OneShotLyapunovClassifier

__all__ = [
    "state_read",
    "state_from",
    "initial_state_stability",
    "input_state_sensitivity",
    "input_jacobian_norm",
    "without_lyapunov",
    "function_agreement",
]


def _kind(model: nn.Module, where: str) -> str:
    for cls, name in ((HorizonClassifier, "horizon"), (OneShotLyapunovClassifier, "one_shot"), (DEQClassifier, "deq")):
        if isinstance(model, cls):
            return name
    raise TypeError(
        f"{where}: a DEQ classifier, HorizonClassifier or OneShotLyapunovClassifier, got {type(model).__name__}"
    )


def _injection_and_start(model: nn.Module, x: Tensor) -> tuple:
    kind = _kind(model, "state_from")
    if kind == "horizon":
        u = model.inject(x)
        return u, model.initial_state(u)
    deq_model = model.base if kind == "one_shot" else model
    u = deq_model.inject(x)
    return u, deq_model.deq.initial_state(u)


@torch.no_grad()
def state_from(model: nn.Module, x: Tensor, dz0: Optional[Tensor] = None) -> Tensor:
    """The state the head reads for images ``x``, started from the model's initial state plus ``dz0``."""
    u, z0 = _injection_and_start(model, x)
    if dz0 is not None:
        z0 = z0 + dz0
    kind = _kind(model, "state_from")
    if kind == "horizon":
        z, drive = z0, model.injection_scale * u
        for _ in range(model.steps):
            z = model.step(z, drive)
        return z
    deq_model = model.base if kind == "one_shot" else model
    z, _ = deq_model.deq.solve(u, z0=z0, record=False)
    return model.correction(z) if kind == "one_shot" else z


def state_read(model: nn.Module, x: Tensor) -> Tensor:
    """The state the head reads (``z*``, ``z_K``, or the corrected ``z*``), without a graph."""
    return state_from(model, x)


def _flat_norm(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


def initial_state_stability(model: nn.Module, x: Tensor, radius: float = 1.0, draws: int = 4, seed: int = 0) -> Dict:
    """Perturb the initial state by random directions of norm ``radius``; how much of it survives in the state read.

    Returns:
        ``{"ratio": mean ||Δ z_read|| / radius, "ratio_max", "radius", "draws"}``: 0 for a state that forgets its
        start (a converged DEQ, an attractor), ~1 for one that carries it through.
    """
    radius = check_positive(radius, "radius", "initial_state_stability")
    draws = check_int(draws, "draws", "initial_state_stability", minimum=1)
    ref = state_read(model, x)
    g = torch.Generator().manual_seed(seed)
    _, z0 = _injection_and_start(model, x)
    ratios = []
    for _ in range(draws):
        d = torch.randn(z0.shape, generator=g, dtype=z0.dtype).to(z0.device)
        d = radius * d / _flat_norm(d).reshape((-1,) + (1,) * (d.dim() - 1))
        ratios.append(_flat_norm(state_from(model, x, d) - ref) / radius)
    r = torch.stack(ratios)
    return {"ratio": float(r.mean()), "ratio_max": float(r.max()), "radius": radius, "draws": draws}


def input_state_sensitivity(model: nn.Module, x: Tensor, eps: float = 0.01, draws: int = 4, seed: int = 0) -> Dict:
    """Random sign steps ``δ`` of L-infinity size ``eps`` on the input (clipped to [0, 1]): the change of the state
    read and of the logits per unit ``||δ||₂``.

    Returns:
        ``{"state_ratio": mean ||Δ z_read|| / ||δ||, "logit_ratio": mean ||Δ logits|| / ||δ||, "eps", "draws"}``.
    """
    eps = check_positive(eps, "eps", "input_state_sensitivity")
    draws = check_int(draws, "draws", "input_state_sensitivity", minimum=1)
    g = torch.Generator().manual_seed(seed)
    ref = state_read(model, x)
    with torch.no_grad():
        ref_logits = model(x)
    s, lg = [], []
    for _ in range(draws):
        sign = torch.randint(0, 2, x.shape, generator=g).to(x) * 2 - 1
        xp = (x + eps * sign).clamp(0, 1)
        dx = _flat_norm(xp - x).clamp_min(1e-12)
        s.append(_flat_norm(state_read(model, xp) - ref) / dx)
        with torch.no_grad():
            lg.append(_flat_norm(model(xp) - ref_logits) / dx)
    return {
        "state_ratio": float(torch.stack(s).mean()),
        "logit_ratio": float(torch.stack(lg).mean()),
        "eps": eps,
        "draws": draws,
    }


def _differentiable_read(model: nn.Module, x: Tensor) -> Tensor:
    """The state read, differentiable twice: the horizon unrolled, ``∇V`` exact, a DEQ's solver unrolled (at a
    converged equilibrium its derivative is the implicit one; the IFT backward itself is not differentiable)."""
    kind = _kind(model, "input_jacobian_norm")
    if kind == "horizon":
        grad, model.grad = model.grad, "unroll"
        try:
            return model.run(model.inject(x))[-1]
        finally:
            model.grad = grad
    deq_model = model.base if kind == "one_shot" else model
    grad, deq_model.deq.grad = deq_model.deq.grad, "unroll"
    try:
        if kind == "one_shot":
            return model.correction(model.equilibrium(x), exact=True)
        return model.deq(model.inject(x))
    finally:
        deq_model.deq.grad = grad


def input_jacobian_norm(model: nn.Module, x: Tensor, n_iter: int = 20, seed: int = 0) -> Dict:
    """``||∂z_read/∂x||₂`` per sample, the largest singular value of the Jacobian of the state the head reads with
    respect to the image, by power iteration on ``Jᵀ J`` (vector-Jacobian products, and Jacobian-vector products
    by double back-propagation) through the unrolled solver or horizon and the exact ``∇V``. For a converged DEQ
    this is :func:`deqlib.sensitivity.input_sensitivity`'s ``||∂z*/∂x||`` (which solves the implicit linear systems
    instead); this function also covers the finite-horizon and one-shot readings.

    Returns:
        ``{"mean": the mean estimate, "sigma": per-sample estimates (list), "n_iter"}``.
    """
    n_iter = check_int(n_iter, "n_iter", "input_jacobian_norm", minimum=2)
    g = torch.Generator().manual_seed(seed)
    xx = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        z = _differentiable_read(model, xx)
        u = torch.zeros_like(z, requires_grad=True)
        (jt_u,) = torch.autograd.grad(z, xx, u, create_graph=True)  # Jᵀ u, linear in u
        v = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        sigma = torch.zeros(x.shape[0], dtype=x.dtype)
        for _ in range(n_iter):
            v = v / _flat_norm(v).clamp_min(1e-12).reshape((-1,) + (1,) * (v.dim() - 1))
            (jv,) = torch.autograd.grad(jt_u, u, v, retain_graph=True)  # J v
            sigma = _flat_norm(jv).detach()
            (v,) = torch.autograd.grad(z, xx, jv, retain_graph=True)  # Jᵀ J v
    return {"mean": float(sigma.mean()), "sigma": sigma.tolist(), "n_iter": n_iter}


def without_lyapunov(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with its Lyapunov part removed and every other weight kept: the projected step of a
    LyaDEQ or of an origin-centred horizon model replaced by the nominal step, a one-shot correction switched off.

    Raises:
        ValueError: the model has no Lyapunov part to remove.
    """
    twin = copy.deepcopy(model)
    kind = _kind(twin, "without_lyapunov")
    if kind == "one_shot" and twin.correct:
        twin.correct = False
    elif kind == "horizon" and isinstance(twin.step, LyapunovStableCell):
        twin.step = EulerCell(twin.step.cell, h=twin.step.h)
    elif kind == "deq" and isinstance(twin.deq.cell, LyapunovStableCell):
        if twin.deq.cell.h != 1.0:
            raise ValueError("without_lyapunov: a LyaDEQ with h != 1 has another fixed-point map without V")
        twin.deq.cell = twin.deq.cell.cell
    else:
        raise ValueError(f"without_lyapunov: {type(model).__name__} has no projection or correction to remove")
    return twin.eval()


@torch.no_grad()
def function_agreement(a: nn.Module, b: nn.Module, x: Tensor) -> Dict:
    """``{"agreement": fraction of equal predictions, "max_logit_diff": the largest |logit difference|}``."""
    la, lb = a(x), b(x)
    return {
        "agreement": float((la.argmax(1) == lb.argmax(1)).float().mean()),
        "max_logit_diff": float((la - lb).abs().max()),
    }
