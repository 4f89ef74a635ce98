"""Probe of the robustness half of the public API: bad inputs, as a new user would get them wrong.

The losses (:mod:`deqlib.losses`), the threat model (:mod:`deqlib.threat`), the attacks (:mod:`deqlib.attacks`),
the evaluation (:mod:`deqlib.evaluate`: report, battery, masking checks) and :mod:`deqlib.dynamics`. Every case of
the table must raise ``TypeError`` or ``ValueError`` whose message names the argument (the ``match`` regex); a case
that returns without a word is *silent*, one that raises anything else (a raw torch ``IndexError``, Python's
"too many values to unpack", an ``AttributeError``) or a message that does not name the problem is *unclear*.

``python tests/test_probe_robustness.py`` prints the counts (and every case that is not clear). Issue 16 recorded
them on the code before its fixes (commit c29f64c): 117 cases, 41 clear, 48 unclear, 28 silent; after them, 117 clear.
(Already clear before: the masking checks' negative ``tol_samples`` / ``max_gap`` / ``seed``, which issue 9 had fixed,
and the losses' malformed logits, then a ``TypeError``.)
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, List, NamedTuple, Tuple, Type, Union

if __name__ == "__main__":  # run as a script: probe this checkout's deqlib, not an installed copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest
import torch
from _broken_logits import LinearClassifier

from deqlib import dynamics, losses, threat
from deqlib.attacks import (
    IntermediateStateAttack,
    apgd_t,
    autoattack_standard,
    fab_t,
    fgsm,
    make_attack,
    pgd,
    predict,
    robust_accuracy,
    square,
)
from deqlib.cells import mlp_classifier
from deqlib.evaluate import (
    check_black_box,
    check_determinism_gradients,
    check_gradient_choices,
    check_large_eps,
    check_monotone_eps,
    check_steps_restarts,
    evaluate_robustness,
    masking_checks,
    strongest_attack,
)

Exc = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


class Case(NamedTuple):
    id: str
    call: Callable[[], Any]
    exc: Exc
    match: str


# ---------------------------------------------------------------------------------------------------- the inputs
torch.manual_seed(0)
MODEL, FLAT, THREE_D, ONE_ROW = (
    LinearClassifier(),
    LinearClassifier("flat"),
    LinearClassifier("3d"),
    LinearClassifier("batch"),
)
DEQ_MODEL = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=8, max_iter=6)
X = torch.rand(4, 1, 8, 8)
Y = torch.tensor([0, 1, 2, 3])
Y_HIGH = torch.tensor([0, 1, 2, 10])  # 10 classes: label 10 does not exist
Y_NEG = torch.tensor([0, -1, 2, 3])
Y_IGNORE = torch.tensor([0, -100, -100, 3])  # torch's ignore index
Y_FLOAT = torch.tensor([0.0, 1.5, 2.0, 3.0])
TINY = {
    "apgd_steps": 1,
    "fab_steps": 1,
    "square_queries": 2,
    "pgd_steps": 1,
    "state_indices": [1],
    "n_target_classes": 1,
}

OUTSIDE = r"class indices in \[0, 10\)"  # a label out of the model's range
FLOAT_LABELS = r"(int64|integer) class labels"
LOGITS = r"logits of shape \(N, num_classes\)"
BAD_LOGITS = (TypeError, ValueError)  # a shape is a value (ValueError); the losses raised TypeError before issue 16
EPS_LIST = r"eps_list must be a sequence"


def _pgd1(model=MODEL, **kw):
    return pgd(model, 0.1, steps=1, **kw)


def _ra(model, y, **kw):
    return lambda: robust_accuracy(model, _pgd1(model), (X, y), **kw)


def _ev(model, y=Y, attacks=(("pgd", {"steps": 1}),), eps_list=(0.1,), **kw):
    return lambda: evaluate_robustness(model, X, y, attacks, eps_list, **kw)


def _bat(model, y=Y, eps_list=(0.1,), **kw):
    kw.setdefault("budgets", TINY)
    return lambda: strongest_attack(model, X, y, eps_list, **kw)


def _mask(model=MODEL, y=Y, **kw):
    kw.setdefault("budget", 0.01)
    return lambda: masking_checks(model, X, y, 0.1, **kw)


# ---------------------------------------------------------------------------------------------------- the table
def _loss_cases() -> List[Case]:
    p, t = losses.PGDAT(eps=0.1, alpha=0.05, steps=1), losses.TRADES(eps=0.1, alpha=0.05, steps=1)
    l2p, l2t = losses.PGDAT(eps=100, alpha=1, steps=1, norm="L2"), losses.TRADES(eps=100, alpha=1, steps=1, norm="L2")
    return [
        Case("PGDAT label >= num_classes", lambda: p(MODEL, X, Y_HIGH), ValueError, OUTSIDE),
        Case("PGDAT negative label", lambda: p(MODEL, X, Y_NEG), ValueError, OUTSIDE),
        Case("PGDAT label -100 (ignore index)", lambda: p(MODEL, X, Y_IGNORE), ValueError, r"ignore index"),
        Case("PGDAT float labels", lambda: p(MODEL, X, Y_FLOAT), TypeError, FLOAT_LABELS),
        Case("PGDAT labels (N, 1)", lambda: p(MODEL, X, Y[:, None]), ValueError, r"y must have shape \(4,\)"),
        Case("PGDAT images on 0..255", lambda: p(MODEL, X * 255, Y), ValueError, r"pixels must be in \[0, 1\]"),
        Case("PGDAT L2 eps beyond the cube", lambda: l2p(MODEL, X, Y), ValueError, r"L2 eps = 100 exceeds sqrt\(d\)"),
        Case("PGDAT L-inf eps 8", lambda: losses.PGDAT(8, 2, 1), ValueError, r"eps = 8 is on the wrong scale"),
        Case("PGDAT steps 0", lambda: losses.PGDAT(0.1, 0.05, 0), ValueError, r"steps must be an int >= 1"),
        Case(
            "PGDAT random_start 'no'", lambda: losses.PGDAT(0.1, 0.05, 1, random_start="no"), TypeError, "random_start"
        ),
        Case(
            "PGDAT attack_mode 'test'",
            lambda: losses.PGDAT(0.1, 0.05, 1, attack_mode="test"),
            ValueError,
            "attack_mode",
        ),
        Case("PGDAT flat logits", lambda: p(FLAT, X, Y), BAD_LOGITS, LOGITS),
        Case("PGDAT wrong-batch logits", lambda: p(ONE_ROW, X, Y), BAD_LOGITS, LOGITS),
        Case("TRADES label >= num_classes", lambda: t(MODEL, X, Y_HIGH), ValueError, OUTSIDE),
        Case("TRADES label -100", lambda: t(MODEL, X, Y_IGNORE), ValueError, r"ignore index"),
        Case("TRADES float labels", lambda: t(MODEL, X, Y_FLOAT), TypeError, FLOAT_LABELS),
        Case("TRADES L2 eps beyond the cube", lambda: l2t(MODEL, X, Y), ValueError, r"L2 eps = 100 exceeds sqrt\(d\)"),
        Case("TRADES beta '6'", lambda: losses.TRADES(0.1, 0.05, 1, beta="6"), TypeError, r"beta must be a real"),
        Case("TRADES shared_depth 1", lambda: losses.TRADES(0.1, 0.05, 1, shared_depth=1), TypeError, "shared_depth"),
        Case("TRADES 3-D logits", lambda: t(THREE_D, X, Y), BAD_LOGITS, LOGITS),
        Case("cross_entropy label >= num_classes", lambda: losses.cross_entropy(MODEL, X, Y_HIGH), ValueError, OUTSIDE),
        Case("cross_entropy label -100", lambda: losses.cross_entropy(MODEL, X, Y_IGNORE), ValueError, "ignore index"),
        Case("cross_entropy float labels", lambda: losses.cross_entropy(MODEL, X, Y_FLOAT), TypeError, FLOAT_LABELS),
        Case("cross_entropy 3 labels, 4 images", lambda: losses.cross_entropy(MODEL, X, Y[:3]), ValueError, "y must"),
        Case("cross_entropy flat logits", lambda: losses.cross_entropy(FLAT, X, Y), BAD_LOGITS, LOGITS),
        Case("entropy of a list", lambda: losses.entropy([1.0, 2.0]), TypeError, r"logits must be a torch.Tensor"),
        Case("entropy of int logits", lambda: losses.entropy(torch.ones(2, 3, dtype=torch.long)), TypeError, "logits"),
    ]


def _threat_cases() -> List[Case]:
    small = torch.rand(4, 1, 4, 4)
    return [
        Case("project negative eps", lambda: threat.project(X, X, -0.1), ValueError, r"eps must be"),
        Case("project shapes differ", lambda: threat.project(X, small, 0.1), ValueError, r"x_adv .* shape"),
        Case("project norm 'L3'", lambda: threat.project(X, X, 0.1, "L3"), ValueError, r"unknown norm"),
        Case("project eps '0.1'", lambda: threat.project(X, X, "0.1"), TypeError, r"eps must be a real"),
        Case("random_start L-inf eps 2", lambda: threat.random_start(X, 2.0), ValueError, r"wrong scale"),
        Case("random_start of a list", lambda: threat.random_start([0.5], 0.1), TypeError, r"x must be a torch.Tensor"),
        Case(
            "perturbation_norm shapes differ", lambda: threat.perturbation_norm(X, small, "Linf"), ValueError, "shape"
        ),
        Case("ascent_step grad shape", lambda: threat.ascent_step(X, small, 0.1, "Linf"), ValueError, r"grad .*shape"),
        Case("ascent_step alpha -1", lambda: threat.ascent_step(X, X, -1.0, "Linf"), ValueError, r"alpha must be"),
        Case("check_eps '0.1'", lambda: threat.check_eps("0.1"), TypeError, r"eps must be a real"),
    ]


def _attack_cases() -> List[Case]:
    inter = lambda: IntermediateStateAttack(DEQ_MODEL, 0.1, steps=1, state_index=1)  # noqa: E731
    return [
        Case(
            "apgd_t n_classes 5, model 10",
            lambda: apgd_t(MODEL, 0.1, steps=1, n_classes=5)(X, Y),
            ValueError,
            r"n_classes = 5",
        ),
        Case(
            "apgd_t n_classes 20, model 10",
            lambda: apgd_t(MODEL, 0.1, steps=1, n_classes=20)(X, Y),
            ValueError,
            r"n_classes = 20",
        ),
        Case(
            "fab_t n_classes 5, model 10",
            lambda: fab_t(MODEL, 0.1, steps=1, n_classes=5)(X, Y),
            ValueError,
            r"n_classes = 5",
        ),
        Case(
            "autoattack n_classes 5",
            lambda: autoattack_standard(MODEL, 0.1, n_classes=5)(X, Y),
            ValueError,
            r"n_classes = 5",
        ),
        Case(
            "apgd_t n_classes 1", lambda: apgd_t(MODEL, 0.1, n_classes=1), ValueError, r"n_classes must be an int >= 2"
        ),
        Case(
            "apgd_t n_target_classes 10",
            lambda: apgd_t(MODEL, 0.1, n_target_classes=10),
            ValueError,
            "n_target_classes",
        ),
        Case("pgd label >= num_classes", lambda: _pgd1()(X, Y_HIGH), ValueError, OUTSIDE),
        Case("pgd label -100", lambda: _pgd1()(X, Y_IGNORE), ValueError, r"ignore index"),
        Case("pgd float labels", lambda: _pgd1()(X, Y_FLOAT), TypeError, FLOAT_LABELS),
        Case("pgd 3 labels, 4 images", lambda: _pgd1()(X, Y[:3]), ValueError, r"labels must have shape \(4,\)"),
        Case("pgd images on 0..255", lambda: _pgd1()(X * 255, Y), ValueError, r"pixels must be in \[0, 1\]"),
        Case("pgd L2 eps beyond the cube", lambda: pgd(MODEL, 100, norm="L2")(X, Y), ValueError, r"exceeds sqrt\(d\)"),
        Case("fgsm flat logits", lambda: fgsm(FLAT, 0.1)(X, Y), BAD_LOGITS, LOGITS),
        Case("fgsm wrong-batch logits", lambda: fgsm(ONE_ROW, 0.1)(X, Y), BAD_LOGITS, LOGITS),
        Case("square label >= num_classes", lambda: square(MODEL, 0.1, n_queries=2)(X, Y_HIGH), ValueError, OUTSIDE),
        Case("pgd steps 0", lambda: pgd(MODEL, 0.1, steps=0), ValueError, r"steps must be an int >= 1"),
        Case("make_attack eps '0.1'", lambda: make_attack("pgd", MODEL, "0.1"), TypeError, r"eps must be a real"),
        Case("make_attack unknown name", lambda: make_attack("pgdd", MODEL, 0.1), ValueError, r"unknown attack 'pgdd'"),
        Case("intermediate label >= num_classes", lambda: inter()(X, Y_HIGH), ValueError, OUTSIDE),
        Case("intermediate float labels", lambda: inter()(X, Y_FLOAT), TypeError, FLOAT_LABELS),
        Case(
            "intermediate on a plain model",
            lambda: IntermediateStateAttack(MODEL, 0.1, state_index=1),
            TypeError,
            "inject",
        ),
    ]


def _robust_accuracy_cases() -> List[Case]:
    return [
        Case("robust_accuracy label >= num_classes", _ra(MODEL, Y_HIGH), ValueError, OUTSIDE),
        Case("robust_accuracy negative label", _ra(MODEL, Y_NEG), ValueError, OUTSIDE),
        Case("robust_accuracy label -100", _ra(MODEL, Y_IGNORE), ValueError, "ignore index"),
        Case("robust_accuracy float labels", _ra(MODEL, Y_FLOAT), TypeError, FLOAT_LABELS),
        Case("robust_accuracy labels (N, 1)", _ra(MODEL, Y[:, None]), ValueError, r"y must have shape \(4,\)"),
        Case("robust_accuracy flat logits", _ra(FLAT, Y), BAD_LOGITS, LOGITS),
        Case("robust_accuracy 3-D logits", _ra(THREE_D, Y), BAD_LOGITS, LOGITS),
        Case("robust_accuracy wrong-batch logits", _ra(ONE_ROW, Y), BAD_LOGITS, LOGITS),
        Case(
            "robust_accuracy model object()",
            lambda: robust_accuracy(object(), _pgd1(), (X, Y)),
            TypeError,
            "model must",
        ),
        Case("robust_accuracy attack 'pgd'", lambda: robust_accuracy(MODEL, "pgd", (X, Y)), TypeError, "attack must"),
        Case("robust_accuracy n 0", _ra(MODEL, Y, n=0), ValueError, r"n must be an int >= 1"),
        Case("robust_accuracy eps '0.1'", _ra(MODEL, Y, eps="0.1"), TypeError, r"eps must be a real"),
        Case(
            "robust_accuracy images on 0..255",
            lambda: robust_accuracy(MODEL, _pgd1(), (X * 255, Y)),
            ValueError,
            "pixels",
        ),
        Case("predict of a list", lambda: predict(MODEL, [[0.5]]), TypeError, r"x must be a torch.Tensor"),
        Case("predict flat logits", lambda: predict(FLAT, X), BAD_LOGITS, LOGITS),
        Case(
            "predict batch_size 0",
            lambda: predict(MODEL, X, batch_size=0),
            ValueError,
            r"batch_size must be an int >= 1",
        ),
    ]


def _report_and_battery_cases() -> List[Case]:
    return [
        Case("evaluate_robustness eps_list '0.1'", _ev(MODEL, eps_list="0.1"), TypeError, EPS_LIST),
        Case("evaluate_robustness attacks 5", _ev(MODEL, attacks=5), TypeError, r"attacks must be"),
        Case(
            "evaluate_robustness params a str",
            _ev(MODEL, attacks=[("pgd", "steps=1")]),
            TypeError,
            r"evaluate_robustness: .*dict",
        ),
        Case("evaluate_robustness label >= num_classes", _ev(MODEL, Y_HIGH), ValueError, OUTSIDE),
        Case("evaluate_robustness label -100", _ev(MODEL, Y_IGNORE), ValueError, "ignore index"),
        Case("evaluate_robustness float labels", _ev(MODEL, Y_FLOAT), TypeError, FLOAT_LABELS),
        Case("evaluate_robustness flat logits", _ev(FLAT), BAD_LOGITS, LOGITS),
        Case("evaluate_robustness wrong-batch logits", _ev(ONE_ROW), BAD_LOGITS, LOGITS),
        Case("evaluate_robustness seed -1", _ev(MODEL, seed=-1), ValueError, r"seed must be an int >= 0"),
        Case("evaluate_robustness model object()", _ev(object()), TypeError, r"model must be a torch.nn.Module"),
        Case("strongest_attack eps_list '0.1'", _bat(MODEL, eps_list="0.1"), TypeError, EPS_LIST),
        Case("strongest_attack label >= num_classes", _bat(MODEL, Y_HIGH), ValueError, OUTSIDE),
        Case("strongest_attack label -100", _bat(MODEL, Y_IGNORE), ValueError, "ignore index"),
        Case("strongest_attack float labels", _bat(MODEL, Y_FLOAT), TypeError, FLOAT_LABELS),
        Case("strongest_attack flat logits", _bat(FLAT), BAD_LOGITS, LOGITS),
        Case("strongest_attack 3-D logits", _bat(THREE_D), BAD_LOGITS, LOGITS),
        Case("strongest_attack wrong-batch logits", _bat(ONE_ROW), BAD_LOGITS, LOGITS),
        Case("strongest_attack restarts 0", _bat(MODEL, budgets={"restarts": 0}), ValueError, r"restarts must be"),
        Case("strongest_attack state_indices 3", _bat(MODEL, budgets={"state_indices": 3}), TypeError, "state_indices"),
        Case("strongest_attack preset 'fast'", _bat(MODEL, preset="fast"), ValueError, r"unknown preset 'fast'"),
    ]


def _masking_cases() -> List[Case]:
    return [
        Case("masking_checks tol_samples -1", _mask(tol_samples=-1), ValueError, r"tol_samples must be an int >= 0"),
        Case("masking_checks max_gap -0.1", _mask(max_gap=-0.1), ValueError, r"max_gap must be"),
        Case("masking_checks seed -1", _mask(seed=-1), ValueError, r"seed must be an int >= 0"),
        Case("masking_checks checks 'large_eps'", _mask(checks="large_eps"), TypeError, r"checks must be a sequence"),
        Case("masking_checks float labels", _mask(y=Y_FLOAT), TypeError, FLOAT_LABELS),
        Case("masking_checks label >= num_classes", _mask(y=Y_HIGH), ValueError, OUTSIDE),
        Case("masking_checks flat logits", _mask(FLAT), BAD_LOGITS, LOGITS),
        Case("masking_checks budget 0", _mask(budget=0), ValueError, r"budget must be"),
        Case(
            "check_monotone_eps eps_list '0.1'",
            lambda: check_monotone_eps(MODEL, X, Y, "0.1", steps=1),
            TypeError,
            EPS_LIST,
        ),
        Case(
            "check_steps_restarts steps 10",
            lambda: check_steps_restarts(MODEL, X, Y, 0.1, steps=10),
            TypeError,
            r"steps must be a pair",
        ),
        Case(
            "check_steps_restarts steps (50, 10)",
            lambda: check_steps_restarts(MODEL, X, Y, 0.1, steps=(50, 10)),
            ValueError,
            r"steps must be",
        ),
        Case(
            "check_large_eps max_accuracy 2",
            lambda: check_large_eps(MODEL, X, Y, max_accuracy=2),
            ValueError,
            "max_accuracy",
        ),
        Case(
            "check_black_box tol_samples -1",
            lambda: check_black_box(MODEL, X, Y, 0.1, tol_samples=-1),
            ValueError,
            "tol_samples",
        ),
        Case(
            "check_determinism label >= num_classes",
            lambda: check_determinism_gradients(MODEL, X, Y_HIGH),
            ValueError,
            OUTSIDE,
        ),
        Case(
            "check_gradient_choices state_indices 3",
            lambda: check_gradient_choices(DEQ_MODEL, X, Y, 0.1, steps=1, state_indices=3),
            TypeError,
            "state_indices",
        ),
    ]


def _dynamics_cases() -> List[Case]:
    u = DEQ_MODEL.inject(X).detach()
    return [
        Case(
            "state_predictions label >= num_classes",
            lambda: dynamics.state_predictions(DEQ_MODEL, X, 2, y=Y_HIGH),
            ValueError,
            OUTSIDE,
        ),
        Case(
            "state_predictions float labels",
            lambda: dynamics.state_predictions(DEQ_MODEL, X, 2, y=Y_FLOAT),
            TypeError,
            "int64",
        ),
        Case(
            "state_predictions model object()",
            lambda: dynamics.state_predictions(object(), X),
            TypeError,
            "DEQClassifier",
        ),
        Case(
            "state_predictions x a list",
            lambda: dynamics.state_predictions(DEQ_MODEL, [[0.5]]),
            TypeError,
            r"x .*must be a torch.Tensor",
        ),
        Case("solver_iterate deq object()", lambda: dynamics.solver_iterate(object(), u, 2), TypeError, r"deq must be"),
        Case(
            "solver_iterate steps 0",
            lambda: dynamics.solver_iterate(DEQ_MODEL.deq, u, 0),
            ValueError,
            r"steps must be an int >= 1",
        ),
        Case(
            "solver_trajectory steps 0",
            lambda: dynamics.solver_trajectory(DEQ_MODEL, u, 0),
            ValueError,
            r"steps must be an int >= 1",
        ),
        Case(
            "head_on_states (N, state)", lambda: dynamics.head_on_states(DEQ_MODEL, u), ValueError, r"states must have"
        ),
    ]


CASES: List[Case] = (
    _loss_cases()
    + _threat_cases()
    + _attack_cases()
    + _robust_accuracy_cases()
    + _report_and_battery_cases()
    + _masking_cases()
    + _dynamics_cases()
)


# ---------------------------------------------------------------------------------------------------- the verdicts
def classify(case: Case) -> Tuple[str, str]:
    """("clear" | "unclear" | "silent", what happened)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            case.call()
        except case.exc as e:
            if re.search(case.match, str(e)):
                return "clear", f"{type(e).__name__}: {e}"
            return "unclear", f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - the probe's point: what else comes out
            return "unclear", f"{type(e).__name__}: {e}"
    return "silent", "returned without a word"


def test_the_cases_are_distinct():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_error(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(case.exc, match=case.match):
            case.call()


def _main() -> int:
    verdicts = [(c, *classify(c)) for c in CASES]
    counts = {k: sum(v == k for _, v, _ in verdicts) for k in ("clear", "unclear", "silent")}
    for c, v, what in verdicts:
        if v != "clear":
            print(f"{v:8s} {c.id}: {what[:160]}")
    print(f"{len(CASES)} cases: " + ", ".join(f"{counts[k]} {k}" for k in counts))
    return 0 if counts["clear"] == len(CASES) else 1


if __name__ == "__main__":
    sys.exit(_main())
