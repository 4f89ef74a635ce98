"""Training losses for classifiers of [0, 1] images: cross-entropy, prediction entropy, PGD-AT and TRADES.

Used from chapter 4 on: the entropy of the intermediate predictions in chapter 4, the adversarially trained models of
the zoo (PGD-AT, TRADES) in chapters 4–5; training with them is the subject of chapters 6–7 (not yet written).

Every loss follows the protocol of :func:`deqlib.train.fit`: ``loss_fn(model, x, y) -> (loss, logits)``, where
``model`` is ANY module mapping [0, 1] images (N, C, H, W) to logits (N, num_classes) and ``x`` is a batch in [0, 1]
(normalisation lives inside the model).

API:
    * :func:`cross_entropy` — the standard loss; :func:`entropy`, :func:`mean_entropy` — prediction entropy.
    * :class:`PGDAT` (Madry et al. 2018) — the cross-entropy at the worst point of the ε-ball found by projected
      gradient ascent (``steps`` steps of size ``alpha`` from a random start).
    * :class:`TRADES` (Zhang et al. 2019) — CE(clean) + β·KL(p_clean ‖ p_adv); the inner maximisation ascends the
      same KL from a small Gaussian start (0.001·N(0, 1)): at x itself the KL is at its minimum and its gradient zero.
      With a random model (random depth) the two logits come from independent draws unless ``shared_depth=True``.

The inner attack is plain torch on :mod:`deqlib.threat` (no torchattacks): every iterate stays in the ε-ball ∩ [0, 1],
it differentiates with ``torch.autograd.grad`` with respect to the input only (the parameters' ``.grad`` is never
touched) and leaves the model in the train / eval mode it found. It runs in the model's current mode by default
(``fit`` trains in ``train()`` mode); ``attack_mode="eval"`` crafts in ``eval()`` mode, as the TRADES reference code.
The losses call the model they are given, so a wrapper such as :class:`deqlib.defenses.RandomDepthClassifier` is
attacked as a whole.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> loss, logits = PGDAT(eps=0.1, alpha=0.025, steps=3)(model, x, y)
    >>> logits.shape, all(p.grad is None for p in model.parameters())
    (torch.Size([4, 10]), True)
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validate import (
    check_bool,
    check_choice,
    check_images,
    check_int,
    check_labels,
    check_labels_in_range,
    check_logits,
    check_nonnegative,
    check_tensor,
)
from .threat import ascent_step, check_eps, check_l2_scale, check_norm, check_step, project, random_start
from .warm_start import warm_starts

__all__ = ["cross_entropy", "entropy", "mean_entropy", "PGDAT", "TRADES"]

#: The modes an inner attack can craft in (None: the model's current mode).
ATTACK_MODES = (None, "train", "eval")


# ----------------------------------------------------------------------------------------------------
# Plain losses and entropy
# ----------------------------------------------------------------------------------------------------


def _logits_of(model: nn.Module, x: Tensor, where: str, y: Optional[Tensor] = None) -> Tensor:
    """``model(x)``, checked: logits (N, num_classes), and the labels ``y`` (if given) in [0, num_classes)."""
    out = check_logits(model(x), x.shape[0], where)
    if y is not None:
        check_labels_in_range(y, out.shape[1], where)
    return out


def cross_entropy(model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
    """Standard training loss: mean cross-entropy of ``model(x)``.

    ``y`` must be int64 labels (N,) in [0, num_classes): torch's ignore index -100 is refused like any label
    outside the range (a dropped sample would still count in every accuracy).

    Returns:
        ``(loss, logits)``.
    """
    check_tensor(x, "x", "cross_entropy", batch=True)
    check_labels(y, x.shape[0], "cross_entropy")
    logits = _logits_of(model, x, "cross_entropy", y)
    return F.cross_entropy(logits, y), logits


def entropy(logits: Tensor) -> Tensor:
    """Entropy (in nats) of softmax(logits) over the last dimension: (..., C) -> (...), e.g. (N, C) -> (N,).

    Computed from ``log_softmax`` so that saturated predictions give 0, never NaN. Uniform logits give log C.
    """
    check_tensor(logits, "logits", "entropy", floating=True, min_dim=1)
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def mean_entropy(logits: Tensor) -> Tensor:
    """Mean prediction entropy over everything but the class dimension (a scalar, differentiable)."""
    return entropy(logits).mean()


# ----------------------------------------------------------------------------------------------------
# The inner attack shared by PGD-AT and TRADES
# ----------------------------------------------------------------------------------------------------


@contextmanager
def _mode(model: nn.Module, attack_mode: Optional[str]) -> Iterator[None]:
    """Switch to ``attack_mode`` ("train" / "eval"; None keeps the current mode), restore the mode afterwards."""
    was_training = model.training
    try:
        if attack_mode is not None:
            model.train(attack_mode == "train")
        yield
    finally:
        model.train(was_training)


class _InnerAttack:
    """Common parameters, validation and mode handling of PGD-AT and TRADES."""

    name = "attack"

    def __init__(self, eps: float, alpha: float, steps: int, norm: str, attack_mode: Optional[str]) -> None:
        where = self.name
        self.norm = check_norm(norm, where)
        self.eps = check_eps(eps, self.norm, where)
        self.alpha = check_step(alpha, "alpha", where, norm=self.norm)
        self.steps = check_int(steps, "steps", where, minimum=1)
        self.attack_mode = check_choice(attack_mode, "attack_mode", where, ATTACK_MODES)

    def _check_batch(self, x: Tensor, y: Optional[Tensor]) -> None:
        """[0, 1] images, int64 labels (N,) (their range is checked on the first logits), an L2 radius at most the
        diameter of the image cube (known only now)."""
        check_images(x, self.name)
        if y is not None:
            check_labels(y, x.shape[0], self.name)
        if self.norm == "L2":
            check_l2_scale(self.eps, x, self.name)

    def _ascend(
        self, model: nn.Module, x: Tensor, x_adv: Tensor, objective: Callable[[Tensor], Tensor], y: Optional[Tensor]
    ) -> Tensor:
        """``steps`` projected ascent steps on ``objective(logits) -> scalar`` from ``x_adv``; a detached tensor.
        The labels ``y`` are checked against the first logits, before any gradient."""
        with _mode(model, self.attack_mode), torch.enable_grad(), warm_starts(model):
            for step in range(self.steps):
                x_adv = x_adv.detach().requires_grad_(True)
                logits = _logits_of(model, x_adv, self.name, y if step == 0 else None)
                (grad,) = torch.autograd.grad(objective(logits), x_adv)
                x_adv = project(ascent_step(x_adv.detach(), grad, self.alpha, self.norm), x, self.eps, self.norm)
        return x_adv.detach()

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._extra().items())
        return (
            f"{type(self).__name__}(eps={self.eps:g}, alpha={self.alpha:g}, steps={self.steps}, "
            f"norm={self.norm!r}{extra})"
        )

    def _extra(self) -> dict:
        return {} if self.attack_mode is None else {"attack_mode": self.attack_mode}


class PGDAT(_InnerAttack):
    """PGD adversarial training (Madry et al. 2018): ``loss = CE(model(x_adv), y)``.

    Args:
        eps: radius of the threat ball (L∞: in pixel units of [0, 1] images, e.g. 0.3 for MNIST, 8/255 for CIFAR-10).
        alpha: step size of each ascent step (L∞: signed gradient; L2: normalised gradient).
        steps: ascent steps.
        norm: "Linf" or "L2".
        random_start: start from a uniform point of the ball (L∞) / a random point of the ball (L2), else from x.
        attack_mode: None (craft in the model's current mode), "train" or "eval"; the mode is restored.

    Calling it as ``loss_fn(model, x, y)`` returns ``(loss, logits)`` with the logits of the ADVERSARIAL batch
    (so a training loop's accuracy is the robust training accuracy). :meth:`perturb` returns the batch itself.
    """

    name = "PGDAT"

    def __init__(
        self,
        eps: float,
        alpha: float,
        steps: int,
        norm: str = "Linf",
        random_start: bool = True,
        *,
        attack_mode: Optional[str] = None,
    ) -> None:
        super().__init__(eps, alpha, steps, norm, attack_mode)
        self.random_start = check_bool(random_start, "random_start", self.name)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The adversarial batch (detached, in the ε-ball ∩ [0, 1]) that maximises the cross-entropy."""
        self._check_batch(x, y)
        x = x.detach()
        if self.eps == 0:
            return x.clone()
        x_adv = random_start(x, self.eps, self.norm) if self.random_start else x.clone()
        return self._ascend(model, x, x_adv, lambda logits: F.cross_entropy(logits, y, reduction="sum"), y)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
        with warm_starts(model):  # the outer forward starts from the inner attack's last equilibria
            x_adv = self.perturb(model, x, y)
            logits = _logits_of(model, x_adv, self.name, y)
        return F.cross_entropy(logits, y), logits

    def _extra(self) -> dict:
        return {"random_start": self.random_start, **super()._extra()}


class TRADES(_InnerAttack):
    """TRADES (Zhang et al. 2019): ``loss = CE(model(x), y) + beta * KL(p(x) ‖ p(x_adv))``, KL averaged over the batch.

    The inner maximisation ascends KL(p(x) ‖ p(x_adv)) from x + ``start_std``·N(0, 1) (projected), with p(x)
    computed once, without a graph, at the start of the attack. In the outer loss both terms carry gradients, the KL
    through p(x) (the clean branch) as well as through p(x_adv), as in the reference code.

    A RANDOM model (e.g. :class:`deqlib.defenses.RandomDepthClassifier` in ``train()`` mode) draws anew at every call,
    so by default the clean and the adversarial logits come from two independent depths (faithful to the code of
    Yang et al. 2023): the KL then also measures the depth noise and is positive even at ε = 0, where
    ``x_adv = x`` (0.0004–0.009 on digits DEQs in the review of issue 9). ``shared_depth=True`` evaluates both logits of the outer loss
    inside one ``model.pinned_depth()`` block, one depth for the pair: the KL is then exactly 0 at ε = 0. (The inner
    attack's calls keep their own draws.) The model must offer ``pinned_depth()``; TRADES knows nothing else about it.

    Args:
        eps, alpha, steps, norm, attack_mode: as in :class:`PGDAT`.
        beta: weight of the robustness term (6.0 in the TRADES paper and in Yang et al. 2023).
        start_std: standard deviation of the Gaussian start.
        shared_depth: one random draw (depth) for the clean and the adversarial logits of the outer loss.

    Calling it returns ``(loss, logits)`` with the CLEAN logits (those of the cross-entropy term); :meth:`terms` returns
    the parts.

    Raises:
        TypeError: when called with ``shared_depth=True`` on a model without a ``pinned_depth()`` context manager.
    """

    name = "TRADES"

    def __init__(
        self,
        eps: float,
        alpha: float,
        steps: int,
        beta: float = 6.0,
        norm: str = "Linf",
        *,
        start_std: float = 0.001,
        attack_mode: Optional[str] = None,
        shared_depth: bool = False,
    ) -> None:
        super().__init__(eps, alpha, steps, norm, attack_mode)
        self.beta = check_nonnegative(beta, "beta", self.name)
        self.start_std = check_nonnegative(start_std, "start_std", self.name)
        if not isinstance(shared_depth, bool):
            raise TypeError(f"{self.name}: shared_depth must be a bool, got {type(shared_depth).__name__}")
        self.shared_depth = shared_depth

    def perturb(self, model: nn.Module, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The adversarial batch (detached, in the ε-ball ∩ [0, 1]) that maximises KL(p(x) ‖ p(x_adv)); y is unused."""
        self._check_batch(x, y)
        x = x.detach()
        if self.eps == 0:
            return x.clone()
        with _mode(model, self.attack_mode), torch.no_grad():
            p_clean = F.softmax(_logits_of(model, x, self.name, y), dim=1)
        x_adv = project(x + self.start_std * torch.randn_like(x), x, self.eps, self.norm)
        return self._ascend(
            model, x, x_adv, lambda logits: F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="sum"), None
        )

    def _pair(self, model: nn.Module):
        """The context of the outer loss's two calls: one pinned depth if ``shared_depth``, else nothing."""
        if not self.shared_depth:
            return nullcontext()
        pin = getattr(model, "pinned_depth", None)
        if not callable(pin):
            raise TypeError(
                f"{self.name}: shared_depth=True needs a model with a pinned_depth() context manager "
                f"(e.g. deqlib.defenses.RandomDepthClassifier), got {type(model).__name__}; a deterministic model "
                "needs no shared depth"
            )
        return pin()

    def terms(self, model: nn.Module, x: Tensor, y: Tensor) -> Dict[str, Tensor]:
        """The parts of the loss: ``{"loss", "ce", "kl", "logits", "logits_adv", "x_adv"}`` (graphs kept)."""
        with warm_starts(model):  # the attack and both outer forwards share one pool of equilibria
            x_adv = self.perturb(model, x, y)
            with self._pair(model):
                logits = _logits_of(model, x, self.name, y)
                logits_adv = _logits_of(model, x_adv, self.name)
        # KL(p ‖ q) from log-probabilities on both sides: exactly 0 when the two logits are equal
        log_p, log_q = F.log_softmax(logits, dim=1), F.log_softmax(logits_adv, dim=1)
        kl = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
        ce = F.cross_entropy(logits, y)
        return {
            "loss": ce + self.beta * kl,
            "ce": ce,
            "kl": kl,
            "logits": logits,
            "logits_adv": logits_adv,
            "x_adv": x_adv,
        }

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
        parts = self.terms(model, x, y)
        return parts["loss"], parts["logits"]

    def _extra(self) -> dict:
        extra = {"beta": self.beta, **super()._extra()}
        return {**extra, "shared_depth": True} if self.shared_depth else extra
