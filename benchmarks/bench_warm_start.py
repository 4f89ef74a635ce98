"""Warm starts (``deqlib.warm_start``) against cold starts, side by side in one run on the same model and digits.

* AutoAttack "standard" (APGD-CE, APGD-T, FAB-T, Square 5000 queries; ``deqlib.attacks.autoattack_standard``) on a
  PGD-AT DEQ (the book's fast mnist5k recipe, ``deqlib.recipes.recipe("mnist5k")``: a conv cell with 32 channels,
  Anderson, IFT, max_iter 20, tol 1e-3, backward_max_iter 8), 200 mnist5k test digits, L-infinity ε 0.1: deqlib with
  its warm starts (the default) against the same attack inside ``warm_starts(model, enabled=False)``. Recorded: time,
  the robust / non-robust verdict per sample in both runs (and how many differ), robust accuracy, the converged
  fraction of the solves, and how many solves started warm.
* One PGD-AT epoch (``fit`` with ``PGDAT(eps=0.2, alpha=0.05, steps=7)``, 4,000 training digits, batch 64), with and
  without warm starts, from the same initial weights: cold, warm, cold, warm; the faster of each two is recorded.

Run: ``python -m benchmarks.run --parts warmstart`` (about 6 minutes on a 2-core CPU; ``--quick``: 40 digits).
"""

from __future__ import annotations

import time
from typing import Any, Dict

import torch
from torch.utils.data import Subset

from deqlib import cells, data
from deqlib.attacks import autoattack_standard
from deqlib.losses import PGDAT
from deqlib.recipes import recipe
from deqlib.train import fit
from deqlib.warm_start import warm_starts

from .common import log

EPS = 0.1
PGD = {"eps": 0.2, "alpha": 0.05, "steps": 7}
N_DIGITS = 200
TRAIN_EPOCHS = 3


def _model(seed: int = 0):
    r = recipe("mnist5k", mode="fast")
    train = data.load(r["dataset"], "train")
    torch.manual_seed(seed)
    return r, train, cells.classifier_for(train, r["kind"], **r["model"])


def _fit(model, train, r, epochs: int, warm: bool) -> Dict[str, Any]:
    opts = dict(r["fit"], epochs=epochs)
    with warm_starts(model, enabled=warm):
        t0 = time.perf_counter()
        hist = fit(model, train, loss_fn=PGDAT(**PGD), progress=False, device="cpu", **opts)
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "train_loss": hist["train_loss"][-1],
        "solver_steps": hist["solver_steps"][-1],
        "solver_nonconverged": hist["solver_nonconverged"][-1],
        "backward_nonconverged": hist["backward_nonconverged"][-1],
    }


def _attack(model, x, y, warm: bool) -> Dict[str, Any]:
    before = model.deq.convergence.as_dict()
    torch.manual_seed(0)
    atk = autoattack_standard(model, eps=EPS, n_classes=10)
    with warm_starts(model, enabled=warm) as pools:
        t0 = time.perf_counter()
        adv = atk(x, y)
        seconds = time.perf_counter() - t0
        stats = dict(pools[0].stats) if pools else None
    after = model.deq.convergence.as_dict()
    with torch.no_grad():
        robust = model(adv).argmax(1) == y
    solves = after["forward_samples"] - before["forward_samples"]
    nonconv = after["forward_nonconverged"] - before["forward_nonconverged"]
    adj = after["backward_samples"] - before["backward_samples"]
    adj_nonconv = after["backward_nonconverged"] - before["backward_nonconverged"]
    return {
        "seconds": seconds,
        "robust_accuracy": robust.float().mean().item(),
        "robust": robust.tolist(),
        "forward_converged_fraction": 1 - nonconv / max(solves, 1),
        "adjoint_converged_fraction": 1 - adj_nonconv / max(adj, 1),
        "forward_sample_solves": solves,
        "pool_stats": stats,
    }


def run(*, quick: bool = False) -> Dict[str, Any]:
    n_digits = 40 if quick else N_DIGITS
    r, train, model = _model()
    epoch_train = Subset(train, range(512 if quick else len(train)))
    # one PGD-AT epoch from the same initial weights, cold and warm interleaved twice; the faster of each kept
    epochs: Dict[str, Any] = {}
    for warm in (False, True, False, True):
        _, _, fresh = _model()
        name = "warm" if warm else "cold"
        res = _fit(fresh, epoch_train, r, 1, warm)
        log(f"warmstart: PGD-AT epoch ({name}): {res}")
        if name not in epochs or res["seconds"] < epochs[name]["seconds"]:
            epochs[name] = dict(res, repeats=2)
    # the attacked model: PGD-AT for a few epochs (warm starts on, the default)
    _fit(model, epoch_train, r, 1 if quick else TRAIN_EPOCHS, True)
    model.eval()
    x, y = data.load("mnist5k", "test").subset(n_digits, seed=0).tensors()
    runs = {"warm": _attack(model, x, y, True), "cold": _attack(model, x, y, False)}
    differ = sum(a != b for a, b in zip(runs["warm"]["robust"], runs["cold"]["robust"]))
    out = {
        "settings": {
            "attack": f"autoattack_standard(eps={EPS}, L-infinity)",
            "digits": n_digits,
            "model": r["model"],
            "pgd_at": PGD,
            "train_epochs": 1 if quick else TRAIN_EPOCHS,
        },
        "autoattack": runs,
        "verdicts_differ": differ,
        "autoattack_time_ratio_warm_over_cold": runs["warm"]["seconds"] / runs["cold"]["seconds"],
        "pgd_at_epoch": epochs,
        "pgd_at_epoch_time_ratio_warm_over_cold": epochs["warm"]["seconds"] / epochs["cold"]["seconds"],
    }
    log(
        f"warmstart: AutoAttack {runs['warm']['seconds']:.1f} s warm vs {runs['cold']['seconds']:.1f} s cold "
        f"(ratio {out['autoattack_time_ratio_warm_over_cold']:.2f}); verdicts differ on {differ}/{n_digits}"
    )
    return out
