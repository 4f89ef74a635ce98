"""What the report and the masking checks share: the samples' check, one seeded attack run, the tolerance (private).

- :func:`check_samples` — ``x`` (N, ...) and ``y`` (N,) as detached tensors, labels as int64;
- :func:`check_run` — the seed and the batch size;
- :func:`run_attack` — one attack over the samples, seeded: per-sample survival mask, accuracy, timing;
- :func:`clean_correct` — the per-sample clean correctness;
- :func:`tolerance` — ``tol_samples`` samples as a fraction of N (the slack of every accuracy comparison).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Tuple

from torch import Tensor, nn
from torchattacks.attack import Attack

from .._modules import model_device
from .._validate import check_int, check_seed, check_tensor
from ..attacks import predict
from ..attacks.robust import attack_batches, seeded, threat_model


def check_samples(x: Any, y: Any, where: str) -> Tuple[Tensor, Tensor]:
    """The evaluation samples: x (N, ...) with N > 0 and at least two dimensions, y (N,); y as int64."""
    x = check_tensor(x, "x", where, batch=True, min_dim=2)
    y = check_tensor(y, "y", where)
    if tuple(y.shape) != (x.shape[0],):
        raise ValueError(
            f"{where}: y must have shape ({x.shape[0]},) to match x {tuple(x.shape)}, got {tuple(y.shape)}"
        )
    return x.detach(), y.detach().long()


def check_run(seed: Any, batch_size: Any, where: str) -> Tuple[int, int]:
    """The seed (an int in [0, 2**32)) and the batch size (an int >= 1)."""
    return check_seed(seed, where), check_int(batch_size, "batch_size", where, minimum=1)


def tolerance(tol_samples: Any, n: int, where: str) -> float:
    """``tol_samples`` (an int >= 0) samples as a fraction of ``n``, plus a rounding epsilon."""
    return check_int(tol_samples, "tol_samples", where, minimum=0) / n + 1e-12


def run_attack(model: nn.Module, attack: Attack, x: Tensor, y: Tensor, seed: int, batch_size: int) -> Dict[str, Any]:
    """Per-sample results of one attack, with torch's generator seeded by ``seed`` (and restored afterwards).

    Returns ``mask`` (the samples that stay correct), ``accuracy``, ``n_correct``, ``eps``, ``norm``, ``seconds``
    and ``max_perturbation``.
    """
    eps, norm = threat_model(attack)
    start = time.perf_counter()
    with seeded(seed, model_device(model)):
        out = attack_batches(model, attack, x, y, eps=eps, norm=norm, batch_size=batch_size)
    n = int(x.shape[0])
    ok = out["adv_correct"]
    return {
        "mask": ok,
        "accuracy": int(ok.sum()) / n,
        "n_correct": int(ok.sum()),
        "eps": eps,
        "norm": norm,
        "seconds": time.perf_counter() - start,
        "max_perturbation": float(out["perturbation"].max()),
    }


def clean_correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    """A bool mask (on the CPU) of the samples the model classifies correctly without attack."""
    return predict(model, x, batch_size) == y.cpu()
