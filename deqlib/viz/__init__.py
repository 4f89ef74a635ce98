"""Matplotlib figures for deep equilibrium models.

Plain matplotlib: nothing here knows about notebooks, widgets or the web book (:mod:`deqlib.widgets` builds on
these functions). Every ``plot_*`` function draws into the axes it is given (or a new one) and returns them;
functions that make whole figures return the figure. Inputs may be torch tensors or NumPy arrays.

- :mod:`~deqlib.viz.trajectories` — the raw iteration and its trajectories: :func:`iterate`, :func:`step_sizes`,
  :func:`project_2d`, :func:`plot_trajectories_2d`;
- :mod:`~deqlib.viz.solvers` — residual curves and solver traces: :func:`plot_residuals`,
  :func:`plot_solver_trace` and its small multiples :func:`solver_trace_grid` (the static counterpart of
  :func:`deqlib.widgets.solver_explorer`);
- :mod:`~deqlib.viz.toys` — toy dynamics: :func:`plot_vector_field`, :func:`plot_level_sets`,
  :func:`plot_cobweb`, :func:`plot_fixed_point_panel` and its static counterparts for the web book
  :func:`fixed_point_small_multiples` and :func:`fixed_point_animation`;
- :mod:`~deqlib.viz.robustness` — :func:`plot_entropy_along_iterations`, :func:`plot_robust_accuracy`.

Every name is available as ``viz.<name>``.

Example:
    >>> import torch
    >>> from deqlib import viz
    >>> traj = viz.iterate(lambda z: torch.tanh(0.5 * z + 0.3), torch.zeros(4, 2), n_iter=10)
    >>> tuple(traj.shape)
    (11, 4, 2)
    >>> ax = viz.plot_trajectories_2d(traj)
"""

from ._common import ArrayLike, PlaneMap, to_numpy
from .robustness import plot_entropy_along_iterations, plot_robust_accuracy
from .solvers import plot_residuals, plot_solver_trace, solver_trace_grid
from .toys import (
    fixed_point_animation,
    fixed_point_small_multiples,
    plot_cobweb,
    plot_fixed_point_panel,
    plot_level_sets,
    plot_vector_field,
)
from .trajectories import iterate, plot_trajectories_2d, project_2d, step_sizes

__all__ = [
    "ArrayLike",
    "PlaneMap",
    "to_numpy",
    "iterate",
    "step_sizes",
    "plot_residuals",
    "plot_trajectories_2d",
    "project_2d",
    "plot_vector_field",
    "plot_level_sets",
    "plot_cobweb",
    "plot_fixed_point_panel",
    "fixed_point_small_multiples",
    "fixed_point_animation",
    "plot_entropy_along_iterations",
    "plot_robust_accuracy",
    "plot_solver_trace",
    "solver_trace_grid",
]
