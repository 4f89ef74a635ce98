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
- :mod:`~deqlib.viz.gradients` — chapter 3's gradients and training: :func:`plot_phantom_errors`,
  :func:`plot_memory`, :func:`plot_training_history`, :func:`plot_solver_steps`;
- :mod:`~deqlib.viz.robustness` — :func:`plot_entropy_along_iterations`, :func:`plot_robust_accuracy`,
  :func:`plot_adversarial_examples`;
- :mod:`~deqlib.viz.dynamics` — chapter 4: :func:`plot_state_readouts`, :func:`plot_distributions`,
  :func:`plot_segment_scan`, :func:`plot_hysteresis`, :func:`plot_digit_readout` and its static small multiples
  :func:`digit_readout_small_multiples` (the counterpart of :func:`deqlib.widgets.trajectory_explorer`);
- :mod:`~deqlib.viz.attacks` — chapter 5's attack figures: :func:`plot_accuracy_intervals`,
  :func:`plot_attack_intervals`, :func:`plot_broken_by`, :func:`plot_broken_digits`;
- :mod:`~deqlib.viz.readings` — chapter 6's LyaDEQ readings: :func:`plot_collapse`,
  :func:`plot_readings_vs_controls`;
- :mod:`~deqlib.viz.lyapunov` — chapter 6's 2-D toys: :func:`lyapunov_toy` (a :class:`LyapunovToy`),
  :func:`plot_lyapunov_panel`, :func:`plot_lyapunov_fields`, :func:`discrete_decrease`,
  :func:`plot_decrease_curves`, :func:`plot_discrete_decrease`, :func:`icnn_lyapunov_checks`,
  :func:`plot_icnn_lyapunov` and the static small multiples :func:`lyapunov_small_multiples` (the counterpart
  of :func:`deqlib.widgets.lyapunov_explorer`);
- :mod:`~deqlib.viz.head_to_head` — chapter 8: :func:`head_to_head_curves`, :func:`plot_head_to_head` (robust
  accuracy against the radius, one panel per family of defences).
- :mod:`~deqlib.viz.regulation` — chapter 7: :func:`entropy_with_defence`, :func:`plot_entropy_with_defence` and its
  static small multiples :func:`entropy_defence_small_multiples` (the counterpart of
  :func:`deqlib.widgets.entropy_explorer`), :func:`plot_evaluations`;
- :mod:`~deqlib.viz.schematics` — pictures of a computation: :func:`deep_vs_deq`, :func:`solve_then_differentiate`;
- :mod:`~deqlib.viz.publish` — :func:`glue`: a computed value for the book's prose (a no-op without myst-nb);
- :mod:`~deqlib.viz.style` — the book's colour-blind-safe palette and fonts: :func:`book_style`,
  :func:`use_book_style`, :data:`PALETTE`.

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
from .attacks import plot_accuracy_intervals, plot_attack_intervals, plot_broken_by, plot_broken_digits
from .dynamics import (
    digit_readout_small_multiples,
    plot_digit_readout,
    plot_distributions,
    plot_hysteresis,
    plot_segment_scan,
    plot_state_readouts,
)
from .gradients import plot_memory, plot_phantom_errors, plot_solver_steps, plot_training_history
from .head_to_head import head_to_head_curves, plot_head_to_head
from .lyapunov import (
    CENTRES,
    LyapunovToy,
    discrete_decrease,
    icnn_lyapunov_checks,
    lyapunov_small_multiples,
    lyapunov_toy,
    plot_decrease_curves,
    plot_discrete_decrease,
    plot_icnn_lyapunov,
    plot_lyapunov_fields,
    plot_lyapunov_panel,
)
from .publish import glue
from .readings import plot_collapse, plot_readings_vs_controls
from .regulation import (
    entropy_defence_small_multiples,
    entropy_with_defence,
    plot_entropy_with_defence,
    plot_evaluations,
)
from .robustness import plot_adversarial_examples, plot_entropy_along_iterations, plot_robust_accuracy
from .schematics import deep_vs_deq, solve_then_differentiate
from .solvers import (
    plot_damped_eigenvalues,
    plot_residuals,
    plot_solver_trace,
    plot_steps_histogram,
    residuals_and_eigenvalues,
    solver_trace_grid,
)
from .style import BOOK_RC, PALETTE, SEQUENTIAL_CMAP, book_style, use_book_style
from .toys import (
    cobweb_small_multiples,
    fixed_point_animation,
    fixed_point_small_multiples,
    plot_cobweb,
    plot_equilibrium_branches,
    plot_equilibrium_curves,
    plot_fixed_point_panel,
    plot_level_sets,
    plot_sensitivity_blowup,
    plot_vector_field,
)
from .trajectories import iterate, plot_trajectories_2d, project_2d, step_sizes

__all__ = [
    "head_to_head_curves",
    "plot_head_to_head",
    "entropy_with_defence",
    "plot_entropy_with_defence",
    "entropy_defence_small_multiples",
    "plot_evaluations",
    "plot_collapse",
    "plot_readings_vs_controls",
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
    "cobweb_small_multiples",
    "plot_equilibrium_curves",
    "plot_equilibrium_branches",
    "plot_sensitivity_blowup",
    "plot_entropy_along_iterations",
    "plot_robust_accuracy",
    "plot_adversarial_examples",
    "plot_accuracy_intervals",
    "plot_attack_intervals",
    "plot_broken_by",
    "plot_broken_digits",
    "plot_state_readouts",
    "plot_distributions",
    "plot_segment_scan",
    "plot_hysteresis",
    "plot_digit_readout",
    "digit_readout_small_multiples",
    "plot_phantom_errors",
    "plot_memory",
    "plot_training_history",
    "plot_solver_steps",
    "plot_solver_trace",
    "solver_trace_grid",
    "plot_steps_histogram",
    "plot_damped_eigenvalues",
    "residuals_and_eigenvalues",
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
    "deep_vs_deq",
    "solve_then_differentiate",
    "PALETTE",
    "SEQUENTIAL_CMAP",
    "BOOK_RC",
    "book_style",
    "use_book_style",
    "glue",
]
