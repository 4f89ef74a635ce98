"""Small trained DEQ classifiers on the digits, shared by the tests of deqlib.dynamics and deqlib.defenses.

Each is trained once per test session (a few seconds) and cached; a test that changes one (e.g. ``.double()``) must
restore it.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deqlib import data
from deqlib.cells import classifier_for
from deqlib.losses import cross_entropy


def fit_briefly(
    model: nn.Module, X, y, loss_fn=cross_entropy, *, epochs: int, lr: float = 1e-2, batch: int = 64, seed: int = 0
) -> nn.Module:
    """A minimal training loop with the fit protocol loss_fn(model, x, y) -> (loss, logits); the model in eval()."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), batch):
            idx = perm[i : i + batch]
            loss, _ = loss_fn(model, X[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@lru_cache(maxsize=None)
def digits():
    """(train set, its tensors, 40 test digits)."""
    train = data.load("digits")
    return train, train.tensors(), data.load("digits", "test").subset(40, seed=0).tensors()


@lru_cache(maxsize=None)
def trained_mlp(fixed_point: bool = False) -> nn.Module:
    """An MLP DEQ of width 32 trained 3 epochs; with ``fixed_point`` plain fixed-point iteration (tol 1e-12), whose
    iterates are exactly z_{k+1} = f(z_k, u)."""
    train, (X, y), _ = digits()
    torch.manual_seed(0)
    options = dict(solver="fixed_point", tol=1e-12) if fixed_point else {}
    return fit_briefly(classifier_for(train, "mlp", width=32, **options), X, y, epochs=3)


def unrolled_input_gradient(model: nn.Module, x, y, k: int):
    """d CE(head(z_k), y) / dx with z_k = k plain steps z <- f(z, u) from z_0 = 0, with the graph (the reference)."""
    xr = x.clone().requires_grad_()
    u = model.inject(xr)
    z = torch.zeros(len(x), *model.deq.cell.state_shape(u)[1:])
    for _ in range(k):
        z = model.deq.cell(z, u)
    (g,) = torch.autograd.grad(F.cross_entropy(model.head(z), y), xr)
    return g


# Fixtures for the test modules (``from _digits_deq import digits, trained, trained_fp``).


@pytest.fixture(name="digits", scope="module")
def digits_fixture():
    return digits()


@pytest.fixture(name="trained", scope="module")
def trained_fixture():
    return trained_mlp()


@pytest.fixture(name="trained_fp", scope="module")
def trained_fp_fixture():
    """Plain fixed-point iteration: the iterates are exactly z_{k+1} = f(z_k, u)."""
    return trained_mlp(fixed_point=True)
