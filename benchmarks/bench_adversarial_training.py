"""A PGD-AT epoch with deqlib against the same epoch built from torchdeq's DEQ and torchattacks' PGD, in one run.

The same network on both sides, from the same initial weights: 28x28 mnist5k digits, pixel normalisation, a linear
injection u = U x + b (784 -> 128), the cell f(z, u) = tanh(W z + u) (no bias, width 128), a linear head; Anderson
(m 5) forward and backward, implicit (IFT) gradients, max_iter 30 / tol 1e-4 (relative) forward, 60 / 1e-4 backward;
PGD-AT with L-infinity PGD, ε 0.2, step 0.05, 7 steps, random start; Adam 1e-3; batch 64; one epoch of the 4,000
training digits; one thread.

* deqlib: :func:`deqlib.train.fit` with :class:`deqlib.losses.PGDAT` (warm starts on, the default) on
  :func:`deqlib.cells.mlp_classifier`.
* reference: ``torchdeq.get_deq(ift=True, ...)`` around the same cell in a plain training loop, the inner attack
  ``torchattacks.PGD``. torchdeq attaches no input gradient in ``eval()``, so the attack runs in train mode
  (``set_model_training_mode(model_training=True)``), as torchattacks' docs say for such models.

The two sides alternate (deqlib, reference, deqlib, reference) and the faster of each two is recorded.
Run: ``python -m benchmarks.run --parts adversarial`` (about 4 minutes on a 2-core CPU; ``--quick``: 512 digits).
"""

from __future__ import annotations

import time
from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from deqlib import data
from deqlib.cells import mlp_classifier
from deqlib.losses import PGDAT
from deqlib.train import fit

from .common import log

WIDTH, BATCH, LR = 128, 64, 1e-3
SOLVE = {"max_iter": 30, "tol": 1e-4, "backward_max_iter": 60}
PGD = {"eps": 0.2, "alpha": 0.05, "steps": 7}


def _deqlib_model(train, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return mlp_classifier(
        train.image_shape, train.num_classes, mean=train.mean, std=train.std, width=WIDTH, solver="anderson", **SOLVE
    )


class TorchdeqClassifier(nn.Module):
    """The deqlib classifier's layers (copied), with torchdeq's DEQ in place of deqlib's."""

    def __init__(self, source: nn.Module) -> None:
        super().__init__()
        from torchdeq import get_deq

        self.register_buffer("mean", source.normalize.mean.clone())
        self.register_buffer("std", source.normalize.std.clone())
        self.injection = source.injection
        self.linear = source.deq.cell.linear
        self.head = source.head
        self.deq = get_deq(
            ift=True,
            f_solver="anderson",
            b_solver="anderson",
            f_max_iter=SOLVE["max_iter"],
            b_max_iter=SOLVE["backward_max_iter"],
            f_tol=SOLVE["tol"],
            b_tol=SOLVE["tol"],
            f_stop_mode="rel",
            b_stop_mode="rel",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.injection((x - self.mean) / self.std)
        z_out, _ = self.deq(lambda z: torch.tanh(self.linear(z) + u), torch.zeros_like(u))
        return self.head(z_out[-1])


def _deqlib_epoch(train, subset) -> Dict[str, Any]:
    model = _deqlib_model(train)
    t0, c0 = time.perf_counter(), time.process_time()
    hist = fit(model, subset, loss_fn=PGDAT(**PGD), epochs=1, batch_size=BATCH, lr=LR, progress=False, device="cpu")
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "train_loss": hist["train_loss"][-1],
    }


def _reference_epoch(train, subset) -> Dict[str, Any]:
    import torchattacks

    model = TorchdeqClassifier(_deqlib_model(train))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loader = DataLoader(subset, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))
    atk = torchattacks.PGD(model, random_start=True, **PGD)
    atk.set_model_training_mode(model_training=True)
    losses = []
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()
    for x, y in loader:
        x_adv = atk(x, y)
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "train_loss": sum(losses) / len(losses),
    }


def run(*, quick: bool = False) -> Dict[str, Any]:
    train = data.load("mnist5k", "train")
    subset = Subset(train, range(512 if quick else len(train)))
    best: Dict[str, Dict[str, Any]] = {}
    for side in ("deqlib", "reference", "deqlib", "reference"):
        res = _deqlib_epoch(train, subset) if side == "deqlib" else _reference_epoch(train, subset)
        log(
            f"adversarial: {side}: {res['seconds']:.1f} s ({res['cpu_seconds']:.1f} s CPU), train loss {res['train_loss']:.3f}"
        )
        if side not in best or res["seconds"] < best[side]["seconds"]:
            best[side] = dict(res, repeats=2)
    out = {
        "settings": {"width": WIDTH, "batch": BATCH, "lr": LR, "solve": SOLVE, "pgd": PGD, "samples": len(subset)},
        "deqlib": best["deqlib"],
        "reference": best["reference"],
        "ratio_deqlib_over_reference": best["deqlib"]["seconds"] / best["reference"]["seconds"],
        "cpu_ratio_deqlib_over_reference": best["deqlib"]["cpu_seconds"] / best["reference"]["cpu_seconds"],
    }
    log(
        f"adversarial: ratio deqlib / torchdeq+torchattacks = {out['ratio_deqlib_over_reference']:.2f} "
        f"(CPU time of the same runs: {out['cpu_ratio_deqlib_over_reference']:.2f})"
    )
    return out
