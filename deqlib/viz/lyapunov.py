"""Chapter 6's 2-D toys: a nominal DEQ field, its Lyapunov projection (Manek & Kolter) and the Euler map.

The toy is ``f(z, u) = tanh(W z + u)`` on the plane, its continuous field ``F(z) = f(z, u) - z`` and the projected
field ``F̂ = F - ∇V_c · ReLU(∇V_cᵀ F + α V_c) / ||∇V_c||²`` (:func:`~deqlib.lyapunov.stable_projection`), where
``V`` is a :class:`~deqlib.lyapunov.LyapunovFunction` and ``V_c`` its centring: ``V_c(z) = V(z)`` (``"origin"``:
every trajectory ends at 0, whatever ``u``) or ``V_c(z) = V(F(z))`` (``"residual"``: the nominal fixed point is
kept). The DEQ iterates the Euler map ``z <- z + h F̂(z)``.

- :func:`~deqlib.viz.lyapunov_toy` — the toy (a :class:`~deqlib.viz.LyapunovToy`, shared by the figures and
  :func:`deqlib.widgets.lyapunov_explorer`);
- :func:`~deqlib.viz.plot_lyapunov_panel` — one field, ``V_c``'s level sets, Euler trajectories (the explorer's);
- :func:`~deqlib.viz.plot_lyapunov_fields` — nominal, origin and residual side by side;
- :func:`~deqlib.viz.discrete_decrease`, :func:`~deqlib.viz.plot_decrease_curves`,
  :func:`~deqlib.viz.plot_discrete_decrease` — ``V_c`` along the Euler iterates against the continuous-time
  bound, and the violations of ``V_c(z_{k+1}) <= (1 - αh) V_c(z_k)``;
- :func:`~deqlib.viz.icnn_lyapunov_checks`, :func:`~deqlib.viz.plot_icnn_lyapunov` — the ICNN-based ``V`` is
  convex with its minimum at 0;
- :func:`~deqlib.viz.lyapunov_small_multiples` — the static twin of the explorer (centrings x step sizes).
"""

# size: one chapter's toy and its five figures with their checks (about half of it docstrings), kept together
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ..lyapunov import LyapunovFunction, lyapunov_decrease, stable_projection
from ._common import ArrayLike, as_tensor, new_axes, plane_grid, to_numpy
from .style import PALETTE, SEQUENTIAL_CMAP
from .toys import plot_vector_field
from .trajectories import plot_trajectories_2d

__all__ = [
    "CENTRES",
    "LyapunovToy",
    "lyapunov_toy",
    "plot_lyapunov_panel",
    "plot_lyapunov_fields",
    "discrete_decrease",
    "plot_decrease_curves",
    "plot_discrete_decrease",
    "icnn_lyapunov_checks",
    "plot_icnn_lyapunov",
    "lyapunov_small_multiples",
]

#: The centrings of the projection: none (the nominal field), on the origin, on the residual.
CENTRES = ("none", "origin", "residual")
#: The toy's weight: a scaled rotation, spectral norm 1.42 (the plain iteration is not a contraction).
DEFAULT_WEIGHT = ((0.9, -1.1), (1.1, 0.9))
#: Starts on a circle of radius 1.6 around 0.
DEFAULT_STARTS = tuple((1.6 * math.cos(a), 1.6 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 6, endpoint=False))
_TITLES = {"none": "nominal $F$", "origin": r"origin: $V_c = V(z)$", "residual": r"residual: $V_c = V(F(z))$"}


@dataclasses.dataclass(frozen=True)
class LyapunovToy:
    """A 2-D DEQ ``f(z, u) = tanh(W z + u)``, a Lyapunov function ``V`` and a centring of the projection.

    Build it with :func:`lyapunov_toy`; change one setting with ``dataclasses.replace(toy, centre="residual")``
    (``V`` is shared). All maps take and return ``(N, 2)`` float64 tensors.
    """

    weight: Tensor
    u: Tensor
    V: LyapunovFunction
    alpha: float
    centre: str
    h: float

    def f(self, z: Tensor) -> Tensor:
        """The DEQ map ``tanh(W z + u)``."""
        return torch.tanh(z @ self.weight.T + self.u)

    def nominal(self, z: Tensor) -> Tensor:
        """The nominal field ``F(z) = f(z, u) - z``."""
        return self.f(z) - z

    def certificate(self, z: Tensor, with_grad: bool = False):
        """``V_c(z)``, ``(N,)``: ``V(z)`` for ``"origin"``, ``V(F(z))`` otherwise; with ``∇V_c`` if ``with_grad``."""
        if self.centre == "origin" and not with_grad:
            return self.V(z).detach()
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            v = self.V(zz) if self.centre == "origin" else self.V(self.nominal(zz))
            if not with_grad:
                return v.detach()
            (grad,) = torch.autograd.grad(v.sum(), zz)
        return v.detach(), grad

    def field(self, z: Tensor) -> Tensor:
        """The field iterated: ``F`` for ``"none"``, the projected ``F̂`` otherwise."""
        F = self.nominal(z)
        if self.centre == "none":
            return F
        v, grad = self.certificate(z, with_grad=True)
        return stable_projection(F, v, grad, self.alpha)

    @torch.no_grad()
    def euler(self, z0: ArrayLike, n_steps: int, h: Optional[float] = None) -> Tensor:
        """The Euler iterates ``z_{k+1} = z_k + h F̂(z_k)``, ``(n_steps + 1, N, 2)`` (``h`` defaults to the toy's)."""
        h = self.h if h is None else float(h)
        z = as_tensor(z0).to(torch.float64).reshape(-1, 2)
        states = [z]
        for _ in range(int(n_steps)):
            z = z + h * self.field(z)
            states.append(z)
        return torch.stack(states)

    @torch.no_grad()
    def fixed_point(self, tol: float = 1e-12, max_iter: int = 10_000) -> Tensor:
        """The nominal fixed point ``z* = f(z*, u)``, ``(2,)``, by the damped iteration ``z <- (z + f(z)) / 2``."""
        z = torch.zeros(1, 2, dtype=torch.float64)
        for _ in range(max_iter):
            z_next = 0.5 * (z + self.f(z))
            if float((z_next - z).norm()) < tol:
                return z_next[0]
            z = z_next
        raise RuntimeError("LyapunovToy.fixed_point: the damped iteration did not converge")

    def target(self) -> Tensor:
        """Where the trajectories end: 0 for ``"origin"``, the nominal fixed point otherwise, ``(2,)``."""
        return torch.zeros(2, dtype=torch.float64) if self.centre == "origin" else self.fixed_point()


def lyapunov_toy(
    alpha: float = 0.5,
    centre: str = "origin",
    h: float = 0.3,
    u: Sequence[float] = (0.6, -0.4),
    *,
    weight: Sequence[Sequence[float]] = DEFAULT_WEIGHT,
    hidden: Sequence[int] = (16, 16),
    seed: int = 0,
) -> LyapunovToy:
    """The chapter's toy: ``f(z, u) = tanh(W z + u)``, an ICNN-based ``V`` (seeded) and one centring.

    Args:
        alpha: decay rate ``α`` of the projection, > 0.
        centre: one of :data:`CENTRES`.
        h: Euler step, in (0, 1] (``h = 1`` is the DEQ's own step where the projection is inactive).
        u: the input (a 2-vector); it moves the nominal fixed point.
        weight: the 2 x 2 matrix ``W``.
        hidden: hidden widths of the ICNN of ``V``.
        seed: the seed of ``V``'s initialisation.

    Returns:
        a :class:`LyapunovToy` in float64.
    """
    if centre not in CENTRES:
        raise ValueError(f"lyapunov_toy: centre must be one of {CENTRES}, got {centre!r}")
    if not (alpha > 0 and 0 < h <= 1):
        raise ValueError(f"lyapunov_toy: need alpha > 0 and h in (0, 1], got alpha={alpha}, h={h}")
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        V = LyapunovFunction(2, hidden=tuple(hidden)).double()
    V.requires_grad_(False)
    W = torch.as_tensor(weight, dtype=torch.float64)
    return LyapunovToy(W, torch.as_tensor(u, dtype=torch.float64), V, float(alpha), centre, float(h))


def _starts(z0: Optional[ArrayLike]) -> Tensor:
    return as_tensor(DEFAULT_STARTS if z0 is None else z0).to(torch.float64).reshape(-1, 2)


def _n_steps(h: float, horizon: float) -> int:
    return max(1, int(math.ceil(horizon / h - 1e-9)))


@torch.no_grad()
def _draw_levels(ax: Axes, toy: LyapunovToy, xlim: Tuple[float, float], ylim: Tuple[float, float], n: int) -> None:
    """``V_c``'s level sets at the 5 % .. 80 % quantiles of its grid values, coloured by level (viridis)."""
    gx, gy, pts = plane_grid(xlim, ylim, n)
    vals = to_numpy(toy.certificate(pts)).reshape(gx.shape)
    levels = np.unique(np.quantile(vals, [0.01, 0.04, 0.1, 0.2, 0.35, 0.55, 0.8]))
    ax.contour(gx, gy, vals, levels=levels, cmap=SEQUENTIAL_CMAP, linewidths=0.9, alpha=0.9, zorder=1)


def plot_lyapunov_panel(
    toy: LyapunovToy,
    z0: Optional[ArrayLike] = None,
    ax: Optional[Axes] = None,
    *,
    horizon: float = 12.0,
    xlim: Tuple[float, float] = (-2.0, 2.0),
    ylim: Tuple[float, float] = (-2.0, 2.0),
    title: Optional[str] = None,
    levels: bool = True,
) -> Tensor:
    """One field of the toy: its arrows, ``V_c``'s level sets and the Euler trajectories ``z <- z + h F̂(z)``.

    The nominal fixed point ``z*`` is an open diamond, the origin a cross.

    Args:
        toy: the toy (its ``centre``, ``alpha`` and ``h`` are used).
        z0: ``(N, 2)`` starts (default six points on a circle of radius 1.6).
        ax: the axes (default a new figure).
        horizon: the time ``h K`` simulated: ``K = ceil(horizon / h)`` steps.
        xlim, ylim: the window.
        title: the panel's title (default the centring and ``h``).
        levels: draw ``V_c``'s level sets.

    Returns:
        the trajectory, ``(K + 1, N, 2)``.
    """
    ax = new_axes(ax, (4.0, 4.0))
    traj = toy.euler(_starts(z0), _n_steps(toy.h, horizon))
    plot_vector_field(lambda z: z + toy.field(z), ax, xlim=xlim, ylim=ylim, n=15)
    if levels:
        _draw_levels(ax, toy, xlim, ylim, 81)
    plot_trajectories_2d(traj, ax, xlim=xlim, ylim=ylim, ms=1.5)
    star = to_numpy(toy.fixed_point())
    ax.plot(*star, "D", mfc="white", mec="black", ms=7, mew=1.2, zorder=6, label="nominal fixed point $z^\\star$")
    ax.plot(0, 0, "x", color="black", ms=8, mew=1.8, zorder=6, label="origin")
    ax.set_title(title if title is not None else f"{_TITLES[toy.centre]}, $h = {toy.h:g}$")
    return traj


def plot_lyapunov_fields(
    toy: LyapunovToy,
    z0: Optional[ArrayLike] = None,
    *,
    horizon: float = 12.0,
    xlim: Tuple[float, float] = (-2.0, 2.0),
    ylim: Tuple[float, float] = (-2.0, 2.0),
    figsize: Tuple[float, float] = (10.0, 3.9),
) -> Figure:
    """The nominal field, the origin-centred and the residual-centred projections side by side.

    Args:
        toy: the toy (its ``alpha``, ``h`` and ``u``; its ``centre`` is replaced in each panel).
        z0, horizon, xlim, ylim: as :func:`plot_lyapunov_panel`.
        figsize: the figure's size.

    Returns:
        the figure, three axes (``"none"``, ``"origin"``, ``"residual"``).
    """
    fig, axes = plt.subplots(1, 3, figsize=figsize, layout="constrained", sharey=True)
    for ax, centre in zip(axes, CENTRES):
        plot_lyapunov_panel(dataclasses.replace(toy, centre=centre), z0, ax, horizon=horizon, xlim=xlim, ylim=ylim)
    for ax in axes[1:]:
        ax.set_ylabel("")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=9.5)
    return fig


def _decrease_run(toy: LyapunovToy, starts: Tensor, horizon: float, floor: float) -> Dict[str, object]:
    """One ``h`` of :func:`discrete_decrease`."""
    h, alpha = toy.h, toy.alpha
    traj = toy.euler(starts, _n_steps(h, horizon))
    vals = torch.stack([toy.certificate(s) for s in traj])
    check = lyapunov_decrease(toy.certificate, traj, alpha, dt=h, rtol=1e-9, atol=floor)
    prev, nxt = vals[:-1], vals[1:]
    rel = ((nxt - (1 - alpha * h) * prev) / (alpha * h * prev.clamp_min(floor)))[prev > floor]
    times = h * torch.arange(len(vals), dtype=torch.float64)
    bound = vals[0] * torch.exp(-alpha * times)[:, None]
    tail = traj[(3 * (len(traj) - 1)) // 4 :]
    return dict(
        h=h,
        t=to_numpy(times),
        values=to_numpy(vals),
        violations=check["violations"],
        steps=check["steps"],
        max_relative_excess=float(rel.max()) if rel.numel() else float("nan"),
        above_bound=int((vals > bound * (1 + 1e-9)).sum()),
        ball_radius=float((tail - toy.target()).norm(dim=-1).max()),
    )


@torch.no_grad()
def discrete_decrease(
    toy: LyapunovToy,
    z0: Optional[ArrayLike] = None,
    hs: Sequence[float] = (0.05, 0.3, 1.0),
    *,
    horizon: float = 30.0,
    floor: float = 1e-12,
) -> Dict[str, object]:
    """``V_c`` along the Euler iterates for several step sizes, and how often the discrete check fails.

    The projection certifies ``dV_c/dt <= -α V_c`` for the ODE ``ż = F̂``. An Euler step where the projection is
    active lands on ``(1 - αh) V_c`` to first order, and the curvature of ``V_c`` adds ``O(h²)``: the step-wise
    check ``V_c(z_{k+1}) <= (1 - αh) V_c(z_k)`` (:func:`~deqlib.lyapunov.lyapunov_decrease`) fails there for
    every ``h``, by an excess that shrinks with ``h`` relative to the margin ``αh V_c``.

    Args:
        toy: the toy (its ``centre`` and ``alpha``; its ``h`` is replaced by each of ``hs``).
        z0: ``(N, 2)`` starts (default six points on a circle of radius 1.6).
        hs: the Euler steps, each in (0, 1] with ``α h <= 1``.
        horizon: the time simulated: ``ceil(horizon / h)`` steps per ``h``.
        floor: steps from ``V_c(z_k) <= floor`` are not counted (the noise floor of float64).

    Returns:
        ``{"centre", "alpha", "runs"}``; ``runs`` has one dict per ``h``: ``"h"``, ``"t"`` (``(K+1,)`` times
        ``h k``), ``"values"`` (``(K+1, N)`` ``V_c(z_k)``), ``"violations"`` and ``"steps"`` (the step-wise check's
        count), ``"max_relative_excess"`` (the largest ``(V_c(z_{k+1}) - (1 - αh) V_c(z_k)) / (αh V_c(z_k))``,
        positive: a violation), ``"above_bound"`` (the iterates with ``V_c(z_k) > exp(-α h k) V_c(z_0)``) and
        ``"ball_radius"`` (the largest distance to the end point 0 or ``z*`` over the last quarter).
    """
    starts = _starts(z0)
    runs = [_decrease_run(dataclasses.replace(toy, h=float(h)), starts, horizon, floor) for h in hs]
    return {"centre": toy.centre, "alpha": toy.alpha, "runs": runs}


def plot_decrease_curves(result: Dict[str, object], ax: Optional[Axes] = None) -> Axes:
    """The worst start's ``V_c(z_k) / V_c(z_0)`` against the time ``hk``, one line per ``h``, and ``exp(-αt)``.

    Args:
        result: a :func:`discrete_decrease` result.
        ax: the axes (default a new figure).

    Returns:
        the axes (log scale; the legend gives each ``h``'s count of step-wise violations).
    """
    ax = new_axes(ax, (4.5, 3.5))
    runs = result["runs"]
    cmap = plt.get_cmap(SEQUENTIAL_CMAP)
    t_max = max(float(r["t"][-1]) for r in runs)
    for i, r in enumerate(runs):
        ratio = (r["values"] / np.maximum(r["values"][:1], 1e-300)).max(axis=1)
        label = f"$h = {r['h']:g}$: {r['violations']}/{r['steps']} steps fail"
        ax.semilogy(r["t"], ratio, color=cmap(0.85 * i / max(len(runs) - 1, 1)), lw=1.3, label=label)
    t = np.linspace(0.0, t_max, 200)
    ax.semilogy(t, np.exp(-result["alpha"] * t), "--", color="black", lw=1.2, label=r"ODE bound $e^{-\alpha t}$")
    ax.set_xlabel("time $t = hk$")
    ax.set_ylabel(r"$\max_{z_0}\ V_c(z_k) / V_c(z_0)$")
    ax.set_title(f"{_TITLES[result['centre']]}, $\\alpha = {result['alpha']:g}$")
    ax.legend(fontsize=9, loc="lower left")
    return ax


def plot_discrete_decrease(
    results: Sequence[Dict[str, object]], *, figsize: Tuple[float, float] = (10.0, 3.8)
) -> Figure:
    """:func:`plot_decrease_curves` per centring, and the radius of the ball the Euler map ends in against ``h``.

    Args:
        results: one or two :func:`discrete_decrease` results (e.g. origin and residual, the same ``hs``).
        figsize: the figure's size.

    Returns:
        the figure, ``len(results) + 1`` axes (at most three).
    """
    results = list(results)
    if not 1 <= len(results) <= 2:
        raise ValueError(f"plot_discrete_decrease: give one or two results, got {len(results)}")
    fig, axes = plt.subplots(1, len(results) + 1, figsize=figsize, layout="constrained")
    for ax, res in zip(axes, results):
        plot_decrease_curves(res, ax)
    ax_r = axes[-1]
    for i, res in enumerate(results):
        hs = [r["h"] for r in res["runs"]]
        radii = [max(r["ball_radius"], 1e-16) for r in res["runs"]]
        ax_r.loglog(hs, radii, "o-", color=PALETTE[i], label=_TITLES[res["centre"]])
    ax_r.set_xlabel("Euler step $h$")
    ax_r.set_ylabel("distance to the end point,\nlast quarter of the run")
    ax_r.set_title("the ball the Euler map ends in")
    ax_r.legend(fontsize=9)
    return fig


@torch.no_grad()
def icnn_lyapunov_checks(
    V: LyapunovFunction, *, lim: float = 2.0, n: int = 101, pairs: int = 2000, seed: int = 0
) -> Dict[str, float]:
    """Check on a grid of ``[-lim, lim]²`` that ``V`` is positive definite with its minimum at 0, and convex.

    Args:
        V: a :class:`~deqlib.lyapunov.LyapunovFunction` on the plane (float64).
        lim, n: the grid (``n`` odd puts 0 on it).
        pairs: random pairs ``(a, b)`` in the square for the midpoint test ``V((a+b)/2) <= (V(a) + V(b)) / 2``.
        seed: the seed of the pairs.

    Returns:
        ``{"V_at_0", "min_off_origin", "min_ratio_to_quadratic", "convexity_violations"}``: ``V(0)``, the
        smallest ``V`` at the other grid points, the smallest ``V(z) / (eps ||z||²)`` there (>= 1 by
        construction), and the number of pairs that fail the midpoint test by more than 1e-12.
    """
    _, _, pts = plane_grid((-lim, lim), (-lim, lim), n)
    vals = V(pts)
    sq = (pts * pts).sum(dim=1)
    off = sq > 0
    gen = torch.Generator().manual_seed(seed)
    a, b = ((torch.rand(pairs, 2, generator=gen, dtype=torch.float64) * 2 - 1) * lim for _ in range(2))
    excess = V((a + b) / 2) - (V(a) + V(b)) / 2
    return {
        "V_at_0": float(V(torch.zeros(1, 2, dtype=torch.float64))[0]),
        "min_off_origin": float(vals[off].min()),
        "min_ratio_to_quadratic": float((vals[off] / (V.eps * sq[off])).min()),
        "convexity_violations": int((excess > 1e-12).sum()),
    }


@torch.no_grad()
def plot_icnn_lyapunov(
    V: LyapunovFunction, *, lim: float = 2.0, n: int = 121, figsize: Tuple[float, float] = (10.0, 4.0)
) -> Figure:
    """An ICNN-based ``V``: its level sets with the minimum at 0 (left) and its slices ``V(s d)`` (right).

    Args:
        V: a :class:`~deqlib.lyapunov.LyapunovFunction` on the plane (float64).
        lim, n: the window ``[-lim, lim]²`` and the grid.
        figsize: the figure's size.

    Returns:
        the figure, two axes (the colour bar adds a third).
    """
    fig, (ax_v, ax_s) = plt.subplots(1, 2, figsize=figsize, layout="constrained")
    gx, gy, pts = plane_grid((-lim, lim), (-lim, lim), n)
    vals = to_numpy(V(pts)).reshape(gx.shape)
    logv = np.log10(np.maximum(vals, np.quantile(vals[vals > 0], 0.005)))
    cs = ax_v.contourf(gx, gy, logv, levels=14, cmap=SEQUENTIAL_CMAP)
    ax_v.contour(gx, gy, logv, levels=cs.levels, colors="white", linewidths=0.4, alpha=0.6)
    fig.colorbar(cs, ax=ax_v, shrink=0.85, label=r"$\log_{10} V(z)$")
    i = int(np.argmin(vals))
    ax_v.plot(gx.ravel()[i], gy.ravel()[i], "o", mfc="none", mec="white", ms=11, mew=1.5, label="grid minimum")
    ax_v.plot(0, 0, "x", color="white", ms=8, mew=1.8, label="origin")
    ax_v.set(xlabel="$z_1$", ylabel="$z_2$", aspect="equal", title="level sets of $V$ (log scale)")
    ax_v.legend(fontsize=9, loc="upper right")
    s = np.linspace(-lim, lim, 201)
    angles = np.linspace(0, np.pi, 4, endpoint=False)
    cmap = plt.get_cmap(SEQUENTIAL_CMAP)
    for j, a in enumerate(angles):
        line = V(torch.as_tensor(np.outer(s, [np.cos(a), np.sin(a)]), dtype=torch.float64))
        ax_s.plot(s, to_numpy(line), color=cmap(0.28 * j), label=f"direction {np.degrees(a):.0f}°")
    ax_s.plot(s, V.eps * s**2, ":", color="black", label=r"$\varepsilon s^2$ (lower bound)")
    ax_s.set(xlabel="$s$", ylabel="$V(s\\,d)$", title="slices through 0: convex, zero at $s = 0$")
    ax_s.legend(fontsize=9)
    return fig


def lyapunov_small_multiples(
    toy: LyapunovToy,
    z0: Optional[ArrayLike] = None,
    *,
    centres: Sequence[str] = ("origin", "residual"),
    hs: Sequence[float] = (0.05, 0.3, 1.0),
    horizon: float = 12.0,
    panel_size: float = 3.3,
) -> Figure:
    """The static twin of :func:`deqlib.widgets.lyapunov_explorer`: one :func:`plot_lyapunov_panel` per setting.

    Args:
        toy: the toy (its ``alpha`` and ``u``).
        z0: ``(N, 2)`` starts (default six points on a circle of radius 1.6).
        centres: one row per centring (of :data:`CENTRES`).
        hs: one column per Euler step (at most three).
        horizon, panel_size: the time simulated and the size of one panel.

    Returns:
        the figure, ``len(centres) x len(hs)`` axes.
    """
    if not 1 <= len(hs) <= 3 or not centres:
        raise ValueError(f"lyapunov_small_multiples: give 1 to 3 hs and at least one centre, got {hs}, {centres}")
    size = (panel_size * len(hs), panel_size * len(centres))
    kw = dict(layout="constrained", squeeze=False, sharex=True, sharey=True)
    fig, axes = plt.subplots(len(centres), len(hs), figsize=size, **kw)
    for row, centre in zip(axes, centres):
        for ax, h in zip(row, hs):
            plot_lyapunov_panel(dataclasses.replace(toy, centre=centre, h=float(h)), z0, ax, horizon=horizon)
            ax.set(xlabel="", ylabel="")
            ax.tick_params(labelsize=9)
    fig.suptitle(f"$\\alpha = {toy.alpha:g}$, $u = ({toy.u[0]:g}, {toy.u[1]:g})$")
    return fig
