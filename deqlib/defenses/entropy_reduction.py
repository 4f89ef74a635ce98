"""Input entropy reduction (Yang, Li, Pang, Liu, ICML 2023, "method 1"): an inference-time defence of a DEQ classifier.

While the solver runs, the defence moves the input inside a small L∞ ball to lower the entropy of the intermediate
predictions. :class:`deqlib.attacks.adaptive.AdaptiveEntropyAttack` attacks through it (BPDA).

API: :class:`EntropyReductionDefense`; :data:`ATTACK_EPS` (the attack radius per data set that scales its default
radii), :data:`PAPER_EPS`, :data:`PAPER_ETA` (the paper's CIFAR-10 settings).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .._validate import check_deq_classifier, check_fraction, check_int
from ..dynamics import solver_iterate
from ..losses import entropy
from ..solvers import damped_steps
from ..threat import check_eps, check_step
from ._common import straight_through

__all__ = ["ATTACK_EPS", "PAPER_EPS", "PAPER_ETA", "EntropyReductionDefense"]

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

_WHERE = "EntropyReductionDefense"


def _dataset_key(dataset: Any) -> str:
    name = dataset if isinstance(dataset, str) else getattr(dataset, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"{_WHERE}: dataset must be a name or an ImageDataset, got {type(dataset).__name__}")
    key = name.strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist"}.get(key, key)
    if key not in ATTACK_EPS:
        raise ValueError(
            f"{_WHERE}: no default attack radius for data set {name!r}; known: {sorted(ATTACK_EPS)} (or pass eps)"
        )
    return key


def _radii(
    eps: Optional[float], eta: Optional[float], dataset: Any, attack_eps: Optional[float]
) -> Tuple[float, float]:
    """(ε, η): the given ones, else the paper's scaled by ε_attack / (8/255), ε_attack from attack_eps or the data."""
    if eps is None or eta is None:
        if attack_eps is None:
            if dataset is None:
                raise ValueError(
                    f"{_WHERE}: give eps and eta, or a dataset / attack_eps to scale the paper's CIFAR-10 values"
                )
            attack_eps = ATTACK_EPS[_dataset_key(dataset)]
        scale = check_fraction(attack_eps, "attack_eps", _WHERE) / PAPER_EPS
        eps = PAPER_EPS * scale if eps is None else eps
        eta = PAPER_ETA * scale if eta is None else eta
    return check_eps(eps, "Linf", _WHERE), check_step(eta, "eta", _WHERE, norm="Linf")


class EntropyReductionDefense(nn.Module):
    """Input entropy reduction, an inference-time defence (Yang et al. 2023, "method 1").

    For an input x (possibly adversarial), with u_t = inject(x_t) and z the solver state:

    1. x_0 = x, z = z_0 = 0.
    2. Each of ``rounds`` rounds: run T_f iterations of the model's solver from z with input x_t; then take R
       signed-gradient steps on the input with z fixed,
       x_{t+1} = Π_{B∞(x, ε) ∩ [0,1]}(x_t − η·sign(∇_x H(x_t))),
       H(x_t) = (1/B) Σ_b entropy(softmax(head(f(z, u_t)))_b).
    3. Output: logits = head(f(z, u_T)) with the final state z and the final input x_T, i.e. the prediction whose
       entropy the last step measured.

    Per sample: H averages over the batch, but sample b's entropy depends only on x_b (the solver stops per
    sample and the cells normalise per sample), so ∇_{x_b} H = (1/B) ∇_{x_b} H_b and the 1/B factor does not
    change the sign: each sample's defence is the same whatever batch it is in (the tests check this).

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
      are the defence's exactly. :class:`~deqlib.attacks.adaptive.AdaptiveEntropyAttack` uses it.

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
        self.model = check_deq_classifier(model, _WHERE)
        self.T_f = check_int(T_f, "T_f", _WHERE, minimum=1)
        self.R = check_int(R, "R", _WHERE, minimum=0)
        self.rounds = check_int(rounds, "rounds", _WHERE, minimum=1)
        self.eps, self.eta = _radii(eps, eta, dataset, attack_eps)
        self.last_inputs: Optional[Tensor] = None
        self.last_entropy: Optional[Tensor] = None

    def extra_repr(self) -> str:
        return f"T_f={self.T_f}, R={self.R}, rounds={self.rounds}, eta={self.eta:.4g}, eps={self.eps:.4g}"

    def _input_steps(self, z: Tensor, x_t: Tensor, lo: Tensor, hi: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """One round's R signed steps on the input with the state z fixed.

        Returns (x_t after the steps, the per-sample entropy before each step and after the last (R + 1, N), the
        logits head(f(z, u_t)) of that last evaluation, detached).
        """
        model = self.model
        entropies = []
        for step in range(self.R + 1):
            last = step == self.R  # the last evaluation only measures the entropy after the final step
            xg = x_t.detach().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                logits = model.logits_from_state(model.deq.cell(z, model.inject(xg)))
                h = entropy(logits)
                h_mean = h.mean()  # the paper's H: the batch mean (1/B does not change the sign)
            entropies.append(h.detach())
            if last:
                break
            (g,) = torch.autograd.grad(h_mean, xg)
            x_t = torch.minimum(torch.maximum(x_t - self.eta * g.sign(), lo), hi)
        return x_t, torch.stack(entropies), logits.detach()

    def _run(self, x: Tensor) -> Tuple[Tensor, List[Tensor], List[Tensor], List[Tensor]]:
        """The defence without any graph kept.

        Returns (logits, inputs, starts, ends): the inputs x_t used by each round's solver steps plus the final
        x_T (rounds + 1 tensors), and each round's start and end states.
        """
        model, deq = self.model, self.model.deq
        x = x.detach()
        lo, hi = (x - self.eps).clamp(min=0.0), (x + self.eps).clamp(max=1.0)  # the ball ∩ [0, 1], per pixel
        x_t = x.clone()
        with torch.no_grad():
            u = model.inject(x_t)
            z = deq.initial_state(u)
        inputs, starts, ends, trace = [], [], [], []
        for _ in range(self.rounds):
            inputs.append(x_t)
            starts.append(z)
            z = solver_iterate(deq, u, self.T_f, z)
            ends.append(z)
            x_t, entropies, logits = self._input_steps(z, x_t, lo, hi)
            trace.append(entropies)
            with torch.no_grad():
                u = model.inject(x_t)
        inputs.append(x_t)
        self.last_inputs = x_t.detach()
        self.last_entropy = torch.stack(trace)
        return logits, inputs, starts, ends

    def defend(self, x: Tensor) -> Tensor:
        """The defended logits, without any gradient."""
        return self._run(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        """Defended logits; the gradient, if any, is the undefended model's (see the class docstring)."""
        logits = self.defend(x)
        if torch.is_grad_enabled() and x.requires_grad:
            logits = straight_through(logits, self.model(x))
        return logits

    def forward_differentiable(self, x: Tensor) -> Tensor:
        """Defended logits (same values as :meth:`forward`) with the BPDA gradient through the loop."""
        logits, inputs, starts, ends = self._run(x)
        if not torch.is_grad_enabled():
            return logits
        model, cell = self.model, self.model.deq.cell
        through = [x_r + (x - x.detach()) for x_r in inputs]  # BPDA: x_t in the forward, the identity in the backward
        z = starts[0]
        for r in range(self.rounds):
            u = model.inject(through[r])
            s = damped_steps(lambda state, u=u: cell(state, u), z, self.T_f)  # T_f plain steps, with the graph
            z = straight_through(ends[r], s)
        return straight_through(logits, model.logits_from_state(cell(z, model.inject(through[-1]))))
