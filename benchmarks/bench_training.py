"""Training throughput on this CPU: a fast-mode epoch and a PGD-AT epoch, with a breakdown of where the time goes.

* Fast mode: the book's fast-mode recipe (``deqlib.recipes.recipe("mnist5k", mode="fast")``: the conv DEQ, Anderson,
  max_iter 20, tol 1e-3, IFT gradient, batch 64, Adam) trained by ``deqlib.train.fit`` for one epoch on the
  4,000 mnist5k training digits (a leading part of them with ``--quick``).
* PGD-AT: the same model and ``fit`` with ``deqlib.losses.PGDAT(eps=0.2, alpha=0.05, steps=7)`` (the settings of
  ``experiments/robustness_mnist5k.py``), also one epoch (with ``--quick``, a leading part of it, and the epoch
  time is extrapolated from the measured samples/s).

Breakdown: deqlib's forward solves (``DEQ._solve``), the IFT adjoint solves (``_ImplicitBackward.backward``) and the
inner attack (``PGDAT.perturb``) are wrapped with timers for the run (inclusive wall time; the solves inside the
attack are reported separately). A short ``torch.profiler`` run adds the top operators by self CPU time.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import Subset

from deqlib import cells, data
from deqlib import deq as deq_module

from .common import log

PGD = {"eps": 0.2, "alpha": 0.05, "steps": 7}
PGD_SAMPLES = 4000


class Timers:
    """Inclusive wall time of the wrapped functions, split by whether the inner attack is running."""

    def __init__(self) -> None:
        self.t: Dict[str, float] = {}
        self.n: Dict[str, int] = {}
        self.in_attack = False

    def add(self, key: str, dt: float) -> None:
        key = f"{key}{'_in_attack' if self.in_attack and key != 'attack' else ''}"
        self.t[key] = self.t.get(key, 0.0) + dt
        self.n[key] = self.n.get(key, 0) + 1


@contextmanager
def instrumented(timers: Timers) -> Iterator[None]:
    DEQ = deq_module.DEQ
    IB = deq_module._ImplicitBackward
    orig_solve, orig_backward = DEQ._solve, IB.backward
    try:
        from deqlib.losses import PGDAT

        orig_perturb = PGDAT.perturb
    except ImportError:  # pragma: no cover - losses not available
        PGDAT, orig_perturb = None, None

    def solve(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return orig_solve(self, *a, **k)
        finally:
            timers.add("forward_solve", time.perf_counter() - t0)

    def backward(ctx, grad):
        t0 = time.perf_counter()
        try:
            return orig_backward(ctx, grad)
        finally:
            timers.add("adjoint_solve", time.perf_counter() - t0)

    def perturb(self, *a, **k):
        t0 = time.perf_counter()
        timers.in_attack = True
        try:
            return orig_perturb(self, *a, **k)
        finally:
            timers.in_attack = False
            timers.add("attack", time.perf_counter() - t0)

    DEQ._solve = solve
    IB.backward = staticmethod(backward)
    if PGDAT is not None:
        PGDAT.perturb = perturb
    try:
        yield
    finally:
        DEQ._solve = orig_solve
        IB.backward = staticmethod(orig_backward)
        if PGDAT is not None:
            PGDAT.perturb = orig_perturb


def build(seed: int = 0):
    from deqlib.recipes import recipe

    r = recipe("mnist5k", mode="fast")
    train = data.load(r["dataset"], "train")
    torch.manual_seed(seed)
    model = cells.classifier_for(train, r["kind"], **r["model"])
    return r, train, model


def top_ops(fn, n: int = 12) -> List[Dict[str, Any]]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:n]:
        rows.append({"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count})
    return rows


def one_run(kind: str, n_samples: int, profile_batches: int) -> Dict[str, Any]:
    from deqlib.train import fit

    r, train, model = build()
    loss_fn = None
    if kind == "pgd_at":
        from deqlib.losses import PGDAT

        loss_fn = PGDAT(**PGD)
    subset = Subset(train, range(min(n_samples, len(train))))
    fit_opts = dict(r["fit"])
    fit_opts["epochs"] = 1
    timers = Timers()
    with instrumented(timers):
        t0 = time.perf_counter()
        hist = fit(model, subset, loss_fn=loss_fn, progress=False, device="cpu", **fit_opts)
        total = time.perf_counter() - t0
    n = len(subset)
    t = timers.t
    breakdown = {
        "total_s": total,
        "attack_s": t.get("attack", 0.0),
        "attack_forward_solves_s": t.get("forward_solve_in_attack", 0.0),
        "attack_adjoint_solves_s": t.get("adjoint_solve_in_attack", 0.0),
        "train_forward_solves_s": t.get("forward_solve", 0.0),
        "train_adjoint_solves_s": t.get("adjoint_solve", 0.0),
    }
    breakdown["rest_s"] = (
        total - breakdown["attack_s"] - breakdown["train_forward_solves_s"] - breakdown["train_adjoint_solves_s"]
    )
    out = {
        "kind": kind,
        "samples": n,
        "epoch_samples": len(train),
        "batch_size": fit_opts["batch_size"],
        "model": r["model"],
        "loss": None if loss_fn is None else repr(loss_fn),
        "samples_per_s": n / total,
        "epoch_s_extrapolated": len(train) * total / n,
        "train_loss": hist["train_loss"][-1],
        # mean steps per sample over ALL the epoch's forward / adjoint solves (fit's solve listener); with PGD-AT
        # the attack's solves are counted too (runs recorded before this change counted the last solve of a batch)
        "solver_steps_mean": hist["solver_steps"][-1] if "solver_steps" in hist else None,
        "backward_steps_mean": hist["backward_steps"][-1] if "backward_steps" in hist else None,
        "breakdown": breakdown,
        "calls": dict(timers.n),
    }
    # A short operator profile of a few batches.
    bs = fit_opts["batch_size"]
    prof_subset = Subset(train, range(min(profile_batches * bs, len(train))))
    _, _, model2 = build()
    prof_opts = dict(fit_opts, scheduler=None)
    out["top_ops"] = top_ops(
        lambda: fit(model2, prof_subset, loss_fn=loss_fn, progress=False, device="cpu", **prof_opts)
    )
    out["top_ops_batches"] = profile_batches
    log(
        f"training {kind}: {n} samples in {total:.1f} s = {out['samples_per_s']:.1f} samples/s; breakdown "
        + ", ".join(f"{k} {v:.1f}" for k, v in breakdown.items())
    )
    return out


def run(*, quick: bool = False) -> Dict[str, Any]:
    fast_n = 256 if quick else 4000
    pgd_n = 64 if quick else PGD_SAMPLES
    return {
        "settings": {
            "recipe": "deqlib.recipes.recipe('mnist5k', mode='fast')",
            "pgd": PGD,
            "device": "cpu",
            "fast_samples": fast_n,
            "pgd_samples": pgd_n,
        },
        "runs": [one_run("fast", fast_n, 2 if quick else 4), one_run("pgd_at", pgd_n, 1 if quick else 2)],
    }
