"""DEQs as neural dynamics: predictions of intermediate states, early / averaged readouts, and the
input-entropy-reduction defence (Yang, Pang, Liu, NeurIPS 2022; Yang, Li, Pang, Liu, ICML 2023).

The solver's iterates z_0, z_1, ..., z_K (z_0 = 0) are states of a dynamical system driven by the input;
the classifier's head can read out any of them. Everything here works per sample and batch first.

* :func:`state_predictions`: logits, probabilities, entropy and predicted class of every iterate (no graph).
* :class:`EarlyStateClassifier`, :class:`AveragedStateClassifier`: defences of the 2022 paper that read out
  an early iterate, or the average of several, as modules mapping [0, 1] images to logits, with a gradient so
  that attacks can target them.
* :class:`EntropyReductionDefense`: the inference-time defence of the 2023 paper, which moves the input
  (inside a small ball) to lower the entropy of the intermediate predictions while the solver runs;
  :class:`AdaptiveEntropyAttack` attacks through it (BPDA).

The random-depth training model of the 2023 paper is :class:`deqlib.losses.RandomDepthClassifier`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchattacks.attack import Attack

from .losses import _check_int, _is_real, check_attack_params, damped_steps, entropy, project, solver_iterate

__all__ = [
    "ATTACK_EPS",
    "state_predictions",
    "EarlyStateClassifier",
    "AveragedStateClassifier",
    "EntropyReductionDefense",
    "AdaptiveEntropyAttack",
]

#: L∞ attack radius per data set, used to scale the defence's ε and η (the paper's values are for CIFAR-10).
#: MNIST 0.3 (Madry et al.), Fashion-MNIST 0.1 and CIFAR-10 / SVHN 8/255 are the literature's usual radii;
#: mnist5k follows MNIST; digits (8x8, 17 grey levels) 0.1 is our own choice.
ATTACK_EPS: Dict[str, float] = {
    "digits": 0.1,
    "mnist5k": 0.3,
    "mnist": 0.3,
    "fashion-mnist": 0.1,
    "svhn": 8 / 255,
    "cifar10": 8 / 255,
}
#: The paper's defence settings on CIFAR-10 (ε_attack = 8/255): ball radius 8/255, step 2/255.
PAPER_EPS, PAPER_ETA = 8 / 255, 2 / 255

GRADS = ("phantom", "unroll")


def _check_classifier(name: str, model: nn.Module) -> None:
    missing = [a for a in ("inject", "deq", "logits_from_state") if not hasattr(model, a)]
    if missing:
        raise TypeError(f"{name}: model must be a DEQClassifier-like module; it lacks {missing}")


def _trajectory(model: nn.Module, u: Tensor, steps: int, **overrides: Any) -> Tuple[Tensor, Any]:
    """z_0..z_steps of the model's solver on injection u, (steps + 1, N, *state), no graph.

    A solver stops once every sample has converged; the missing entries then repeat the last one, as the
    trajectory already does for a sample that stopped earlier than the others.
    """
    with torch.no_grad():
        _, info = model.deq.solve(u.detach(), record=True, max_iter=steps, **overrides)
    traj = info.trajectory
    if traj.shape[0] < steps + 1:
        traj = torch.cat([traj, traj[-1:].expand(steps + 1 - traj.shape[0], *traj.shape[1:])])
    return traj, info


def _head(model: nn.Module, states: Tensor) -> Tensor:
    """The head on (K, N, *state) states, as one batch: (K, N, C)."""
    k, n = states.shape[:2]
    return model.logits_from_state(states.reshape(k * n, *states.shape[2:])).reshape(k, n, -1)


# ----------------------------------------------------------------------------------------------------
# Predictions along the dynamics
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def state_predictions(
    model: nn.Module, x: Tensor, steps: Optional[int] = None, *, y: Optional[Tensor] = None, **solver_overrides: Any
) -> Dict[str, Any]:
    """The same head applied to every solver iterate z_0..z_K of a DEQ classifier (no graph).

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        x: images in [0, 1], (N, C, H, W).
        steps: K, the solver iterations (default the model's ``deq.max_iter``). The solver keeps its own
            tolerance: a sample that converged repeats its result (pass ``tol=...`` to change it).
        y: optional labels (N,): adds ``correct`` and ``accuracy``.
        **solver_overrides: other solver settings for this call.

    Returns:
        A dict with ``states`` (K+1, N, *state), ``logits`` (K+1, N, C), ``probs`` (K+1, N, C),
        ``entropy`` (K+1, N) in nats, ``predictions`` (K+1, N), ``info`` (the solver's
        :class:`~deqlib.solvers.SolverInfo`), and with ``y``: ``correct`` (K+1, N) bool and ``accuracy`` (K+1,).
    """
    _check_classifier("state_predictions", model)
    steps = model.deq.max_iter if steps is None else _check_int("state_predictions", "steps", steps, 1)
    states, info = _trajectory(model, model.inject(x), steps, **solver_overrides)
    logits = _head(model, states)
    out: Dict[str, Any] = {
        "states": states,
        "logits": logits,
        "probs": F.softmax(logits, dim=-1),
        "entropy": entropy(logits),
        "predictions": logits.argmax(dim=-1),
        "info": info,
    }
    if y is not None:
        if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
            raise ValueError(
                f"state_predictions: y must have shape ({x.shape[0]},), got {tuple(getattr(y, 'shape', ()))}"
            )
        out["correct"] = out["predictions"] == y.to(out["predictions"].device)
        out["accuracy"] = out["correct"].float().mean(dim=1)
    return out


# ----------------------------------------------------------------------------------------------------
# Early-state and averaged-state readouts (Yang et al. 2022)
# ----------------------------------------------------------------------------------------------------


def _straight_through(value: Tensor, surrogate: Tensor) -> Tensor:
    """``value`` exactly in the forward, the gradient of ``surrogate`` in the backward."""
    return value + (surrogate - surrogate.detach())


class _StateReadout(nn.Module):
    """Shared machinery: exact iterates of the model's solver, each given a surrogate gradient."""

    name = "readout"

    def __init__(self, model: nn.Module, grad: str, phantom_steps: Optional[int], tau: Optional[float]) -> None:
        super().__init__()
        _check_classifier(self.name, model)
        if grad not in GRADS:
            raise ValueError(f"{self.name}: grad must be one of {GRADS}, got {grad!r}")
        self.model, self.grad = model, grad
        self.phantom_steps = (
            model.deq.phantom_steps
            if phantom_steps is None
            else _check_int(self.name, "phantom_steps", phantom_steps, 1)
        )
        tau = model.deq.phantom_tau if tau is None else tau
        if not _is_real(tau) or not 0.0 < float(tau) <= 1.0:
            raise ValueError(f"{self.name}: tau must be in (0, 1], got {tau!r}")
        self.tau = float(tau)

    def _check_index(self, i: object) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or i < 1:
            raise ValueError(
                f"{self.name}: state indices must be ints >= 1 (z_0 = 0 does not depend on the input), got {i!r}"
            )
        return i

    def _states(self, x: Tensor, indices: Sequence[int]) -> List[Tensor]:
        """z_i for i in indices: exact values, with the surrogate gradient attached when autograd is on."""
        u = self.model.inject(x)
        traj, _ = _trajectory(self.model, u, max(indices))
        values = [traj[i] for i in indices]
        if not torch.is_grad_enabled():
            return values
        cell = self.model.deq.cell
        if self.grad == "phantom":
            return [_straight_through(v, damped_steps(cell, v, u, self.phantom_steps, self.tau)) for v in values]
        # "unroll": plain steps z <- f(z, u) from z_0 with the graph, read at each index.
        wanted, out = set(indices), {}
        z = traj[0]
        for k in range(1, max(indices) + 1):
            z = cell(z, u)
            if k in wanted:
                out[k] = z
        return [_straight_through(v, out[i]) for v, i in zip(values, indices)]

    def extra_repr(self) -> str:
        return f"grad={self.grad!r}, phantom_steps={self.phantom_steps}, tau={self.tau:g}"


class EarlyStateClassifier(_StateReadout):
    """Read out the ``state_index``-th solver iterate: ``forward(x) = head(z_i)`` (the 2022 paper's early-state defence).

    The value is exactly ``state_predictions(model, x, i)["logits"][i]``. The gradient (so that attacks can target
    the readout) is a surrogate, attached straight-through so the value never changes:

    * ``grad="phantom"`` (default): back-propagate through ``phantom_steps`` damped steps
      z <- (1 - tau) z + tau f(z, u) from the detached z_i, like the intermediate-state attack of Yang et al.
      (2022) (their λ = 0.5 or 1 is our ``tau``; default the model's ``deq.phantom_steps`` / ``phantom_tau``).
    * ``grad="unroll"``: back-propagate through i plain steps z <- f(z, u) from z_0. This is the exact gradient
      of the readout when the model's solver is plain fixed-point iteration (``solver="fixed_point"``,
      ``tau=1``) and no sample stops before i; for Anderson / Broyden iterates it is an approximation.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        state_index: i >= 1 (Yang et al. 2023 read out "the last but one" state).
        grad: "phantom" or "unroll".
        phantom_steps, tau: settings of the phantom surrogate (default the model's).
    """

    name = "EarlyStateClassifier"

    def __init__(
        self,
        model: nn.Module,
        state_index: int,
        *,
        grad: str = "phantom",
        phantom_steps: Optional[int] = None,
        tau: Optional[float] = None,
    ) -> None:
        super().__init__(model, grad, phantom_steps, tau)
        self.state_index = self._check_index(state_index)

    def forward(self, x: Tensor) -> Tensor:
        (z,) = self._states(x, [self.state_index])
        return self.model.logits_from_state(z)

    def extra_repr(self) -> str:
        return f"state_index={self.state_index}, " + super().extra_repr()


class AveragedStateClassifier(_StateReadout):
    """Read out the average of several solver iterates: ``forward(x) = head(mean_i z_i)`` (Yang et al. 2022).

    We average the states, then apply the head (for the linear heads of :mod:`deqlib.cells`, which pool
    and then apply a linear map, this equals averaging the logits). Each z_i gets the surrogate gradient
    described in :class:`EarlyStateClassifier`.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        indices: the iterates to average (ints >= 1); or
        last_k: average the last k iterates z_{K-k+1}..z_K, with K = ``steps``.
        steps: K for ``last_k`` (default the model's ``deq.max_iter``).
        grad, phantom_steps, tau: as in :class:`EarlyStateClassifier`.
    """

    name = "AveragedStateClassifier"

    def __init__(
        self,
        model: nn.Module,
        indices: Optional[Sequence[int]] = None,
        *,
        last_k: Optional[int] = None,
        steps: Optional[int] = None,
        grad: str = "phantom",
        phantom_steps: Optional[int] = None,
        tau: Optional[float] = None,
    ) -> None:
        super().__init__(model, grad, phantom_steps, tau)
        if (indices is None) == (last_k is None):
            raise ValueError(f"{self.name}: give exactly one of indices and last_k")
        if indices is not None:
            if steps is not None:
                raise ValueError(f"{self.name}: steps only applies to last_k")
            if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
                raise TypeError(f"{self.name}: indices must be a sequence of ints, got {type(indices).__name__}")
            idx = [self._check_index(i) for i in indices]
            if not idx or len(set(idx)) != len(idx):
                raise ValueError(f"{self.name}: indices must be non-empty and distinct, got {list(indices)}")
        else:
            k_total = model.deq.max_iter if steps is None else _check_int(self.name, "steps", steps, 1)
            last_k = _check_int(self.name, "last_k", last_k, 1)
            if last_k > k_total:
                raise ValueError(f"{self.name}: last_k={last_k} exceeds the {k_total} solver steps")
            idx = list(range(k_total - last_k + 1, k_total + 1))
        self.indices: Tuple[int, ...] = tuple(idx)

    def forward(self, x: Tensor) -> Tensor:
        states = self._states(x, self.indices)
        return self.model.logits_from_state(torch.stack(states).mean(dim=0))

    def extra_repr(self) -> str:
        return f"indices={self.indices}, " + super().extra_repr()


# ----------------------------------------------------------------------------------------------------
# Input entropy reduction (Yang et al. 2023) and an adaptive attack through it
# ----------------------------------------------------------------------------------------------------


def _dataset_name(dataset: Any) -> str:
    name = dataset if isinstance(dataset, str) else getattr(dataset, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"dataset must be a name or an ImageDataset, got {type(dataset).__name__}")
    key = name.strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist"}.get(key, key)
    if key not in ATTACK_EPS:
        raise ValueError(f"no default attack radius for data set {name!r}; known: {sorted(ATTACK_EPS)} (or pass eps)")
    return key


class EntropyReductionDefense(nn.Module):
    """Input entropy reduction, an inference-time defence (Yang et al. 2023, "method 1").

    For an input x (possibly adversarial), with u_t = inject(x_t) and z the solver state:

    1. x_0 = x, z = z_0 = 0.
    2. Each of ``rounds`` rounds: run T_f iterations of the model's solver from z with input x_t; then take R
       signed-gradient steps on the input with z fixed,
       x_{t+1} = Π_{B∞(x, ε) ∩ [0,1]}(x_t − η·sign(∇_x H(x_t))),  H(x_t) = (1/B) Σ_b entropy(softmax(head(f(z, u_t)))_b).
    3. Output: logits = head(f(z, u_T)) with the final state z and the final input x_T, i.e. the prediction whose
       entropy the last step measured.

    Per sample: H averages over the batch, but sample b's entropy depends only on x_b (the solver stops per
    sample and the cells normalise per sample), so ∇_{x_b} H = (1/B) ∇_{x_b} H_b and the 1/B factor does not
    change the sign: each sample's defence is the same whatever batch it is in (``tests/test_dynamics.py``
    checks this).

    What is ours (not the paper's):

    * The solver restarts from the current state each round (Anderson's / Broyden's history is dropped); the
      authors' code continues Broyden with its low-rank update adjusted to the new input.
    * The final readout uses x_T; the authors read out f(z, x) with the original input.
    * Default radii: the paper's ε = 8/255, η = 2/255 are for CIFAR-10 at attack radius 8/255. For another data
      set we scale both by ε_attack / (8/255), i.e. ε = ε_attack and η = ε_attack / 4, with ε_attack from
      ``attack_eps`` or the data set (:data:`ATTACK_EPS`, e.g. mnist5k 0.3 -> ε = 0.3, η = 0.075).

    Gradients:

    * :meth:`forward` does NOT differentiate through the defence's loop, like the authors' released evaluation,
      which crafts the attack on the undefended model: the returned logits have the defended VALUES and,
      attached straight-through, the GRADIENT of the undefended ``model(x)`` (with its configured gradient).
      An attack library run on this module is therefore a transfer attack from the undefended model.
    * :meth:`forward_differentiable` (BPDA, Athalye et al. 2018) back-propagates through the loop: the signed
      steps and the projections are not differentiable (the sign is piecewise constant), so each input update
      is replaced by the identity in the backward pass (∂x_{t+1}/∂x_t = I, hence ∂x_t/∂x = I); the T_f solver
      steps of each round are differentiated as T_f plain steps z <- f(z, u_t) evaluated at the defence's own
      states (exact when the model's solver is plain fixed-point iteration), chained across rounds. The values
      are the defence's exactly. :class:`AdaptiveEntropyAttack` uses it.

    After a call: ``last_inputs`` (N, C, H, W) the purified x_T; ``last_entropy`` (rounds, R + 1, N) the
    per-sample entropy before each input step and after the last one, in each round.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        T_f: solver iterations per round (2).
        R: input steps per round (10).
        rounds: rounds (4).
        eta: input step size η (default: see above).
        eps: radius ε of the L∞ ball around the given input (default: see above); 0 disables the input updates.
        dataset: a data set name or :class:`~deqlib.data.ImageDataset` for the default radii.
        attack_eps: the attack radius for the default radii (instead of the data set's).
    """

    def __init__(
        self,
        model: nn.Module,
        T_f: int = 2,
        R: int = 10,
        rounds: int = 4,
        eta: Optional[float] = None,
        eps: Optional[float] = None,
        dataset: Any = None,
        *,
        attack_eps: Optional[float] = None,
    ) -> None:
        super().__init__()
        name = "EntropyReductionDefense"
        _check_classifier(name, model)
        self.model = model
        self.T_f = _check_int(name, "T_f", T_f, 1)
        self.R = _check_int(name, "R", R, 0)
        self.rounds = _check_int(name, "rounds", rounds, 1)
        if eps is None or eta is None:
            if attack_eps is None:
                if dataset is None:
                    raise ValueError(
                        f"{name}: give eps and eta, or a dataset / attack_eps to scale the paper's CIFAR-10 values"
                    )
                attack_eps = ATTACK_EPS[_dataset_name(dataset)]
            if not _is_real(attack_eps) or not 0 < attack_eps <= 1:
                raise ValueError(f"{name}: attack_eps must be in (0, 1], got {attack_eps!r}")
            scale = float(attack_eps) / PAPER_EPS
            eps = PAPER_EPS * scale if eps is None else eps
            eta = PAPER_ETA * scale if eta is None else eta
        if not _is_real(eps) or not 0 <= eps <= 1:
            raise ValueError(f"{name}: eps must be in [0, 1] (pixels are in [0, 1]), got {eps!r}")
        if not _is_real(eta) or eta <= 0:
            raise ValueError(f"{name}: eta must be a finite number > 0, got {eta!r}")
        self.eps, self.eta = float(eps), float(eta)
        self.last_inputs: Optional[Tensor] = None
        self.last_entropy: Optional[Tensor] = None

    def extra_repr(self) -> str:
        return f"T_f={self.T_f}, R={self.R}, rounds={self.rounds}, eta={self.eta:.4g}, eps={self.eps:.4g}"

    def _run(self, x: Tensor) -> Tuple[Tensor, List[Tensor], List[Tensor], List[Tensor]]:
        """The defence without any graph kept.

        Returns (logits, inputs, starts, ends): the inputs x_t used by each round's solver steps plus the final
        x_T (rounds + 1 tensors), and each round's start and end states.
        """
        model, deq = self.model, self.model.deq
        x = x.detach()
        lo, hi = (x - self.eps).clamp(min=0.0), (x + self.eps).clamp(max=1.0)
        x_t = x.clone()
        with torch.no_grad():
            u = model.inject(x_t)
            z = deq.initial_state(u)
        inputs, starts, ends, trace = [], [], [], []
        logits = None
        for _ in range(self.rounds):
            inputs.append(x_t)
            starts.append(z)
            z = solver_iterate(deq, u, self.T_f, z)
            ends.append(z)
            h_round = []
            for step in range(self.R + 1):
                last = step == self.R  # the last evaluation only measures the entropy after the final step
                xg = x_t.detach().requires_grad_(not last)
                with torch.set_grad_enabled(not last):
                    logits = model.logits_from_state(deq.cell(z, model.inject(xg)))
                    h = entropy(logits)
                    h_mean = h.mean()  # the paper's H: the batch mean (1/B does not change the sign)
                h_round.append(h.detach())
                if last:
                    break
                (g,) = torch.autograd.grad(h_mean, xg)
                x_t = torch.minimum(torch.maximum(x_t - self.eta * g.sign(), lo), hi)
            trace.append(torch.stack(h_round))
            with torch.no_grad():
                u = model.inject(x_t)
        inputs.append(x_t)
        self.last_inputs = x_t.detach()
        self.last_entropy = torch.stack(trace)
        return logits.detach(), inputs, starts, ends

    def defend(self, x: Tensor) -> Tensor:
        """The defended logits, without any gradient."""
        return self._run(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        """Defended logits; the gradient, if any, is the undefended model's (see the class docstring)."""
        logits = self.defend(x)
        if torch.is_grad_enabled() and x.requires_grad:
            base = self.model(x)
            logits = _straight_through(logits, base)
        return logits

    def forward_differentiable(self, x: Tensor) -> Tensor:
        """Defended logits (same values as :meth:`forward`) with the BPDA gradient through the loop."""
        logits, inputs, starts, ends = self._run(x)
        if not torch.is_grad_enabled():
            return logits
        model, cell = self.model, self.model.deq.cell
        # BPDA: x_t in the forward, the identity in the backward.
        through = [x_r + (x - x.detach()) for x_r in inputs]
        z = starts[0]
        for r in range(self.rounds):
            u = model.inject(through[r])
            s = z
            for _ in range(self.T_f):
                s = cell(s, u)
            z = _straight_through(ends[r], s)
        out = model.logits_from_state(cell(z, model.inject(through[-1])))
        return _straight_through(logits, out)


class AdaptiveEntropyAttack(Attack):
    """L∞ PGD through :class:`EntropyReductionDefense` with BPDA, optionally averaged over EOT samples.

    Each step differentiates the cross-entropy of ``defense.forward_differentiable`` (see there for the BPDA
    surrogate), averages ``eot`` gradients (useful only if the defence is randomised: ours is deterministic, so
    eot = 1 suffices), and takes a signed step, projected onto the ε-ball ∩ [0, 1]. Supports torchattacks'
    targeted modes. The model mode is handled by torchattacks (``eval()`` during the attack, then restored).

    Args:
        defense: an :class:`EntropyReductionDefense`.
        eps: L∞ radius.
        alpha: step size.
        steps: PGD steps.
        eot: gradient samples per step.
        random_start: start from a uniform point of the ball.

    Example:
        >>> # atk = AdaptiveEntropyAttack(EntropyReductionDefense(model, dataset="mnist5k"), 0.3, 0.01, 40)
        >>> # x_adv = atk(x, y)
    """

    def __init__(
        self,
        defense: EntropyReductionDefense,
        eps: float,
        alpha: float,
        steps: int,
        eot: int = 1,
        random_start: bool = True,
    ) -> None:
        if not isinstance(defense, EntropyReductionDefense):
            raise TypeError(
                f"AdaptiveEntropyAttack: defense must be an EntropyReductionDefense, got {type(defense).__name__}"
            )
        check_attack_params("AdaptiveEntropyAttack", eps, alpha, steps, "Linf")
        _check_int("AdaptiveEntropyAttack", "eot", eot, 1)
        super().__init__("AdaptiveEntropyAttack", defense)
        self.eps, self.alpha, self.steps, self.eot = float(eps), float(alpha), int(steps), int(eot)
        self.random_start = bool(random_start)
        self.supported_mode = ["default", "targeted"]

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        target = self.get_target_label(images, labels) if self.targeted else labels
        sign = -1.0 if self.targeted else 1.0
        adv = images.clone()
        if self.random_start:
            adv = project(adv + torch.empty_like(adv).uniform_(-self.eps, self.eps), images, self.eps)
        for _ in range(self.steps):
            grad = torch.zeros_like(adv)
            for _ in range(self.eot):
                adv.requires_grad_(True)
                cost = sign * F.cross_entropy(self.model.forward_differentiable(adv), target)
                grad = grad + torch.autograd.grad(cost, adv)[0]
                adv = adv.detach()
            adv = project(adv + self.alpha * grad.sign(), images, self.eps)
        return adv.detach()
