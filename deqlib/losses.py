"""Training losses for classifiers of [0, 1] images: cross-entropy, PGD adversarial training, TRADES,
prediction entropy, and the random-intermediate-state model of Yang et al. (2023).

Every loss follows the protocol of :func:`deqlib.train.fit`: ``loss_fn(model, x, y) -> (loss, logits)``,
where ``model`` is ANY module mapping [0, 1] images (N, C, H, W) to logits (N, num_classes) and ``x`` is a
batch in [0, 1] (normalisation lives inside the model).

Adversarial training:
    * :class:`PGDAT` (Madry et al. 2018): minimise the cross-entropy at the worst point of the ε-ball found
      by projected gradient ascent (``steps`` signed-gradient steps of size ``alpha`` from a uniform random
      start).
    * :class:`TRADES` (Zhang et al. 2019): CE(clean) + β·KL(p_clean ‖ p_adv), where the inner maximisation
      ascends the same KL from a small Gaussian start (0.001·N(0, 1)) — at x itself the KL is at its minimum
      and its gradient is zero.

    The inner attack is plain torch (no torchattacks): it keeps every iterate in the ε-ball ∩ [0, 1],
    differentiates with ``torch.autograd.grad`` with respect to the input only (the parameters' ``.grad`` is
    never touched) and leaves the model in the train / eval mode it found. By default it runs in the mode the
    model is in (``fit`` trains in ``train()`` mode); ``attack_mode="eval"`` crafts in ``eval()`` mode as
    the TRADES reference code does, then restores the mode.

Random intermediate states (Yang et al. 2023, "method 2"):
    :class:`RandomDepthClassifier` wraps a :class:`~deqlib.cells.DEQClassifier`. In ``train()`` mode each
    forward pass draws a depth k uniformly from {1, ..., T}, takes the k-th iterate of the model's own solver
    (no graph) and back-propagates through ``phantom_steps`` damped steps from it. Because PGDAT and TRADES
    simply call the model, ``fit(RandomDepthClassifier(model), data, loss_fn=PGDAT(...))`` runs the inner
    attack on the random-depth model too (one fresh depth per attack step), as in the paper.

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

import math
from contextlib import contextmanager
from numbers import Real
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NORMS",
    "cross_entropy",
    "entropy",
    "mean_entropy",
    "check_attack_params",
    "project",
    "PGDAT",
    "TRADES",
    "solver_iterate",
    "damped_steps",
    "RandomDepthClassifier",
]

NORMS = ("Linf", "L2")
#: Tolerance of the [0, 1] check of the inputs.
_PIXEL_TOL = 1e-6


# ----------------------------------------------------------------------------------------------------
# Plain losses and entropy
# ----------------------------------------------------------------------------------------------------


def _logits_of(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(f"the model must return logits of shape (N, num_classes) = ({x.shape[0]}, C), got {shape}")
    return out


def _check_batch(name: str, x: Tensor, y: Optional[Tensor] = None) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(
            f"{name}: x must be a float tensor of [0, 1] images, got {getattr(x, 'dtype', type(x).__name__)}"
        )
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: x must be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -_PIXEL_TOL or hi > 1 + _PIXEL_TOL:
        raise ValueError(
            f"{name}: pixels must be in [0, 1] (normalisation is inside the model), got [{lo:.3g}, {hi:.3g}]"
        )
    if y is not None:
        if not isinstance(y, Tensor) or y.dtype != torch.long or y.shape != (x.shape[0],):
            raise ValueError(
                f"{name}: y must be an int64 tensor of shape ({x.shape[0]},), got "
                f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}"
            )


def cross_entropy(model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
    """Standard training loss: mean cross-entropy of ``model(x)``.

    Returns:
        ``(loss, logits)``.
    """
    logits = _logits_of(model, x)
    return F.cross_entropy(logits, y), logits


def entropy(logits: Tensor) -> Tensor:
    """Entropy (in nats) of softmax(logits) over the last dimension: (..., C) -> (...), e.g. (N, C) -> (N,).

    Computed from ``log_softmax`` so that saturated predictions give 0, never NaN. Uniform logits give log C.
    """
    if not isinstance(logits, Tensor) or logits.dim() < 1 or not logits.is_floating_point():
        raise TypeError(
            f"entropy: expected float logits (..., C), got {getattr(logits, 'shape', type(logits).__name__)}"
        )
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def mean_entropy(logits: Tensor) -> Tensor:
    """Mean prediction entropy over everything but the class dimension (a scalar, differentiable)."""
    return entropy(logits).mean()


# ----------------------------------------------------------------------------------------------------
# The inner attack shared by PGD-AT and TRADES
# ----------------------------------------------------------------------------------------------------


def _is_real(v: object) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))


def check_attack_params(name: str, eps: float, alpha: float, steps: int, norm: str = "Linf") -> None:
    """Raise ValueError with a clear message unless the attack parameters make sense.

    eps must be a finite number >= 0 (and <= 1 for L∞: pixels are in [0, 1], so eps = 8 means 8/255 was
    meant), alpha a finite number > 0, steps an int >= 1, and norm one of ``NORMS``.
    """
    if norm not in NORMS:
        raise ValueError(f"{name}: norm must be one of {NORMS}, got {norm!r}")
    if not _is_real(eps) or eps < 0:
        raise ValueError(f"{name}: eps must be a finite number >= 0, got {eps!r}")
    if norm == "Linf" and eps > 1:
        raise ValueError(
            f"{name}: eps={eps!r} is larger than 1, but pixels are in [0, 1]: wrong scale? "
            f"(for 8 grey levels use eps={eps!r}/255 = {float(eps) / 255:.4g})"
        )
    if not _is_real(alpha) or alpha <= 0:
        raise ValueError(f"{name}: alpha (the step size) must be a finite number > 0, got {alpha!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{name}: steps must be an int >= 1, got {steps!r}")


def _per_sample_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str = "Linf") -> Tensor:
    """Bring ``x_adv`` back into the ε-ball around ``x`` (per sample) and into [0, 1].

    Clamping to [0, 1] after the ball projection never leaves the ball, since x itself is in [0, 1].
    """
    delta = x_adv - x
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = _per_sample_norm(delta)
        delta = delta * torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))
    return (x + delta).clamp(0.0, 1.0)


def _ascent_step(x_adv: Tensor, grad: Tensor, alpha: float, norm: str) -> Tensor:
    if norm == "Linf":
        return x_adv + alpha * grad.sign()
    return x_adv + alpha * grad / _per_sample_norm(grad).clamp_min(1e-12)


def _random_start(x: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "Linf":
        return project(x + torch.empty_like(x).uniform_(-eps, eps), x, eps, norm)
    direction = torch.randn_like(x)
    direction = direction / _per_sample_norm(direction).clamp_min(1e-12)
    radius = eps * torch.rand(x.shape[0], *([1] * (x.dim() - 1)), dtype=x.dtype, device=x.device)
    return project(x + radius * direction, x, eps, norm)


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


def _check_mode(name: str, attack_mode: Optional[str]) -> Optional[str]:
    if attack_mode not in (None, "train", "eval"):
        raise ValueError(
            f"{name}: attack_mode must be None (keep the model's mode), 'train' or 'eval', got {attack_mode!r}"
        )
    return attack_mode


class _InnerAttack:
    """Common parameters, validation and mode handling of PGD-AT and TRADES."""

    name = "attack"

    def __init__(self, eps: float, alpha: float, steps: int, norm: str, attack_mode: Optional[str]) -> None:
        check_attack_params(self.name, eps, alpha, steps, norm)
        self.eps, self.alpha, self.steps, self.norm = float(eps), float(alpha), int(steps), norm
        self.attack_mode = _check_mode(self.name, attack_mode)

    def _ascend(self, model: nn.Module, x: Tensor, x_adv: Tensor, objective) -> Tensor:
        """``steps`` projected ascent steps on ``objective(logits) -> scalar`` from ``x_adv``; returns a detached tensor."""
        with _mode(model, self.attack_mode), torch.enable_grad():
            for _ in range(self.steps):
                x_adv = x_adv.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(objective(_logits_of(model, x_adv)), x_adv)
                x_adv = project(_ascent_step(x_adv.detach(), grad, self.alpha, self.norm), x, self.eps, self.norm)
        return x_adv.detach()

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._extra().items())
        return f"{type(self).__name__}(eps={self.eps:g}, alpha={self.alpha:g}, steps={self.steps}, norm={self.norm!r}{extra})"

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
        self.random_start = bool(random_start)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The adversarial batch (detached, in the ε-ball ∩ [0, 1]) that maximises the cross-entropy."""
        _check_batch(self.name, x, y)
        x = x.detach()
        if self.eps == 0:
            return x.clone()
        x_adv = _random_start(x, self.eps, self.norm) if self.random_start else x.clone()
        return self._ascend(model, x, x_adv, lambda logits: F.cross_entropy(logits, y, reduction="sum"))

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
        x_adv = self.perturb(model, x, y)
        logits = _logits_of(model, x_adv)
        return F.cross_entropy(logits, y), logits

    def _extra(self) -> dict:
        return {"random_start": self.random_start, **super()._extra()}


class TRADES(_InnerAttack):
    """TRADES (Zhang et al. 2019): ``loss = CE(model(x), y) + beta * KL(p(x) ‖ p(x_adv))``, KL averaged over the batch.

    The inner maximisation ascends KL(p(x) ‖ p(x_adv)) from x + ``start_std``·N(0, 1) (projected), with p(x)
    computed once, without a graph, at the start of the attack. In the outer loss both terms carry gradients.

    Args:
        eps, alpha, steps, norm, attack_mode: as in :class:`PGDAT`.
        beta: weight of the robustness term (6.0 in the TRADES paper and in Yang et al. 2023).
        start_std: standard deviation of the Gaussian start.

    Calling it returns ``(loss, logits)`` with the CLEAN logits (those of the cross-entropy term).
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
    ) -> None:
        super().__init__(eps, alpha, steps, norm, attack_mode)
        if not _is_real(beta) or beta < 0:
            raise ValueError(f"TRADES: beta must be a finite number >= 0, got {beta!r}")
        if not _is_real(start_std) or start_std < 0:
            raise ValueError(f"TRADES: start_std must be a finite number >= 0, got {start_std!r}")
        self.beta, self.start_std = float(beta), float(start_std)

    def perturb(self, model: nn.Module, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The adversarial batch (detached, in the ε-ball ∩ [0, 1]) that maximises KL(p(x) ‖ p(x_adv)); y is unused."""
        _check_batch(self.name, x, y)
        x = x.detach()
        if self.eps == 0:
            return x.clone()
        with _mode(model, self.attack_mode), torch.no_grad():
            p_clean = F.softmax(_logits_of(model, x), dim=1)
        x_adv = project(x + self.start_std * torch.randn_like(x), x, self.eps, self.norm)
        return self._ascend(
            model, x, x_adv, lambda logits: F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="sum")
        )

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
        x_adv = self.perturb(model, x, y)
        logits = _logits_of(model, x)
        logits_adv = _logits_of(model, x_adv)
        kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return F.cross_entropy(logits, y) + self.beta * kl, logits

    def _extra(self) -> dict:
        return {"beta": self.beta, **super()._extra()}


# ----------------------------------------------------------------------------------------------------
# Random intermediate states (Yang et al. 2023)
# ----------------------------------------------------------------------------------------------------


def _check_int(name: str, what: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: {what} must be an int >= {low}, got {value!r}")
    return value


def solver_iterate(deq: nn.Module, u: Tensor, steps: int, z0: Optional[Tensor] = None) -> Tensor:
    """The state after ``steps`` iterations of a DEQ's own solver on injection ``u``, from ``z0`` (default z_0 = 0).

    No graph is built. This is the iterate itself, not the solver's returned "best" one: entry ``steps`` of
    ``info.trajectory``. A sample that met the solver's tolerance earlier keeps its result, as in the trajectory.

    Args:
        deq: a :class:`~deqlib.deq.DEQ` (e.g. ``model.deq``).
        u: the injection (``model.inject(x)``).
        steps: solver iterations, >= 1.
        z0: the state to start from (e.g. to continue a solve); default the DEQ's initial state.

    Returns:
        (N, *state), detached.
    """
    _check_int("solver_iterate", "steps", steps, 1)
    with torch.no_grad():
        _, info = deq.solve(u.detach(), z0, record=True, max_iter=steps)
    # The trajectory is shorter than steps + 1 only when every sample stopped early; its last entry is then the result.
    return info.trajectory[-1]


def damped_steps(cell: nn.Module, z: Tensor, u: Tensor, steps: int, tau: float) -> Tensor:
    """``steps`` damped steps z <- (1 - tau) z + tau cell(z, u), with the graph (the phantom-gradient unroll)."""
    for _ in range(steps):
        fz = cell(z, u)
        z = fz if tau == 1.0 else z + tau * (fz - z)
    return z


class RandomDepthClassifier(nn.Module):
    """A DEQ classifier read out at a random solver depth (Yang et al. 2023, "random intermediate states").

    Forward: u = model.inject(x); k = a depth (see below); z_k = the k-th iterate of the model's own solver
    from z_0 (:func:`solver_iterate`, no graph); z = ``phantom_steps`` damped steps
    z <- (1 - tau) z + tau f(z, u) from z_k, WITH the graph (the phantom gradient from that state);
    logits = model.head(z). Gradients reach the parameters and the input x through the damped steps.

    The depth: in ``train()`` mode every call draws k uniformly from {1, ..., max_depth} (one k for the
    whole batch, as one forward pass in the paper); in ``eval()`` mode k = ``eval_depth``. The depth of the
    last call is in ``last_depth``. Our choice: z_k is the iterate of the model's configured solver (for an
    Anderson model, Anderson iterates; Yang et al. use Broyden iterates of their MDEQ), and evaluation runs the
    same function as training with a fixed k, so the phantom steps are part of the readout in both modes.

    Adversarial training with it: PGDAT and TRADES call the model they are given, so
    ``fit(RandomDepthClassifier(model), data, loss_fn=PGDAT(...))`` crafts the inner attack on the random-depth
    model as well, each attack step with its own random depth (the wrapper is in ``train()`` mode during
    ``fit``; pass ``attack_mode="eval"`` to the loss to attack at ``eval_depth`` instead).

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier` (anything with ``inject``, ``deq`` and ``logits_from_state``).
        max_depth: T, the largest depth drawn (8 in the paper).
        eval_depth: depth in ``eval()`` mode (default T).
        phantom_steps: damped steps with the graph (5 in the paper).
        tau: damping λ of those steps (0.5 in the paper).
        generator: a ``torch.Generator`` (CPU) for the depth draws; default the global RNG.

    Example:
        >>> from deqlib import data
        >>> from deqlib.cells import classifier_for
        >>> model = RandomDepthClassifier(classifier_for(data.load("digits"), "mlp", width=16))
        >>> logits = model(torch.rand(2, 1, 8, 8))
        >>> 1 <= model.last_depth <= 8
        True
    """

    def __init__(
        self,
        model: nn.Module,
        max_depth: int = 8,
        eval_depth: Optional[int] = None,
        phantom_steps: int = 5,
        tau: float = 0.5,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        name = "RandomDepthClassifier"
        missing = [a for a in ("inject", "deq", "logits_from_state") if not hasattr(model, a)]
        if missing:
            raise TypeError(f"{name}: model must be a DEQClassifier-like module; it lacks {missing}")
        self.model = model
        self.max_depth = _check_int(name, "max_depth", max_depth, 1)
        self.eval_depth = max_depth if eval_depth is None else _check_int(name, "eval_depth", eval_depth, 1)
        self.phantom_steps = _check_int(name, "phantom_steps", phantom_steps, 1)
        if not _is_real(tau) or not 0.0 < float(tau) <= 1.0:
            raise ValueError(f"{name}: tau must be in (0, 1], got {tau!r}")
        self.tau = float(tau)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"{name}: generator must be a torch.Generator, got {type(generator).__name__}")
        self.generator = generator
        self.last_depth: Optional[int] = None

    def extra_repr(self) -> str:
        return f"max_depth={self.max_depth}, eval_depth={self.eval_depth}, phantom_steps={self.phantom_steps}, tau={self.tau:g}"

    def draw_depth(self) -> int:
        """A depth uniform in {1, ..., max_depth}."""
        return int(torch.randint(1, self.max_depth + 1, (), generator=self.generator))

    def forward(self, x: Tensor) -> Tensor:
        depth = self.draw_depth() if self.training else self.eval_depth
        self.last_depth = depth
        u = self.model.inject(x)
        z = solver_iterate(self.model.deq, u, depth)
        z = damped_steps(self.model.deq.cell, z, u, self.phantom_steps, self.tau)
        return self.model.logits_from_state(z)
