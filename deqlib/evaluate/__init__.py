"""Robustness evaluation: reports of accuracy under attack, and the gradient-masking checks behind them.

Taught in chapter 5 (``notebooks/05_attacking_deqs.ipynb``). Import it by name (``from deqlib import evaluate``); it needs torchattacks.

- :mod:`deqlib.evaluate.battery` — :func:`strongest_attack`, the strongest-attack battery (AutoAttack standard,
  PGD under each DEQ gradient with restarts, the intermediate-state attacks and the model's own adaptive attacks:
  their per-sample worst case, which attack broke each sample, intervals, non-convergence; :data:`PRESETS`);
  the one robust-accuracy evaluation the chapters and experiments report;
- :mod:`deqlib.evaluate.report` — :func:`evaluate_robustness` (every attack at every radius, and the per-sample
  worst case over all attacks, with masks and intervals), :func:`describe_model`;
- :mod:`deqlib.evaluate.statistics` — :func:`wilson_interval`, :func:`mcnemar`, :func:`paired_bootstrap`,
  :func:`seed_summary`: 95 % intervals, paired comparisons of two models on the same samples, training seeds;
- :mod:`deqlib.evaluate.masking` — the six gradient-masking checks (:func:`check_monotone_eps`,
  :func:`check_large_eps`, :func:`check_steps_restarts`, :func:`check_black_box`, :func:`check_gradient_choices`,
  :func:`check_determinism_gradients`; the last two live in :mod:`deqlib.evaluate.masking_gradients`) and
  :func:`masking_checks`, which runs them all (:data:`MASKING_CHECKS`);
- :mod:`deqlib.evaluate.summaries` — :func:`broken_by_counts`, :func:`masking_rows`, :func:`paired_rows` (and chapter 6's :func:`reading_rows`, :func:`verdict_rows`): the
  counts and rows behind the tables and figures of a report;
- :mod:`deqlib.evaluate.released` — chapter 7's evaluation of Yang et al. 2023's defences as the authors released it
  (:func:`~deqlib.evaluate.released.released_attacks`, :func:`~deqlib.evaluate.released.attack_each`: each attack on
  its own and their union), set beside the battery;
- :mod:`deqlib.evaluate.masked_demo` — :class:`QuantisedInput`, a deliberately masked model (zero input gradients)
  that every masking check fails, and its BPDA twin (``straight_through=True``);
- :func:`save_json`, :func:`to_jsonable` — write a report as JSON, atomically (from :mod:`deqlib._io`).

Radii are on the [0, 1] pixel scale; every result is a JSON-able dict.
"""

from .._io import save_json, to_jsonable
from .battery import PRESETS, strongest_attack
from .masked_demo import QuantisedInput
from .masking import (
    MASKING_CHECKS,
    check_black_box,
    check_large_eps,
    check_monotone_eps,
    check_steps_restarts,
    masking_checks,
)
from .masking_gradients import check_determinism_gradients, check_gradient_choices
from .report import describe_model, evaluate_robustness
from .statistics import MIN_SEEDS, claim_verdict, mcnemar, paired_bootstrap, seed_summary, wilson_interval
from .summaries import broken_by_counts, masking_rows, paired_rows, reading_rows, verdict_rows

__all__ = [
    "strongest_attack",
    "PRESETS",
    "wilson_interval",
    "mcnemar",
    "claim_verdict",
    "paired_bootstrap",
    "seed_summary",
    "MIN_SEEDS",
    "evaluate_robustness",
    "save_json",
    "to_jsonable",
    "describe_model",
    "check_monotone_eps",
    "check_large_eps",
    "check_steps_restarts",
    "check_black_box",
    "check_gradient_choices",
    "check_determinism_gradients",
    "masking_checks",
    "MASKING_CHECKS",
    "QuantisedInput",
    "broken_by_counts",
    "masking_rows",
    "paired_rows",
    "reading_rows",
    "verdict_rows",
]
