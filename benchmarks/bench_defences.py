"""The inference cost of chapter 7's defences against a plain forward pass, side by side in one run.

On the zoo's PGD-AT MLP DEQ (``mnist5k-mlp-pgdat``: width 128, Anderson 30 steps, tol 1e-4) and 200 mnist5k test
digits, without gradient: the plain DEQ (its converged solve), input entropy reduction as released
(``EntropyReductionDefense.as_released``: Broyden memory carried over 4 rounds of 2 steps, 10 input steps each, ball
0.2, step 0.05), our default of the same defence (the model's Anderson restarted each round, read at the final
input), and the random-intermediate-states model (``mnist5k-mlp-randdepth-pgdat``) at a fixed depth of 8 with its 5
damped steps. Each is timed on the same batch, the fastest of ``repeats`` runs recorded with the ratio to the plain
forward; the predictions' agreement with the plain model is recorded too.

Run: ``python -m benchmarks.run --parts defences`` (about a minute on a 2-core CPU; ``--quick``: 40 digits).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict

import torch

from deqlib import data, zoo
from deqlib.defenses import EntropyReductionDefense
from deqlib.solvers import quiet_convergence

from .common import log

N_DIGITS = 200
RADIUS = {"eps": 0.2, "eta": 0.05}


def _fastest(fn: Callable[[], torch.Tensor], repeats: int) -> Dict[str, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return {"seconds": best, "logits": out}


def run(*, quick: bool = False) -> Dict[str, Any]:
    n, repeats = (40, 2) if quick else (N_DIGITS, 5)
    deq = zoo.load("mnist5k-mlp-pgdat", allow_training=False)
    ris = zoo.load("mnist5k-mlp-randdepth-pgdat", allow_training=False).eval()
    x, y = data.load("mnist5k", "test").subset(n, seed=0).tensors()
    candidates = {
        "plain DEQ": lambda: deq(x),
        "entropy reduction, as released": lambda: EntropyReductionDefense.as_released(deq, **RADIUS).defend(x),
        "entropy reduction, ours": lambda: EntropyReductionDefense(deq, **RADIUS).defend(x),
        "random depth, fixed depth 8": lambda: ris(x),
    }
    results: Dict[str, Any] = {}
    preds: Dict[str, torch.Tensor] = {}
    with torch.no_grad(), quiet_convergence():
        for name, fn in candidates.items():
            r = _fastest(fn, repeats)
            preds[name] = r["logits"].argmax(1)
            results[name] = {
                "seconds": r["seconds"],
                "ms_per_digit": 1e3 * r["seconds"] / n,
                "accuracy": (preds[name] == y).float().mean().item(),
            }
    for name, r in results.items():
        r["ratio_to_plain"] = r["seconds"] / results["plain DEQ"]["seconds"]
        r["agreement_with_plain"] = (preds[name] == preds["plain DEQ"]).float().mean().item()
    for name, r in results.items():
        log(f"defences: {name}: {r['ms_per_digit']:.2f} ms/digit, x{r['ratio_to_plain']:.1f} the plain forward")
    return {
        "settings": {"digits": n, "repeats": repeats, "radius": RADIUS, "model": "zoo: mnist5k-mlp-pgdat"},
        "defences": results,
    }
