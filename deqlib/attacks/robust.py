"""Robust accuracy of a model under one attack, with the threat model checked on every adversarial batch.

API map: :func:`robust_accuracy` (the report), :func:`predict` (labels in eval mode), and the steps it is made of,
which :mod:`deqlib.evaluate` reuses: :func:`as_tensors`, :func:`correct` (clean correctness, with the model's logits
and the labels checked), :func:`seeded`, :func:`threat_model`, :func:`attack_batches`,
:func:`tracked` (the solver warnings silenced during an attack, the non-convergence counted instead),
``per_sample_report`` (masks, which attack broke each sample, and 95 % intervals).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchattacks.attack import Attack

from .._modules import model_device
from .._validate import (
    check_class_labels,
    check_images,
    check_int,
    check_labels_in_range,
    check_logits,
    check_module,
    check_seed,
    check_tensor,
)
from ..diagnostics import convergence_report
from ..solvers import quiet_convergence
from ..threat import check_eps, check_norm, perturbation_norm
from .registry import attack_name, attack_params

__all__ = [
    "robust_accuracy",
    "predict",
    "correct",
    "as_tensors",
    "seeded",
    "threat_model",
    "attack_batches",
    "tracked",
    "per_sample_report",
    "NORM_SLACK",
]

#: Slack allowed on ||x_adv - x|| beyond eps (floating-point rounding of x + delta), and on the [0, 1] range.
NORM_SLACK = 1e-5


def as_tensors(
    data: Any, n: Optional[int] = None, seed: int = 0, where: str = "robust_accuracy"
) -> Tuple[Tensor, Tensor]:
    """``(x, y)`` from an :class:`~deqlib.data.ImageDataset` or an ``(x, y)`` pair, optionally ``n`` of them.

    A data set gives its seeded stratified :meth:`subset`; tensors give a seeded random choice (in order). Tensors
    are checked: [0, 1] images (N, ...), integer labels (N,) (floats are refused, never truncated).
    """
    if n is not None:
        n = check_int(n, "n", where, minimum=1)
    if hasattr(data, "tensors") and callable(data.tensors):
        if n is not None and n < len(data):
            data = data.subset(n, seed)
        x, y = data.tensors()
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x = check_images(data[0], where, "x")
        y = check_class_labels(data[1], x.shape[0], where, "y")
        if n is not None and n < x.shape[0]:
            g = torch.Generator().manual_seed(seed)
            idx = torch.randperm(x.shape[0], generator=g)[:n].sort().values
            x, y = x[idx], y[idx]
    else:
        raise TypeError(f"{where}: expected an ImageDataset or an (x, y) pair of tensors, got {type(data).__name__}")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: no samples to evaluate")
    return x.detach(), y.detach().long()


_CPU = torch.device("cpu")


@contextlib.contextmanager
def seeded(seed: int, device: Optional[torch.device] = None) -> Iterator[None]:
    """Seed torch's global generators inside the block and restore their state afterwards."""
    devices = [device.index or 0] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def _logits(model: nn.Module, x: Tensor, batch_size: int, where: str) -> Tensor:
    """The logits of ``model`` in eval mode, batch by batch, on the CPU (its mode is restored); each batch's
    checked to be (batch, num_classes)."""
    was = model.training
    model.eval()
    try:
        dev = model_device(model, _CPU)
        out = []
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(dev)
            out.append(check_logits(model(xb), xb.shape[0], where).cpu())
        return torch.cat(out)
    finally:
        model.train(was)


def predict(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted labels of ``model`` in eval mode (its mode is restored).

    Raises:
        TypeError, ValueError: not a module, ``x`` not a batch (N, ...), or logits not of shape (N, num_classes).
    """
    check_module(model, "predict")
    x = check_tensor(x, "x", "predict", batch=True)
    return _logits(model, x, check_int(batch_size, "batch_size", "predict", minimum=1), "predict").argmax(1)


def correct(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256, where: str = "robust_accuracy"
) -> Tuple[Tensor, int]:
    """The per-sample clean correctness (a bool mask on the CPU) and the model's number of classes.

    The logits are checked to be (N, num_classes) and the labels to lie in [0, num_classes) (torch's ignore
    index -100 included: every sample counts), so that no evaluation counts a sample against a label that does
    not exist.
    """
    logits = _logits(model, x, batch_size, where)
    check_labels_in_range(y, logits.shape[1], where)
    return logits.argmax(1) == y.cpu(), int(logits.shape[1])


@contextlib.contextmanager
def tracked(model: nn.Module) -> Iterator[Any]:
    """Inside the block the solvers' non-convergence warnings are silenced (an attack would raise thousands) and
    counted instead: the yielded report's ``as_dict()`` (after the block) gives the fractions of forward and
    backward solves of every DEQ in ``model`` that did not converge (``deqlib.diagnostics.convergence_report``)."""
    with quiet_convergence(), convergence_report(model) as report:
        yield report


def per_sample_report(clean: Tensor, robust: Tensor, broken_by: List[Optional[str]]) -> Dict[str, Any]:
    """The per-sample part of every robust-accuracy report (JSON-able).

    ``clean_correct`` and ``robust`` as lists of bools, ``broken_by`` (None: robust; ``"clean"``: misclassified
    without attack; else the name of the attack that broke the sample), and the Wilson 95 % intervals
    ``clean_ci95`` and ``ci95`` of the clean and the robust accuracy.
    """
    from ..evaluate.statistics import wilson_interval  # here: deqlib.evaluate imports deqlib.attacks

    n = int(clean.numel())
    return {
        "clean_correct": [bool(v) for v in clean.tolist()],
        "robust": [bool(v) for v in robust.tolist()],
        "broken_by": list(broken_by),
        "clean_ci95": list(wilson_interval(int(clean.sum()), n)),
        "ci95": list(wilson_interval(int(robust.sum()), n)),
    }


def threat_model(attack: Attack, eps: Optional[float] = None, norm: Optional[str] = None) -> Tuple[float, str]:
    """The (eps, norm) an attack promises: given explicitly, else read from the attack."""
    if norm is None:
        norm = getattr(attack, "norm", None) or ("L2" if "L2" in str(getattr(attack, "attack", "")) else "Linf")
    norm = check_norm(norm, "robust_accuracy")
    if eps is None:
        eps = getattr(attack, "eps", None)
        if eps is None:
            raise ValueError(f"robust_accuracy: cannot tell the radius of {attack_name(attack)}; pass eps= (and norm=)")
    return check_eps(eps, norm, "robust_accuracy"), norm


def attack_batches(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str,
    batch_size: int,
    where: str = "robust_accuracy",
) -> Dict[str, Any]:
    """Run ``attack`` over (x, y) batch by batch; per-sample clean and adversarial correctness.

    The model's logits and the labels are checked on every batch (:func:`correct`) before the attack runs.

    Returns ``clean_correct``, ``adv_correct`` (clean and adversarial prediction both right), ``perturbation``
    (||x_adv - x|| per sample) and ``adv_loss`` (the cross-entropy at x_adv per sample), all on the CPU.

    Raises:
        RuntimeError: the attack returned a batch of the wrong shape, non-finite values, pixels outside [0, 1]
            or a perturbation larger than eps (beyond rounding): its numbers would not be robust accuracies.
    """
    dev = model_device(model, _CPU)
    clean_ok, adv_ok, pert, losses = [], [], [], []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)
        c = correct(model, xb, yb, batch_size, where)[0].to(dev)
        adv = attack(xb, yb)
        if not isinstance(adv, Tensor) or adv.shape != xb.shape:
            raise RuntimeError(
                f"{attack_name(attack)} returned {getattr(adv, 'shape', type(adv))} for a batch of {tuple(xb.shape)}"
            )
        adv = adv.detach().to(dev)
        if not bool(torch.isfinite(adv).all()):
            raise RuntimeError(f"{attack_name(attack)} returned NaN or Inf pixels")
        lo, hi = float(adv.min()), float(adv.max())
        if lo < -NORM_SLACK or hi > 1 + NORM_SLACK:
            raise RuntimeError(f"{attack_name(attack)} returned pixels in [{lo:.4g}, {hi:.4g}], outside [0, 1]")
        p = perturbation_norm(adv, xb, norm)
        worst = float(p.max())
        if worst > eps + NORM_SLACK * max(1.0, eps):
            raise RuntimeError(
                f"{attack_name(attack)} left the threat model: max {norm} perturbation {worst:.6g} > eps = {eps:.6g}"
            )
        logits = _logits(model, adv, batch_size, where)
        yc = yb.cpu()
        clean_ok.append(c.cpu())
        adv_ok.append(logits.argmax(1) == yc)
        pert.append(p.cpu())
        losses.append(F.cross_entropy(logits.float(), yc, reduction="none"))
    clean = torch.cat(clean_ok)
    return {
        "clean_correct": clean,
        "adv_correct": torch.cat(adv_ok) & clean,
        "perturbation": torch.cat(pert),
        "adv_loss": torch.cat(losses),
    }


# size: the docstring documents every entry of the report
def robust_accuracy(
    model: nn.Module,
    attack: Attack,
    data_or_tensors: Any,
    *,
    batch_size: int = 256,
    n: Optional[int] = None,
    seed: int = 0,
    eps: Optional[float] = None,
    norm: Optional[str] = None,
) -> Dict[str, Any]:
    """Accuracy of ``model`` on the adversarial examples ``attack`` finds.

    A sample counts as robust only if the clean input *and* the attack's output are classified correctly (the
    AutoAttack convention). Each batch's output is checked against the threat model (||x_adv - x|| <= eps in
    the attack's norm, pixels in [0, 1], finite); a violation raises instead of reporting a number.

    Args:
        model: maps [0, 1] images to logits.
        attack: a ``torchattacks.Attack`` (e.g. from :func:`make_attack`).
        data_or_tensors: an :class:`~deqlib.data.ImageDataset` or ``(x, y)`` tensors.
        batch_size: samples per attack call.
        n: evaluate a seeded subset of n samples (stratified for a data set); default all.
        seed: seeds the subset and torch's global generator during the attack (restored afterwards), so random
            starts are reproducible.
        eps, norm: the threat model, for attacks that do not carry ``.eps`` / ``.norm``.

    Returns:
        A JSON-able dict: ``accuracy`` (robust accuracy in [0, 1]), ``n_samples``, ``n_correct``, ``attack``
        (name), ``params`` (the attack's parameters), ``eps``, ``norm``, ``seed``, ``seconds``, plus
        ``clean_accuracy``, ``n_clean_correct`` and ``max_perturbation`` (largest ||x_adv - x|| seen); the
        per-sample results of ``per_sample_report`` (``clean_correct``, ``robust``, ``broken_by``, ``ci95``,
        ``clean_ci95``); ``convergence``: the fractions of the DEQ solves during the attack that did not converge.
    """
    check_module(model, "robust_accuracy")
    if not isinstance(attack, Attack):
        raise TypeError(f"robust_accuracy: attack must be a torchattacks.Attack, got {type(attack).__name__}")
    seed = check_seed(seed, "robust_accuracy")
    batch_size = check_int(batch_size, "batch_size", "robust_accuracy", minimum=1)
    eps, norm = threat_model(attack, eps, norm)
    x, y = as_tensors(data_or_tensors, n, seed)
    start = time.perf_counter()
    with seeded(seed, model_device(model, _CPU)), tracked(model) as report:
        out = attack_batches(model, attack, x, y, eps=eps, norm=norm, batch_size=batch_size)
    seconds = time.perf_counter() - start
    n_samples = int(x.shape[0])
    n_correct = int(out["adv_correct"].sum())
    n_clean = int(out["clean_correct"].sum())
    name = attack_name(attack)
    broken_by = [
        None if r else (name if c else "clean")
        for c, r in zip(out["clean_correct"].tolist(), out["adv_correct"].tolist())
    ]
    return {
        "accuracy": n_correct / n_samples,
        "n_samples": n_samples,
        "n_correct": n_correct,
        "attack": attack_name(attack),
        "params": attack_params(attack),
        "eps": eps,
        "norm": norm,
        "seed": seed,
        "seconds": seconds,
        "clean_accuracy": n_clean / n_samples,
        "n_clean_correct": n_clean,
        "max_perturbation": float(out["perturbation"].max()) if n_samples else math.nan,
        **per_sample_report(out["clean_correct"], out["adv_correct"], broken_by),
        "convergence": report.as_dict(),
    }
