"""Warm starts (``deqlib.warm_start``) against cold starts, side by side in one run on the same model and digits.

* AutoAttack "standard" (APGD-CE, APGD-T, FAB-T, Square 5000 queries; ``deqlib.attacks.autoattack_standard``) on the
  zoo's PGD-AT DEQ (``zoo.load("mnist5k-mlp-pgdat")``: MLP DEQ width 128, Anderson 30 steps, tol 1e-4, IFT; PGD-AT
  ε 0.2), 200 mnist5k test digits, L-infinity ε 0.1: deqlib with its warm starts (the default) against the same
  attack inside ``warm_starts(model, enabled=False)``. Recorded: time, the robust / non-robust verdict per sample in
  both runs (and how many differ), clean and robust accuracy, the converged fraction of the solves, and how many
  solves started warm.
* One PGD-AT epoch of the same recipe (``fit`` with its ``PGDAT(eps=0.2, alpha=0.05, steps=7)``, 4,000 training
  digits, batch 64), with and without warm starts, from the same initial weights: cold, warm, cold, warm; the faster
  of each two is recorded.

Run: ``python -m benchmarks.run --parts warmstart`` (about 10 minutes on a 2-core CPU; ``--quick``: 40 digits).
"""

from __future__ import annotations

import time
from typing import Any, Dict

import torch
from torch.utils.data import Subset

from deqlib import data, zoo
from deqlib.attacks import autoattack_standard
from deqlib.losses import PGDAT
from deqlib.train import fit
from deqlib.warm_start import warm_starts

from .common import log

EPS = 0.1
PGD = {"eps": 0.2, "alpha": 0.05, "steps": 7}
N_DIGITS = 200
MODEL = "mnist5k-mlp-pgdat"


def _fit(recipe, train, warm: bool, n_samples: int) -> Dict[str, Any]:
    model = zoo.build(recipe)
    opts = dict(recipe.fit, epochs=1)
    with warm_starts(model, enabled=warm):
        t0, c0 = time.perf_counter(), time.process_time()
        hist = fit(model, Subset(train, range(n_samples)), loss_fn=PGDAT(**PGD), progress=False, device="cpu", **opts)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
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
        t0, c0 = time.perf_counter(), time.process_time()
        adv = atk(x, y)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
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
        "cpu_seconds": cpu,
        "robust_accuracy": robust.float().mean().item(),
        "robust": robust.tolist(),
        "forward_converged_fraction": 1 - nonconv / max(solves, 1),
        "adjoint_converged_fraction": 1 - adj_nonconv / max(adj, 1),
        "forward_sample_solves": solves,
        "pool_stats": stats,
    }


def run(*, quick: bool = False) -> Dict[str, Any]:
    n_digits = 40 if quick else N_DIGITS
    recipe = zoo.get(MODEL)
    assert {k: recipe.loss[k] for k in PGD} == PGD, "the epoch part trains the recipe's own PGD-AT"
    train = data.load(recipe.dataset, "train")
    epochs: Dict[str, Any] = {}
    for warm in (False, True, False, True):
        name = "warm" if warm else "cold"
        res = _fit(recipe, train, warm, 512 if quick else len(train))
        log(f"warmstart: PGD-AT epoch ({name}): {res}")
        if name not in epochs or res["seconds"] < epochs[name]["seconds"]:
            epochs[name] = dict(res, repeats=2)
    model = zoo.load(MODEL, allow_training=False)
    x, y = data.load(recipe.dataset, "test").subset(n_digits, seed=0).tensors()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    runs = {"warm": _attack(model, x, y, True), "cold": _attack(model, x, y, False)}
    differ = sum(a != b for a, b in zip(runs["warm"]["robust"], runs["cold"]["robust"]))
    out = {
        "settings": {
            "attack": f"autoattack_standard(eps={EPS}, L-infinity)",
            "digits": n_digits,
            "model": f"zoo: {MODEL}",
            "recipe": recipe.hashed_fields(),
            "pgd_at": PGD,
            "train_epochs": recipe.fit["epochs"],
        },
        "clean_accuracy": clean,
        "autoattack": runs,
        "verdicts_differ": differ,
        "autoattack_time_ratio_warm_over_cold": runs["warm"]["seconds"] / runs["cold"]["seconds"],
        "autoattack_cpu_time_ratio_warm_over_cold": runs["warm"]["cpu_seconds"] / runs["cold"]["cpu_seconds"],
        "pgd_at_epoch": epochs,
        "pgd_at_epoch_time_ratio_warm_over_cold": epochs["warm"]["seconds"] / epochs["cold"]["seconds"],
    }
    log(
        f"warmstart: AutoAttack {runs['warm']['seconds']:.1f} s warm vs {runs['cold']['seconds']:.1f} s cold "
        f"(ratio {out['autoattack_time_ratio_warm_over_cold']:.2f}; CPU time ratio "
        f"{out['autoattack_cpu_time_ratio_warm_over_cold']:.2f}); verdicts differ on {differ}/{n_digits}"
    )
    return out
