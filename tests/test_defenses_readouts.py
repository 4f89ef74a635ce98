"""Tests for deqlib.defenses.readouts: early / averaged readouts of the solver's iterates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _digits_deq import (  # noqa: F401 (the fixtures)
    digits_fixture,
    trained_fixture,
    trained_fp_fixture,
    unrolled_input_gradient,
)
from torch import nn

from deqlib.defenses import AveragedStateClassifier, EarlyStateClassifier
from deqlib.dynamics import state_predictions

# ---------------------------------------------------------------------------------------------- readouts


@pytest.mark.parametrize("grad", ["phantom", "unroll"])
def test_early_state_readout_value_shape_and_gradient(digits, trained, grad):
    _, _, (x, y) = digits
    early = EarlyStateClassifier(trained, 3, grad=grad)
    xr = x.clone().requires_grad_()
    logits = early(xr)
    assert logits.shape == (len(x), 10)
    assert torch.allclose(logits, state_predictions(trained, x, 3)["logits"][3], atol=1e-6)
    (g,) = torch.autograd.grad(F.cross_entropy(logits, y), xr)
    assert g.abs().sum() > 0


def test_early_state_unroll_gradient_is_exact_for_fixed_point(digits, trained_fp):
    _, _, (x, y) = digits
    model = trained_fp
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(EarlyStateClassifier(model, 4, grad="unroll")(xr), y), xr)
    g_ref = unrolled_input_gradient(model, x, y, 4)
    assert torch.allclose(g, g_ref, atol=1e-6)


def test_averaged_state_readout(digits, trained):
    _, _, (x, y) = digits
    states = state_predictions(trained, x, 8)["states"]
    for avg, idx in (
        (AveragedStateClassifier(trained, [2, 5, 7]), [2, 5, 7]),
        (AveragedStateClassifier(trained, last_k=3, steps=8), [6, 7, 8]),
        (AveragedStateClassifier(trained, [1, 3], grad="unroll"), [1, 3]),
    ):
        assert avg.indices == tuple(idx)
        xr = x.clone().requires_grad_()
        logits = avg(xr)
        assert logits.shape == (len(x), 10)
        assert torch.allclose(logits, trained.head(states[idx].mean(0)), atol=1e-5)
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y), xr)
        assert g.abs().sum() > 0


def test_readouts_validate_arguments(trained):
    with pytest.raises(ValueError, match=">= 1"):
        EarlyStateClassifier(trained, 0)
    with pytest.raises(ValueError, match="grad"):
        EarlyStateClassifier(trained, 2, grad="ift")
    with pytest.raises(ValueError, match="exactly one"):
        AveragedStateClassifier(trained)
    with pytest.raises(ValueError, match="exactly one"):
        AveragedStateClassifier(trained, [1], last_k=2)
    with pytest.raises(ValueError, match="distinct"):
        AveragedStateClassifier(trained, [2, 2])
    with pytest.raises(ValueError, match="exceeds"):
        AveragedStateClassifier(trained, last_k=5, steps=3)
    with pytest.raises(TypeError, match="DEQClassifier"):
        EarlyStateClassifier(nn.Linear(2, 2), 1)


def _phantom_reference_grad(model, x, y, indices, steps, tau):
    """d CE / dx of head(mean_i z_i) with each z_i's gradient taken through ``steps`` damped steps of damping tau."""
    xr = x.clone().requires_grad_()
    u = model.inject(xr)
    states = state_predictions(model, x, max(indices))["states"]
    through = []
    for i in indices:
        z = states[i]
        for _ in range(steps):
            z = (1 - tau) * z + tau * model.deq.cell(z, u)
        through.append(states[i] + (z - z.detach()))
    (g,) = torch.autograd.grad(F.cross_entropy(model.head(torch.stack(through).mean(0)), y), xr)
    return g


@pytest.mark.parametrize("kind", ["early", "averaged"])
def test_readouts_use_the_phantom_steps_and_tau_they_were_built_with(digits, trained, kind):
    """The surrogate gradient: phantom_steps damped steps of damping phantom_tau, as given (or the DEQ's)."""
    _, _, (x, y) = digits
    x, y = x[:12], y[:12]
    indices = [3] if kind == "early" else [2, 4]

    def build(**kw):
        if kind == "early":
            return EarlyStateClassifier(trained, indices[0], **kw)
        return AveragedStateClassifier(trained, indices, **kw)

    def grad_of(readout):
        xr = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(F.cross_entropy(readout(xr), y), xr)
        return g

    readout = build(phantom_steps=2, phantom_tau=0.3)
    assert (readout.phantom_steps, readout.phantom_tau) == (2, 0.3)
    g = grad_of(readout)
    torch.testing.assert_close(g, _phantom_reference_grad(trained, x, y, indices, 2, 0.3), rtol=1e-4, atol=1e-7)
    # not vacuous: other settings give another gradient
    assert not torch.allclose(g, _phantom_reference_grad(trained, x, y, indices, 5, 0.5), rtol=1e-3, atol=1e-6)
    # the default is the DEQ's own phantom_steps / phantom_tau
    default = build()
    deq = trained.deq
    assert (default.phantom_steps, default.phantom_tau) == (deq.phantom_steps, deq.phantom_tau)
    torch.testing.assert_close(
        grad_of(default),
        _phantom_reference_grad(trained, x, y, indices, deq.phantom_steps, deq.phantom_tau),
        rtol=1e-4,
        atol=1e-7,
    )
    with pytest.raises(ValueError, match="phantom_tau"):
        build(phantom_tau=1.5)
    with pytest.raises(ValueError, match="phantom_steps"):
        build(phantom_steps=0)
