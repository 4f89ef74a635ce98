"""Interactive explorers (ipywidgets) built on :mod:`deqlib.viz`.

Each explorer needs a running kernel (Jupyter, Colab). The web book has none, so every explorer has a
static counterpart in :mod:`deqlib.viz` that shows the same thing without one; a chapter displays both:

=====================================  ===============================================================
explorer (live)                        static counterpart (web book)
=====================================  ===============================================================
:func:`fixed_point_explorer`           :func:`deqlib.viz.fixed_point_animation` (over the weight scale,
                                       displayed with ``anim.to_jshtml()``) or
                                       :func:`deqlib.viz.fixed_point_small_multiples`
:func:`solver_explorer`                :func:`deqlib.viz.solver_trace_grid` (small multiples over
                                       weight scale x solver)
:func:`trajectory_explorer`            :func:`deqlib.viz.digit_readout_small_multiples` (one row per
                                       model x epsilon, same digit)
:func:`lyapunov_explorer`              :func:`deqlib.viz.lyapunov_small_multiples` (centring x Euler
                                       step h)
:func:`entropy_explorer`               :func:`deqlib.viz.entropy_defence_small_multiples` (one row
                                       per attack or defence radius, same digit)
=====================================  ===============================================================

ipywidgets is imported lazily: importing this module works without it, calling an explorer does not.
"""

# size: the book's explorers, one per chapter that has one, each a thin layer over deqlib.viz (the table above)

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
from torch import Tensor, nn

from ._validate import check_deq_classifier, check_images, check_labels
from .viz import PlaneMap, plot_digit_readout, plot_fixed_point_panel, plot_solver_trace

__all__ = ["fixed_point_explorer", "solver_explorer", "trajectory_explorer", "lyapunov_explorer", "entropy_explorer"]


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "deqlib.widgets needs ipywidgets: pip install 'deqlib[viz]' (or pip install ipywidgets)"
        ) from err
    return ipywidgets


def _slider(widgets, cls, spec, description):
    """A slider of class ``cls`` from (min, max, step, initial value), updated on release."""
    lo, hi, step, value = spec
    return cls(
        min=lo,
        max=hi,
        step=step,
        value=value,
        description=description,
        continuous_update=False,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="360px"),
    )


def fixed_point_explorer(
    make_f: Callable[[float, float], PlaneMap],
    z0,
    *,
    scale: Tuple[float, float, float, float] = (0.1, 3.0, 0.1, 0.5),
    n_iter: Tuple[int, int, int, int] = (0, 60, 1, 20),
    x: Optional[Tuple[float, float, float, float]] = (-2.0, 2.0, 0.1, 0.0),
    xlim: Tuple[float, float] = (-1.05, 1.05),
    ylim: Tuple[float, float] = (-1.05, 1.05),
    figsize: Tuple[float, float] = (8.0, 3.6),
):
    """Sliders for the weight scale, the number of iterations and (optionally) the input of a 2-D toy DEQ.

    Each change redraws :func:`deqlib.viz.plot_fixed_point_panel`: the residual field and the trajectories
    z_0, ..., z_K from the starts ``z0`` on the left, the step sizes ||z_{k+1} - z_k|| on the right.

    Args:
        make_f: ``make_f(scale, x)`` returns the map z -> f(z, x) of the plane for that weight scale and input.
        z0: (N, 2) starting points.
        scale, n_iter, x: (min, max, step, initial value) of each slider; ``x=None`` fixes x = 0 (no slider).

    Returns:
        an ``ipywidgets.interactive``; display it (it is the last expression of a cell, or ``display(w)``).

    Example:
        >>> import torch
        >>> W = torch.tensor([[0.8, -0.5], [0.5, 0.4]], dtype=torch.float64)
        >>> make_f = lambda s, x: (lambda z: torch.tanh(s * z @ W.T + x))
        >>> w = fixed_point_explorer(make_f, torch.zeros(1, 2, dtype=torch.float64))  # doctest: +SKIP
    """
    widgets = _ipywidgets()

    controls = {
        "scale": _slider(widgets, widgets.FloatSlider, scale, "weight scale s"),
        "n_iter": _slider(widgets, widgets.IntSlider, n_iter, "iterations K"),
    }
    if x is not None:
        controls["x"] = _slider(widgets, widgets.FloatSlider, x, "input x")

    def draw(scale: float, n_iter: int, x: float = 0.0) -> None:
        fig, (ax_p, ax_r) = plt.subplots(
            1, 2, figsize=figsize, layout="constrained", gridspec_kw={"width_ratios": [1, 1.25]}
        )
        plot_fixed_point_panel(
            make_f(scale, x), z0, n_iter, ax_p, ax_r, xlim=xlim, ylim=ylim, title=f"$s = {scale:.2f}$, $x = {x:.2f}$"
        )
        ax_r.set_title(f"{n_iter} iterations")
        plt.show()

    return widgets.interactive(draw, **controls)


def _solver_controls(widgets, solvers, tols, tol, tau, scale) -> dict:
    """The solver menu, the tolerance slider and the optional damping and weight-scale sliders."""
    tols = [float(t) for t in tols]
    if not tols:
        raise ValueError("solver_explorer: tols must not be empty")
    if float(tol) not in tols:
        raise ValueError(f"solver_explorer: the initial tol {tol!r} is not one of tols {tols}")
    if not solvers:
        raise ValueError("solver_explorer: solvers must not be empty")
    controls = {
        "solver": widgets.Dropdown(options=list(solvers), value=list(solvers)[0], description="solver"),
        "tol": widgets.SelectionSlider(
            options=[(f"{t:.0e}", t) for t in tols],
            value=float(tol),
            description="tolerance",
            continuous_update=False,
            style={"description_width": "initial"},
            layout=widgets.Layout(width="360px"),
        ),
    }
    if tau is not None:
        controls["tau"] = _slider(widgets, widgets.FloatSlider, tau, "damping tau")
    if scale is not None:
        controls["scale"] = _slider(widgets, widgets.FloatSlider, scale, "weight scale s")
    return controls


def solver_explorer(
    run: Callable[..., object],
    *,
    solvers: Sequence[str] = ("fixed_point", "anderson", "broyden"),
    tols: Sequence[float] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
    tol: float = 1e-4,
    tau: Optional[Tuple[float, float, float, float]] = (0.1, 1.0, 0.05, 1.0),
    scale: Optional[Tuple[float, float, float, float]] = (0.5, 3.0, 0.25, 1.0),
    max_lines: int = 32,
    ylim: Optional[Tuple[float, float]] = None,
    figsize: Tuple[float, float] = (6.0, 3.6),
):
    """Choose a solver, a tolerance, a damping and (optionally) a weight scale; watch the residual curves.

    Each change calls ``run`` and redraws :func:`deqlib.viz.plot_solver_trace` (one line per sample, a marker
    where it stopped) with the one-line :meth:`~deqlib.solvers.SolverInfo.summary` below. The static
    counterpart for the web book is :func:`deqlib.viz.solver_trace_grid`.

    Args:
        run: ``run(solver=..., tol=..., tau=..., scale=...) -> SolverInfo``; the keywords ``tau`` and ``scale``
            are passed only when their control exists. What the damping means for each solver is ``run``'s
            choice (e.g. ``tau`` of ``fixed_point``, ``beta`` of ``anderson``).
        solvers: the names in the solver menu.
        tols: the tolerances offered (a slider over these values); ``tol`` is the initial one.
        tau, scale: (min, max, step, initial value) of the damping and weight-scale sliders; None: no slider.
        max_lines, ylim: passed to :func:`deqlib.viz.plot_solver_trace`.

    Returns:
        an ``ipywidgets.interactive``; display it (it is the last expression of a cell, or ``display(w)``).

    Example:
        >>> import torch
        >>> from deqlib import solvers
        >>> def run(solver, tol, tau, scale):
        ...     f = lambda z: torch.tanh(scale * z + 1.0)
        ...     opts = {"tau": tau} if solver == "fixed_point" else {}
        ...     return solvers.get_solver(solver)(f, torch.zeros(4, 3), tol=tol, **opts)[1]
        >>> w = solver_explorer(run)  # doctest: +SKIP
    """
    widgets = _ipywidgets()
    controls = _solver_controls(widgets, solvers, tols, tol, tau, scale)

    def draw(**values) -> None:
        info = run(**values)
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        parts = [values["solver"], f"tol {values['tol']:.0e}"]
        parts += [f"tau {values['tau']:.2f}"] if "tau" in values else []
        parts += [f"s {values['scale']:.2f}"] if "scale" in values else []
        plot_solver_trace(info, ax, max_lines=max_lines, ylim=ylim, title=", ".join(parts))
        plt.show()
        summary = getattr(info, "summary", None)
        if callable(summary):
            print(summary())

    return widgets.interactive(draw, **controls)


def _trajectory_controls(widgets, models, n, eps_values, attack_names, gradients) -> dict:
    for name, values in (
        ("models", list(models)),
        ("eps_values", eps_values),
        ("attacks", attack_names),
        ("gradients", gradients),
    ):
        if not values:
            raise ValueError(f"trajectory_explorer: {name} must not be empty")
    wide = {"style": {"description_width": "initial"}, "layout": widgets.Layout(width="360px")}
    return {
        "model": widgets.Dropdown(options=list(models), description="model", **wide),
        "digit": widgets.IntSlider(
            min=0, max=n - 1, step=1, value=0, description="digit", continuous_update=False, **wide
        ),
        "eps": widgets.SelectionSlider(
            options=[(f"{e:g}", float(e)) for e in eps_values],
            value=float(eps_values[-1]),
            description="ε (L∞)",
            continuous_update=False,
            **wide,
        ),
        "attack": widgets.Dropdown(options=list(attack_names), description="attack", **wide),
        "gradient": widgets.Dropdown(options=list(gradients), description="attacker's gradient", **wide),
    }


def _draw_readout(readout: Dict[str, Any], steps: int, title: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 2.8), layout="constrained", gridspec_kw={"width_ratios": [0.6, 1, 1]})
    plot_digit_readout(readout, 0, list(axes), k_max=steps)
    fig.suptitle(title, fontsize=10)
    plt.show()


def _check_explorer_data(models: Mapping[str, nn.Module], x: Tensor, y: Tensor) -> Tensor:
    if not isinstance(models, Mapping):
        raise TypeError(f"trajectory_explorer: models must be a mapping name -> model, got {type(models).__name__}")
    for name, m in models.items():
        check_deq_classifier(m, "trajectory_explorer", f"models[{name!r}]")
    x = check_images(x, "trajectory_explorer")
    check_labels(y, x.shape[0], "trajectory_explorer")
    return x


def trajectory_explorer(
    models: Mapping[str, nn.Module],
    x: Tensor,
    y: Tensor,
    *,
    eps_values: Sequence[float] = (0.0, 0.05, 0.1, 0.15, 0.2),
    attacks: Sequence[str] = ("pgd", "apgd_ce", "fgsm"),
    gradients: Sequence[str] = ("ift", "phantom", "unroll"),
    steps: int = 12,
    attack_params: Optional[Mapping[str, Mapping[str, Any]]] = None,
):
    """Choose a model, a digit, ε, an attack and the attacker's gradient; watch the readouts along the iterations.

    Each change attacks the chosen digit on the model's final state (:func:`deqlib.dynamics.attacked_readouts`)
    and redraws :func:`deqlib.viz.plot_digit_readout`: the attacked image, the probability of the digit's class
    and the entropy of head(z_k) for k = 0..``steps``, clean and attacked. The static counterpart for the web
    book is :func:`deqlib.viz.digit_readout_small_multiples`.

    Args:
        models: name -> :class:`~deqlib.cells.DEQClassifier` (the model menu).
        x, y: the digits offered (N, C, H, W) in [0, 1] and their labels.
        eps_values: the radii offered (0: no attack).
        attacks: names of :func:`deqlib.attacks.make_attack`.
        gradients: the DEQ gradients the attacker may follow (see :func:`deqlib.attacks.attack_gradient`).
        steps: the last state read.
        attack_params: attack name -> its parameters (default ``{"pgd": {"steps": 20}, "apgd_ce": {"steps": 20}}``).

    Returns:
        an ``ipywidgets.interactive``; its attribute ``last`` holds the latest readout (a dict, updated on
        each redraw).
    """
    from .dynamics import attacked_readouts

    widgets = _ipywidgets()
    x = _check_explorer_data(models, x, y)
    params = {"pgd": {"steps": 20}, "apgd_ce": {"steps": 20}} if attack_params is None else attack_params
    controls = _trajectory_controls(widgets, models, x.shape[0], list(eps_values), attacks, gradients)
    last: Dict[str, Any] = {}

    def draw(model: str, digit: int, eps: float, attack: str, gradient: str) -> None:
        sl = slice(digit, digit + 1)
        r = attacked_readouts(
            models[model],
            x[sl],
            y[sl],
            eps,
            attack=attack,
            gradient=gradient,
            k_max=steps,
            **dict(params.get(attack, {})),
        )
        last.clear()
        last.update(r, settings={"model": model, "digit": digit, "eps": eps, "attack": attack, "gradient": gradient})
        _draw_readout(r, steps, f"{model}, {attack} ε = {eps:g}, gradient {gradient}")

    w = widgets.interactive(draw, **controls)
    w.last = last
    return w


def lyapunov_explorer(
    z0=None,
    *,
    alpha: Tuple[float, float, float, float] = (0.05, 1.0, 0.05, 0.5),
    h: Tuple[float, float, float, float] = (0.05, 1.0, 0.05, 0.3),
    u1: Tuple[float, float, float, float] = (-1.0, 1.0, 0.1, 0.6),
    u2: Tuple[float, float, float, float] = (-1.0, 1.0, 0.1, -0.4),
    centres: Sequence[str] = ("origin", "residual", "none"),
    horizon: float = 20.0,
    seed: int = 0,
    figsize: Tuple[float, float] = (9.5, 4.0),
):
    """Choose the decay rate α, the centring, the Euler step h and the input u of chapter 6's 2-D toy.

    Each change rebuilds :func:`deqlib.viz.lyapunov_toy` (the same ``V``, seeded by ``seed``) and redraws
    :func:`deqlib.viz.plot_lyapunov_panel` (field, level sets of ``V_c``, Euler trajectories) on the left and
    :func:`deqlib.viz.plot_decrease_curves` (``V_c`` along the iterates against ``exp(-αt)``) on the right. The
    static counterpart for the web book is :func:`deqlib.viz.lyapunov_small_multiples`.

    Args:
        z0: ``(N, 2)`` starts (default six points on a circle of radius 1.6).
        alpha, h, u1, u2: (min, max, step, initial value) of each slider (``α h <= 1`` is needed: keep both <= 1).
        centres: the centring menu (of :data:`deqlib.viz.CENTRES`).
        horizon: the time ``h K`` simulated.
        seed: the seed of ``V``.
        figsize: the figure's size.

    Returns:
        an ``ipywidgets.interactive``; its attribute ``last`` holds the latest settings, trajectory and
        :func:`deqlib.viz.discrete_decrease` result (updated on each redraw).
    """
    from .viz import discrete_decrease, lyapunov_toy, plot_decrease_curves, plot_lyapunov_panel

    widgets = _ipywidgets()
    if not centres:
        raise ValueError("lyapunov_explorer: centres must not be empty")
    controls = {
        "centre": widgets.Dropdown(options=list(centres), value=list(centres)[0], description="centring"),
        "alpha": _slider(widgets, widgets.FloatSlider, alpha, "decay rate α"),
        "h": _slider(widgets, widgets.FloatSlider, h, "Euler step h"),
        "u1": _slider(widgets, widgets.FloatSlider, u1, "input u₁"),
        "u2": _slider(widgets, widgets.FloatSlider, u2, "input u₂"),
    }
    last: Dict[str, Any] = {}

    def draw(centre: str, alpha: float, h: float, u1: float, u2: float) -> None:
        toy = lyapunov_toy(alpha=alpha, centre=centre, h=h, u=(u1, u2), seed=seed)
        fig, (ax_p, ax_d) = plt.subplots(1, 2, figsize=figsize, layout="constrained")
        traj = plot_lyapunov_panel(toy, z0, ax_p, horizon=horizon)
        result = discrete_decrease(toy, z0, hs=(h,), horizon=horizon)
        plot_decrease_curves(result, ax_d)
        last.clear()
        last.update(
            settings={"centre": centre, "alpha": alpha, "h": h, "u": (u1, u2)}, trajectory=traj, decrease=result
        )
        plt.show()

    w = widgets.interactive(draw, **controls)
    w.last = last
    return w


def entropy_explorer(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps_def: Tuple[float, float, float, float] = (0.0, 0.3, 0.05, 0.2),
    attack_eps: Sequence[float] = (0.0, 0.1, 0.2),
):
    """Choose a digit, the entropy defence's radius and a transfer attack; watch the entropy along the defence.

    Each change crafts PGD-10 (steps of ε / 4) on the undefended ``model`` at the chosen radius (0: no attack),
    runs :meth:`deqlib.defenses.EntropyReductionDefense.as_released` with ball ε_def and step ε_def / 4 on the
    digit, and redraws :func:`deqlib.viz.plot_entropy_with_defence` (defence on and off). The static counterpart
    for the web book is :func:`deqlib.viz.entropy_defence_small_multiples`.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        x, y: the digits offered and their labels.
        eps_def: (min, max, step, initial value) of the defence's radius slider.
        attack_eps: the attack radii offered.

    Returns:
        an ``ipywidgets.interactive``; ``last`` holds the latest settings and run.
    """
    from .attacks import pgd
    from .defenses import EntropyReductionDefense
    from .viz import entropy_with_defence, plot_entropy_with_defence

    widgets = _ipywidgets()
    check_deq_classifier(model, "entropy_explorer")
    x = check_images(x, "entropy_explorer")
    check_labels(y, x.shape[0], "entropy_explorer")
    controls = {
        "digit": widgets.IntSlider(min=0, max=x.shape[0] - 1, value=0, description="digit", continuous_update=False),
        "radius": _slider(widgets, widgets.FloatSlider, eps_def, "defence radius ε_def"),
        "attack": widgets.Dropdown(options=list(attack_eps), value=list(attack_eps)[0], description="attack ε"),
    }
    last: Dict[str, Any] = {}

    def draw(digit: int, radius: float, attack: float) -> None:
        xs, ys = x[digit : digit + 1], y[digit : digit + 1]
        if attack > 0:
            xs = pgd(model, attack, alpha=attack / 4, steps=10)(xs, ys)
        defense = EntropyReductionDefense.as_released(model, eps=radius, eta=radius / 4 if radius > 0 else 0.01)
        run = entropy_with_defence(defense, xs, ys)
        last.clear()
        last.update(settings={"digit": digit, "radius": radius, "attack": attack}, run=run)
        plot_entropy_with_defence(run, 0, title=f"digit {digit}, attack ε = {attack:g}, label {int(ys[0])}")
        plt.show()

    w = widgets.interactive(draw, **controls)
    w.last = last
    return w
