"""Stability of an equilibrium in numbers: how fast the solver contracts and how far the input moves z*.

Taught in chapter 4. Three measurements of a DEQ classifier, per sample, without forming a dense Jacobian:

* :func:`input_sensitivity` — ‖∂z*/∂x‖₂, the largest singular value of dz*/dx = (I − J)⁻¹ ∂f/∂x (the implicit
  function theorem; J = ∂f/∂z at z*), by power iteration on (dz*/dx)ᵀ(dz*/dx) with Jacobian-vector and
  vector-Jacobian products and two linear solves per step (w = J w + b, solved as a fixed point by Anderson);
  it also returns the input direction that moves z* most. This is the bridge from stability in z to
  robustness in x: to first order an L2 perturbation of size δ moves z* by at most ‖∂z*/∂x‖₂ δ.
* :func:`residual_decay_rate` — the geometric rate at which a solver's residual fell, from its trace.
* :func:`segment_scan` — solve along the segment from one input to another (e.g. a digit and its adversarial
  example) and track ρ(J) and the jump ‖z*(x_t) − z*(x_{t−1})‖: chapter 1's fold on a trained model;
  :func:`weight_scale_scan` does the same along a scale s of the cell's weights (f_s = the cell with s·θ), and
  :func:`hysteresis_gap` tells a fold (two equilibria coexist: continuation from either end disagrees) from a
  steep but single-valued branch; :func:`segment_jumps` screens many segments at once (no ρ(J)).

The spectral radius itself is :func:`deqlib.diagnostics.spectral_radius`.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ._validate import check_deq_classifier, check_images, check_int, check_positive, check_tensor
from .diagnostics import spectral_radius
from .solvers import get_solver, quiet_convergence

__all__ = [
    "input_sensitivity",
    "residual_decay_rate",
    "segment_scan",
    "weight_scale_scan",
    "hysteresis_gap",
    "segment_jumps",
]


def _per_sample_norm(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


def _normalise(t: Tensor) -> Tensor:
    view = (t.shape[0],) + (1,) * (t.dim() - 1)
    return t / _per_sample_norm(t).clamp_min(1e-30).view(view)


class _Products:
    """J w, Jᵀ h, (∂f/∂x) v and (∂f/∂x)ᵀ h at one equilibrium, from one graph of f (no dense matrix)."""

    def __init__(self, model: nn.Module, x: Tensor, z_star: Tensor) -> None:
        self.x_in = x.detach().clone().requires_grad_()
        self.z_in = z_star.detach().clone().requires_grad_()
        self.out = model.deq.cell(self.z_in, model.inject(self.x_in))
        # the double-vjp trick: the vjp is linear in h, so its own vjp w.r.t. h is a jvp
        self.h = torch.zeros_like(self.out, requires_grad=True)
        self.vjp_z, self.vjp_x = torch.autograd.grad(self.out, (self.z_in, self.x_in), self.h, create_graph=True)

    def jt(self, h: Tensor) -> Tensor:
        return torch.autograd.grad(self.out, self.z_in, h, retain_graph=True)[0]

    def fxt(self, h: Tensor) -> Tensor:
        return torch.autograd.grad(self.out, self.x_in, h, retain_graph=True)[0]

    def j(self, w: Tensor) -> Tensor:
        return torch.autograd.grad(self.vjp_z, self.h, w, retain_graph=True)[0]

    def fx(self, v: Tensor) -> Tensor:
        return torch.autograd.grad(self.vjp_x, self.h, v, retain_graph=True)[0]


def _linear_solve(apply: Callable[[Tensor], Tensor], b: Tensor, tol: float, max_iter: int) -> Tuple[Tensor, Tensor]:
    """w = apply(w) + b per sample (i.e. (I − A) w = b) by Anderson; (w, converged)."""
    with quiet_convergence():  # non-convergence is reported in the result, not warned
        w, info = get_solver("anderson")(lambda w: apply(w) + b, b.clone(), tol=tol, max_iter=max_iter, m=8)
    return w, info.converged


def input_sensitivity(
    model: nn.Module,
    x: Tensor,
    *,
    z_star: Optional[Tensor] = None,
    n_iter: int = 30,
    tol: float = 1e-6,
    max_iter: int = 200,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, Tensor]:
    """‖∂z*/∂x‖₂ per sample: the largest singular value of dz*/dx = (I − J)⁻¹ ∂f/∂x, by power iteration.

    Each step applies A = dz*/dx and then Aᵀ: a Jacobian-vector product with ∂f/∂x and a linear solve
    w = J w + (∂f/∂x) v, then a solve h = Jᵀ h + A v and a vector-Jacobian product (∂f/∂x)ᵀ h. x is the image
    in [0, 1] (the model's normalisation and injection are part of ∂f/∂x). No graph is kept.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        x: images (N, C, H, W) in [0, 1].
        z_star: the equilibria of x (default: solved here with the model's solver).
        n_iter: power iterations (>= 2).
        tol, max_iter: of the linear solves (relative residual, Anderson).
        generator: optional CPU RNG for the start vectors.

    Returns:
        ``sigma`` (N,) the estimates, ``direction`` (N, C, H, W) unit input directions v with
        ‖A v‖ ≈ sigma, ``z_star`` the equilibria used, ``converged`` (N,) bool: every linear solve of the
        sample met ``tol``.

    Example:
        >>> from deqlib.cells import mlp_classifier
        >>> model = mlp_classifier((1, 4, 4), 3, mean=(0.5,), std=(0.5,), width=8)
        >>> out = input_sensitivity(model, torch.rand(2, 1, 4, 4), n_iter=5)
        >>> tuple(out["sigma"].shape), bool(out["converged"].all())
        ((2,), True)
    """
    where = "input_sensitivity"
    check_deq_classifier(model, where)
    x = check_images(x, where)
    n_iter = check_int(n_iter, "n_iter", where, minimum=2)
    tol = check_positive(tol, "tol", where)
    max_iter = check_int(max_iter, "max_iter", where, minimum=1)
    if z_star is None:
        z_star, _ = model.solve(x, record=False)
    check_tensor(z_star, "z_star", where, floating=True, batch=True)
    if z_star.shape[0] != x.shape[0]:
        raise ValueError(f"{where}: z_star has {z_star.shape[0]} samples, x has {x.shape[0]}")
    with torch.enable_grad():
        p = _Products(model, x, z_star)
        v = _normalise(torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device))
        ok = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        sigma = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for _ in range(n_iter):
            av, c1 = _linear_solve(p.j, p.fx(v), tol, max_iter)
            sigma = _per_sample_norm(av)
            h, c2 = _linear_solve(p.jt, av, tol, max_iter)
            v = _normalise(p.fxt(h))
            ok = ok & c1 & c2
    return {"sigma": sigma.detach(), "direction": v.detach(), "z_star": z_star.detach(), "converged": ok}


def residual_decay_rate(info: Any, *, skip: int = 1) -> Tensor:
    """The geometric decay rate of each sample's residual: (r_last / r_first)^(1 / (steps between)).

    Read from the solver's trace (``info.trace``, NaN after a sample stopped); the first ``skip`` entries are
    left out (the first step from z_0 = 0 is not typical). For the plain iteration z ← f(z) the rate tends to
    ρ(J) near the fixed point; for Anderson it is the accelerated rate. NaN for a sample with fewer than two
    usable entries.

    Args:
        info: a :class:`~deqlib.solvers.SolverInfo`.
        skip: leading trace entries to ignore (>= 0).

    Returns:
        (N,) rates (< 1: the residual fell).

    Example:
        >>> from deqlib.solvers import fixed_point
        >>> f = lambda z: 0.5 * z + 1.0
        >>> _, info = fixed_point(f, torch.zeros(1, 3), tol=1e-6, max_iter=100, stop_mode="abs")
        >>> round(residual_decay_rate(info).item(), 3)
        0.5
    """
    trace = getattr(info, "trace", None)
    if not isinstance(trace, Tensor) or trace.dim() != 2:
        raise TypeError(
            f"residual_decay_rate: info must be a SolverInfo with a (N, K) trace, got {type(info).__name__}"
        )
    skip = check_int(skip, "skip", "residual_decay_rate", minimum=0)
    t = trace[:, skip:].double()
    valid = torch.isfinite(t) & (t > 0)
    count = valid.sum(dim=1)
    idx = torch.arange(t.shape[1], device=t.device).expand_as(t)
    first = torch.where(valid, idx, t.shape[1]).min(dim=1).values.clamp_max(t.shape[1] - 1)
    last = torch.where(valid, idx, -1).max(dim=1).values.clamp_min(0)
    r_first, r_last = t.gather(1, first[:, None])[:, 0], t.gather(1, last[:, None])[:, 0]
    span = (last - first).double()
    rate = torch.exp(torch.log(r_last / r_first) / span.clamp_min(1))
    return torch.where((count >= 2) & (span > 0), rate, torch.full_like(rate, float("nan"))).float()


@torch.no_grad()
def segment_scan(model: nn.Module, x_from: Tensor, x_to: Tensor, n_points: int = 41, **solver_overrides: Any) -> Dict:
    """Solve along x_t = (1 − t) x_from + t x_to, t in [0, 1]: ρ(J), the jump of z*, convergence and predictions.

    Each x_t is solved from the model's initial state (as deployed, no warm start). A fold shows as ρ(J)
    reaching 1 and a jump ‖z*(x_t) − z*(x_{t−1})‖ much larger than its neighbours.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        x_from, x_to: one image each, (1, C, H, W) or (C, H, W), in [0, 1].
        n_points: points on the segment (>= 2).
        **solver_overrides: solver settings for these solves (e.g. ``max_iter=100``).

    Returns:
        ``t`` (n_points,), ``rho`` (n_points,), ``jump`` (n_points,; 0 at t = 0), ``steps``, ``converged``,
        ``residual``, ``prediction`` (n_points,), ``z_star`` ``(n_points, *state)``.
    """
    where = "segment_scan"
    check_deq_classifier(model, where)
    n_points = check_int(n_points, "n_points", where, minimum=2)
    t, xs = _segment(x_from, x_to, n_points, where)
    u = model.inject(xs)
    z, info = model.deq.solve(u, record=False, **solver_overrides)
    rho = spectral_radius(lambda s: model.deq.cell(s, u), z)
    jump = torch.cat([torch.zeros(1, dtype=z.dtype, device=z.device), _per_sample_norm(z[1:] - z[:-1])])
    return {
        "t": t,
        "rho": rho,
        "jump": jump,
        "steps": info.steps,
        "converged": info.converged,
        "residual": info.residual,
        "prediction": model.logits_from_state(z).argmax(dim=1),
        "z_star": z,
    }


@torch.no_grad()
def weight_scale_scan(model: nn.Module, x: Tensor, scales: Sequence[float], **solver_overrides: Any) -> Dict:
    """Solve one input with the cell's parameters multiplied by each scale s: ρ(J), the jump of z*, convergence.

    The model itself is not changed (a copy of the cell is scaled). For an MLP cell tanh(W z + u) this is the
    weight scale of chapter 1: as s grows, ρ(J) at the equilibrium grows, and where it reaches 1 the
    equilibrium followed from z_0 may jump (a fold) or the solver may stop converging.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        x: one image, (1, C, H, W), in [0, 1].
        scales: the scales s, in the order of the path (at least 2).
        **solver_overrides: solver settings for these solves (e.g. ``max_iter=200``).

    Returns:
        ``scale``, ``rho``, ``jump`` (0 at the first scale), ``steps``, ``converged``, ``residual``, ``prediction``.
    """
    where = "weight_scale_scan"
    check_deq_classifier(model, where)
    x = check_images(x, where)
    if x.shape[0] != 1:
        raise ValueError(f"{where}: x must be one image (1, C, H, W), got {tuple(x.shape)}")
    scales = [check_positive(s, "each scale", where) for s in scales]
    if len(scales) < 2:
        raise ValueError(f"{where}: give at least 2 scales, got {len(scales)}")
    u = model.inject(x)
    deq = copy.deepcopy(model.deq)
    base = [p.detach().clone() for p in deq.cell.parameters()]
    rows: Dict[str, list] = {k: [] for k in ("rho", "z", "steps", "converged", "residual", "prediction")}
    for s in scales:
        for p, b in zip(deq.cell.parameters(), base):
            p.copy_(s * b)
        z, info = deq.solve(u, record=False, **solver_overrides)
        rows["rho"].append(spectral_radius(lambda v: deq.cell(v, u), z)[0])
        rows["z"].append(z[0])
        for k in ("steps", "converged", "residual"):
            rows[k].append(getattr(info, k)[0])
        rows["prediction"].append(model.logits_from_state(z).argmax(dim=1)[0])
    z = torch.stack(rows.pop("z"))
    jump = torch.cat([torch.zeros(1, dtype=z.dtype, device=z.device), _per_sample_norm(z[1:] - z[:-1])])
    out = {k: torch.stack(v) for k, v in rows.items()}
    return {"scale": torch.tensor(scales, dtype=z.dtype), "jump": jump, **out}


def _segment(x_from: Tensor, x_to: Tensor, n_points: int, where: str) -> Tuple[Tensor, Tensor]:
    ends = []
    for name, v in (("x_from", x_from), ("x_to", x_to)):
        v = check_tensor(v, name, where, floating=True)
        v = v[None] if v.dim() == 3 else v
        if v.dim() != 4 or v.shape[0] != 1:
            raise ValueError(f"{where}: {name} must be one image, (1, C, H, W) or (C, H, W), got {tuple(v.shape)}")
        ends.append(check_images(v, where, name))
    t = torch.linspace(0, 1, n_points, dtype=ends[0].dtype, device=ends[0].device)
    return t, (1 - t.view(-1, 1, 1, 1)) * ends[0] + t.view(-1, 1, 1, 1) * ends[1]


@torch.no_grad()
def hysteresis_gap(
    model: nn.Module, x_from: Tensor, x_to: Tensor, n_points: int = 41, **solver_overrides: Any
) -> Dict[str, Tensor]:
    """Follow the equilibrium along x_t by continuation from each end; their gap shows a fold.

    Forward: solve x_0 from the model's initial state, then each x_t from the equilibrium of x_{t−1}; backward:
    the same from x_1 down to x_0. On a single-valued branch both find the same z*(x_t) (gap at the solver's
    tolerance); across a fold they follow different branches over an interval of t (hysteresis), and the gap
    is of the size of the jump. N segments are followed at once (the solver stops per sample).

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        x_from, x_to: (N, C, H, W) images in [0, 1] (or one image, (C, H, W)).
        n_points: points per segment (>= 2).
        **solver_overrides: solver settings (e.g. ``max_iter=200, tol=1e-6``).

    Returns:
        ``t`` (n_points,), ``gap`` (N, n_points) ‖z_forward(t) − z_backward(t)‖, ``converged`` (N, n_points) both
        solves of the point converged, ``z_forward`` and ``z_backward`` ``(N, n_points, *state)``.
    """
    where = "hysteresis_gap"
    check_deq_classifier(model, where)
    n_points = check_int(n_points, "n_points", where, minimum=2)
    a, b = (v[None] if isinstance(v, Tensor) and v.dim() == 3 else v for v in (x_from, x_to))
    a, b = check_images(a, where, "x_from"), check_images(b, where, "x_to")
    if a.shape != b.shape:
        raise ValueError(f"{where}: x_from and x_to must have the same shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    t = torch.linspace(0, 1, n_points, dtype=a.dtype, device=a.device)
    out = {}
    for name, order in (("forward", range(n_points)), ("backward", range(n_points - 1, -1, -1))):
        z, zs, ok = None, [None] * n_points, [None] * n_points
        for i in order:
            z, info = model.deq.solve(model.inject((1 - t[i]) * a + t[i] * b), z, record=False, **solver_overrides)
            zs[i], ok[i] = z, info.converged
        out[name] = (torch.stack(zs, dim=1), torch.stack(ok, dim=1))
    (zf, cf), (zb, cb) = out["forward"], out["backward"]
    gap = (zf - zb).reshape(a.shape[0], n_points, -1).norm(dim=-1)
    return {"t": t, "gap": gap, "converged": cf & cb, "z_forward": zf, "z_backward": zb}


@torch.no_grad()
def segment_jumps(
    model: nn.Module, x_from: Tensor, x_to: Tensor, n_points: int = 21, **solver_overrides: Any
) -> Dict[str, Tensor]:
    """Screen N segments x_from[i] -> x_to[i] at once: the jumps of z* between neighbouring points, in one solve.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        x_from, x_to: (N, C, H, W) images in [0, 1].
        n_points: points per segment (>= 2).
        **solver_overrides: solver settings.

    Returns:
        ``jump`` (N, n_points − 1), ``ratio`` (N,) largest jump over the median jump, ``converged``
        (N, n_points).
    """
    where = "segment_jumps"
    check_deq_classifier(model, where)
    a, b = check_images(x_from, where, "x_from"), check_images(x_to, where, "x_to")
    if a.shape != b.shape:
        raise ValueError(f"{where}: x_from and x_to must have the same shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    n_points = check_int(n_points, "n_points", where, minimum=2)
    t = torch.linspace(0, 1, n_points, dtype=a.dtype, device=a.device).view(1, -1, *([1] * (a.dim() - 1)))
    xs = ((1 - t) * a[:, None] + t * b[:, None]).reshape(-1, *a.shape[1:])
    z, info = model.deq.solve(model.inject(xs), record=False, **solver_overrides)
    z = z.reshape(a.shape[0], n_points, -1)
    jump = (z[:, 1:] - z[:, :-1]).norm(dim=-1)
    ratio = jump.max(dim=1).values / jump.median(dim=1).values.clamp_min(1e-12)
    return {"jump": jump, "ratio": ratio, "converged": info.converged.reshape(a.shape[0], n_points)}
