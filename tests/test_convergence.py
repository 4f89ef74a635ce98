"""Non-convergence is never silent (issue 9, finding 1): the warning, the counts on every DEQ, the quiet block, the
model-wide report and the adjoint's own budget."""

import warnings

import pytest
import torch
from torch import nn

import deqlib
from deqlib import DEQ, MLPCell
from deqlib.diagnostics import convergence_report
from deqlib.solvers import (
    SolverConvergenceWarning,
    SolverDivergenceWarning,
    fixed_point,
    quiet_convergence,
)


class RateCell(nn.Module):
    """f(z, x) = r * z + 1 with a per-sample rate r = x[:, :1]: fixed point 1 / (1 - r), reached in ~log(tol)/log(r)
    steps, so the rates choose which samples converge within a budget."""

    def forward(self, z, x):
        return x[:, :1] * z + 1.0


RATES = torch.tensor([[0.1], [0.99], [0.2], [0.995]], dtype=torch.float64)  # samples 1 and 3 are slow
FAST = torch.tensor([True, False, True, False])


def rate_deq(**options):
    return DEQ(RateCell(), **{"solver": "fixed_point", "max_iter": 20, "tol": 1e-8, **options})


def caught(fn):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = fn()
    return out, [w for w in record if issubclass(w.category, SolverConvergenceWarning)]


def test_forward_and_adjoint_non_convergence_each_warn_once():
    deq = rate_deq()
    x = RATES.clone().requires_grad_()
    z, forward_warnings = caught(lambda: deq(x))
    assert torch.equal(deq.last_info.converged, FAST)
    assert len(forward_warnings) == 1
    msg = str(forward_warnings[0].message)
    assert msg.startswith("DEQ forward solve: 2/4 samples did not converge (fixed_point, max_iter 20, tol 1e-08 rel")
    assert "worst rel. residual" in msg
    _, backward_warnings = caught(lambda: z.sum().backward())
    assert len(backward_warnings) == 1
    assert str(backward_warnings[0].message).startswith("DEQ adjoint solve (IFT backward): 2/4 samples")
    assert "max_iter 40" in str(backward_warnings[0].message)  # the adjoint's default budget: 2 x max_iter


def test_no_warning_when_every_sample_converges():
    deq = DEQ(MLPCell(8), solver="anderson", tol=1e-6)
    x = torch.randn(5, 8, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deq(x).sum().backward()
    assert deq.convergence.fractions() == {"forward": 0.0, "backward": 0.0}


def test_only_the_adjoint_warns_when_only_its_budget_is_short():
    torch.manual_seed(0)
    deq = DEQ(MLPCell(8, weight_scale=0.9), solver="fixed_point", tol=1e-5, max_iter=200, backward_max_iter=2)
    x = torch.randn(3, 8, requires_grad=True)
    z, fw = caught(lambda: deq(x))
    _, bw = caught(lambda: z.sum().backward())
    assert fw == [] and len(bw) == 1 and "max_iter 2," in str(bw[0].message)


def test_the_warning_can_be_turned_into_an_error():
    deq = rate_deq()
    x = RATES.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverConvergenceWarning)
        with pytest.raises(SolverConvergenceWarning, match="DEQ forward solve: 2/4"):
            deq(x)
        z = rate_deq(backward_max_iter=200)(RATES * FAST.double().unsqueeze(1))  # the fast samples only ...
        assert z.shape == (4, 1)  # ... converge: no error
        with pytest.raises(SolverConvergenceWarning, match="adjoint"):
            rate_deq(max_iter=5000, backward_max_iter=40)(x).sum().backward()  # the forward converges, not the adjoint
    assert deq.convergence.forward_nonconverged == 2  # counted before it warned


def test_divergence_is_a_kind_of_non_convergence():
    assert issubclass(SolverDivergenceWarning, SolverConvergenceWarning)
    assert issubclass(SolverConvergenceWarning, RuntimeWarning)
    assert deqlib.SolverConvergenceWarning is SolverConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverConvergenceWarning)
        with pytest.raises(SolverDivergenceWarning):
            fixed_point(lambda z: torch.exp(z) + 1.0, torch.zeros(2, 3), max_iter=100)


def test_counts_accumulate_per_deq_and_reset():
    deq = rate_deq()
    c = deq.convergence
    assert (c.forward_samples, c.backward_samples) == (0, 0) and c.fractions() == {"forward": None, "backward": None}
    with quiet_convergence():
        for _ in range(2):
            deq(RATES.clone().requires_grad_()).sum().backward()
        deq(RATES[:1])  # a fast sample, forward only
    assert (c.forward_solves, c.forward_samples, c.forward_nonconverged) == (3, 9, 4)
    assert (c.backward_solves, c.backward_samples, c.backward_nonconverged) == (2, 8, 4)
    assert c.fractions() == pytest.approx({"forward": 4 / 9, "backward": 0.5})
    deq.solve(RATES, max_iter=1)  # analysis solves, truncated on purpose, are not counted ...
    assert c.forward_samples == 9
    c.reset()
    assert c.fractions() == {"forward": None, "backward": None} and c.forward_solves == 0
    _, w = caught(lambda: deq.solve(RATES, max_iter=1))  # ... and do not warn: the caller gets the report
    assert w == []


def test_quiet_convergence_silences_every_solve_but_counts_go_on():
    deq = rate_deq()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with quiet_convergence():
            with quiet_convergence():  # re-entrant
                deq(RATES.clone().requires_grad_()).sum().backward()
            deq(RATES)
            fixed_point(lambda z: torch.exp(z) + 1.0, torch.zeros(2, 3), max_iter=100)  # divergence: silenced too
    assert deq.convergence.forward_nonconverged == 4 and deq.convergence.backward_nonconverged == 2
    assert not deqlib.solvers.convergence_warnings_quiet()
    _, w = caught(lambda: deq(RATES))  # warns again after the block
    assert len(w) == 1


def test_convergence_report_sums_the_deqs_of_a_model_inside_the_block():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = rate_deq(), DEQ(MLPCell(1), tol=1e-6)

        def forward(self, x):
            return self.a(x) + self.b(x.float()).double()

    model = Two()
    x = RATES.clone().requires_grad_()
    with quiet_convergence():
        model(x)  # before the block: not in the report
        with convergence_report(model) as report:
            model(x).sum().backward()
            model.a.solve(RATES, max_iter=1)  # analysis: not counted
        model(x)  # after the block: not in the report
    d = report.as_dict()
    assert d["forward_solves"] == 2 and d["backward_solves"] == 2
    assert d["forward_samples"] == 8 and d["forward_nonconverged"] == 2
    assert d["forward_nonconverged_fraction"] == 0.25 and d["backward_nonconverged_fraction"] == 0.25
    assert set(d) >= {"forward_nonconverged_fraction", "backward_nonconverged_fraction", "forward_solves"}
    assert not model.a.convergence._sinks  # the report detached itself
    assert model.a.convergence.forward_solves == 3  # the DEQ's own counts saw everything
    with pytest.raises(TypeError, match="convergence_report: model must be an nn.Module"):
        with convergence_report("model"):
            pass


def test_the_adjoint_gets_its_own_budget_enough_where_the_forward_converged():
    assert DEQ(MLPCell(4), max_iter=7).backward_options["max_iter"] == 14
    assert DEQ(MLPCell(4), max_iter=7, backward_max_iter=3).backward_options["max_iter"] == 3
    # A case (found by search) where the forward converges within max_iter but the adjoint needs a few more steps.
    torch.manual_seed(0)
    cell = MLPCell(16, weight_scale=0.9).double()
    x = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    w = torch.linspace(-1, 1, 16, dtype=torch.float64)
    infos = {}
    for label, extra in {"default": {}, "old default": {"backward_max_iter": 30}}.items():
        deq = DEQ(cell, solver="fixed_point", max_iter=30, tol=1e-4, **extra)
        with quiet_convergence():
            (deq(x) * w).sum().backward()
        assert deq.last_info.all_converged
        infos[label] = deq.last_backward_info
    assert infos["default"].all_converged and int(infos["default"].steps.max()) > 30
    assert not infos["old default"].all_converged
