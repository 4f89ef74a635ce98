"""Input entropy reduction (Yang, Li, Pang, Liu, ICML 2023, "method 1"): an inference-time defence of a DEQ classifier.

While the solver runs, the defence moves the input inside a small L∞ ball to lower the entropy of the intermediate
predictions. Its forward carries an honest gradient (BPDA by default) or refuses to be differentiated
(:mod:`~deqlib.defenses.entropy_gradients`); it is evaluated by the per-sample worst case over the four attacks of
:meth:`EntropyReductionDefense.adaptive_attacks` (:mod:`deqlib.attacks.adaptive`).

API: :class:`EntropyReductionDefense`, :class:`PurificationTrace`; :data:`ATTACK_EPS` (the attack radius per data set
that scales its default radii), :data:`PAPER_EPS`, :data:`PAPER_ETA` (the paper's CIFAR-10 settings).
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from .._validate import check_choice, check_deq_classifier, check_fraction, check_int
from ..dynamics import solver_iterate
from ..losses import entropy
from ..solvers import damped_steps
from ..solvers.continued import ContinuedBroyden
from ..threat import check_eps, check_step
from ._common import straight_through
from .entropy_gradients import CALL_GRADIENTS, DEFENSE_GRADIENTS, refuse_gradient, smooth_sign

__all__ = [
    "ATTACK_EPS",
    "PAPER_EPS",
    "PAPER_ETA",
    "EntropyReductionDefense",
    "PurificationTrace",
    "READOUTS",
    "MEMORIES",
]

#: Where the defence reads its prediction: ``"final"`` head(f(z, u_T)) (ours), ``"released"`` head(z) of the last
#: round's solver state (the authors' code: the last round's input steps reach no state that is read),
#: ``"converged"`` head(z*) with z* the model's solve at the purified input x_T, started from z.
READOUTS = ("final", "released", "converged")
#: The solver between input steps: ``"restart"`` the model's own solver, restarted from the current state each
#: round (ours); ``"carry"`` Broyden with its state and memory carried across rounds (the authors' code).
MEMORIES = ("restart", "carry")

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


class PurificationTrace(NamedTuple):
    """One run of :class:`EntropyReductionDefense` (see :meth:`EntropyReductionDefense.trace`).

    Attributes:
        logits: (N, C) the defended logits (the readout's: head(f(z, u_T)) for "final"); with the chosen graph when
            traced with one.
        inputs: the input of each round's solver steps, then the final x_T (rounds + 1 tensors, detached).
        states: each round's state after its T_f solver steps (detached).
        round_logits: each round's last evaluation head(f(z_r, u)) after its input steps (for readout "final" the
            last is ``logits``).
        entropy: (rounds, steps + 1, N) the per-sample entropy before each input step and after the last one.
        input_jacobian: the diagonal of d x_read / d x, x_read the input of the state read out (x_T, or the last
            round's input for readout "released"); the Jacobian of the purification is diagonal and exact almost
            everywhere: 1 on a pixel that moves with the input, 0 on one the [0, 1] box holds; detached.
        read_input: x_read (detached).
    """

    logits: Tensor
    inputs: List[Tensor]
    states: List[Tensor]
    round_logits: List[Tensor]
    entropy: Tensor
    input_jacobian: Tensor
    read_input: Tensor


class EntropyReductionDefense(nn.Module):
    """Input entropy reduction, an inference-time defence (Yang et al. 2023, "method 1").

    For an input x (possibly adversarial), with u_t = inject(x_t) and z the solver state:

    1. x_0 = x, z = z_0 = 0.
    2. Each of ``rounds`` rounds: run T_f iterations of the model's solver from z with input x_t; then take R
       signed-gradient steps on the input with z fixed,
       x_{t+1} = Π_{B∞(x, ε) ∩ [0,1]}(x_t − η·sign(∇_x H(x_t))),
       H(x_t) = (1/B) Σ_b entropy(softmax(head(f(z, u_t)))_b).
    3. Output: by default (``readout="final"``) logits = head(f(z, u_T)) with the final state z and the final input
       x_T, i.e. the prediction whose entropy the last step measured; see ``readout`` for the others.

    Per sample: H averages over the batch, but sample b's entropy depends only on x_b (the solver stops per
    sample and the cells normalise per sample), so ∇_{x_b} H = (1/B) ∇_{x_b} H_b and the 1/B factor does not
    change the sign: each sample's defence is the same whatever batch it is in (the tests check this).

    What is ours by default, and the authors' released choice (:meth:`as_released` takes theirs):

    * ``memory="restart"``: the model's solver restarts from the current state each round (Anderson's / Broyden's
      history is dropped); ``"carry"``: Broyden continues with its state and inverse-Jacobian memory across rounds
      (:class:`~deqlib.solvers.continued.ContinuedBroyden`, each round's state its lowest-residual iterate), as released.
    * ``readout="final"``: head(f(z, u_T)), the prediction whose entropy the last step measured; ``"released"``:
      head(z) of the last round's solver state, whose input is the one after ``rounds - 1`` rounds of input steps
      (the last round's steps are computed but reach nothing read); ``"converged"``: head(z*), z* the model's solve
      at x_T started from z (its gradient the model's, e.g. implicit).
    * Default radii: the paper's ε = 8/255, η = 2/255 are for CIFAR-10 at attack radius 8/255. For another data
      set we scale both by ε_attack / (8/255), i.e. ε = ε_attack and η = ε_attack / 4, with ε_attack from
      ``attack_eps`` or the data set (:data:`ATTACK_EPS`, e.g. mnist5k 0.3 -> ε = 0.3, η = 0.075).

    Gradients (:mod:`~deqlib.defenses.entropy_gradients`): the VALUES are the defence's whatever the gradient, and
    the gradient is never the undefended model's unless asked for by name. ``gradient="bpda"`` (default): the
    undefended model's gradient at the purified point read (x_T, or the last round's input for ``"released"``),
    times the purification's Jacobian (0 on pixels the [0, 1] box clipped); ``"loop"`` / ``"loop_smooth"``: through the whole loop (the latter also through the signed
    steps' own gradients); ``"none"``: differentiating the logits raises, naming the adaptive attacks.
    :meth:`forward_with` picks a gradient for one call (also ``"transfer"``, the undefended model's, and ``"skip"``,
    the released AutoAttack's: one cell evaluation at the last round's solver state with the original input).
    An attack library run on this module therefore runs BPDA; the defence's evaluation is the per-sample worst case
    over :meth:`adaptive_attacks`.

    After a call: ``last_inputs`` (N, C, H, W) the purified input read (x_T; for ``"released"`` the last round's
    input); ``last_entropy`` (rounds, R + 1, N) the per-sample entropy before each input step and after the last
    one, in each round; ``last_input_jacobian`` the diagonal of d ``last_inputs`` / d x.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        T_f: solver iterations per round (2).
        R: input steps per round (10).
        rounds: rounds (4).
        eta: input step size η (default: see above).
        eps: radius ε of the L∞ ball around the given input (default: see above); 0 disables the input updates.
        dataset: a data set name or :class:`~deqlib.data.ImageDataset` for the default radii.
        attack_eps: the attack radius for the default radii (instead of the data set's).
        gradient: the gradient :meth:`forward` carries, one of :data:`DEFENSE_GRADIENTS` ("bpda").
        readout: one of :data:`READOUTS` ("final").
        memory: one of :data:`MEMORIES` ("restart").
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
        gradient: str = "bpda",
        readout: str = "final",
        memory: str = "restart",
    ) -> None:
        super().__init__()
        self.model = check_deq_classifier(model, _WHERE)
        self.T_f = check_int(T_f, "T_f", _WHERE, minimum=1)
        self.R = check_int(R, "R", _WHERE, minimum=0)
        self.rounds = check_int(rounds, "rounds", _WHERE, minimum=1)
        self.eps, self.eta = _radii(eps, eta, dataset, attack_eps)
        self.gradient = check_choice(gradient, "gradient", _WHERE, DEFENSE_GRADIENTS)
        self.readout = check_choice(readout, "readout", _WHERE, READOUTS)
        self.memory = check_choice(memory, "memory", _WHERE, MEMORIES)
        self.last_inputs: Optional[Tensor] = None
        self.last_entropy: Optional[Tensor] = None
        self.last_input_jacobian: Optional[Tensor] = None

    def extra_repr(self) -> str:
        return (
            f"T_f={self.T_f}, R={self.R}, rounds={self.rounds}, eta={self.eta:.4g}, eps={self.eps:.4g}, "
            f"gradient={self.gradient!r}, readout={self.readout!r}, memory={self.memory!r}"
        )

    @classmethod
    def as_released(cls, model: nn.Module, **kwargs: Any) -> "EntropyReductionDefense":
        """The defence as the authors' code runs it: Broyden memory carried across rounds, the last round's solver
        state read out (``memory="carry", readout="released"``); other arguments as for the constructor."""
        return cls(model, **{"memory": "carry", "readout": "released", **kwargs})

    def _input_steps(
        self, z: Tensor, x_t: Tensor, bounds: Tuple[Tensor, ...], jac: Tensor, graph: Optional[str], steps: int
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """One round's signed steps on the input with the state z fixed.

        Returns (x_t after the steps, the per-sample entropy before each step and after the last (steps + 1, N), the
        logits head(f(z, u_t)) of that last evaluation, the updated diagonal Jacobian d x_t / d x). Without a graph
        everything is detached; with ``graph`` the new x_t (and the last logits) keep their graph to the input.
        """
        model, smooth = self.model, graph == "loop_smooth"
        lo, hi, dlo, dhi = bounds
        entropies = []
        for step in range(steps + 1):
            last = step == steps  # the last evaluation only measures the entropy after the final step
            keep = graph is not None and (last or smooth)  # this evaluation is differentiated into x
            xi = x_t.clone() if keep else x_t.detach().requires_grad_(not last)  # a fresh node: ∂H/∂x_t, z fixed
            with torch.set_grad_enabled(keep or not last):
                logits = model.logits_from_state(model.deq.cell(z if keep else z.detach(), model.inject(xi)))
                h = entropy(logits)
                h_mean = h.mean()  # the paper's H: the batch mean (1/B does not change the sign)
            entropies.append(h.detach())
            if last:
                break
            (g,) = torch.autograd.grad(h_mean, xi, create_graph=smooth)  # smooth keeps the graph of g itself
            with torch.set_grad_enabled(graph is not None):
                a = x_t - self.eta * (smooth_sign(g) if smooth else g.sign())
                below, above = a < lo, a > hi
                x_t = torch.where(below, lo, torch.where(above, hi, a))  # Π onto the ball ∩ [0, 1]
            jac = torch.where(below, dlo, torch.where(above, dhi, jac))  # d lo/dx, d hi/dx or unchanged
        return x_t, torch.stack(entropies), logits, jac

    def trace(self, x: Tensor, *, graph: Optional[str] = None, idle: bool = False) -> PurificationTrace:
        """Run the defence and return everything it computed (:class:`PurificationTrace`).

        Args:
            x: (N, C, H, W) images in [0, 1].
            graph: None (everything detached), "loop" or "loop_smooth" (the logits keep the graph of that gradient,
                see :mod:`~deqlib.defenses.entropy_gradients`); the values are the same in all three.
            idle: no input steps (R = 0): the readouts the defence would make if purification never moved x.
        """
        graph = check_choice(graph, "graph", _WHERE, (None, "loop", "loop_smooth"))
        model, cell = self.model, self.model.deq.cell
        steps = 0 if idle else self.R
        x = x if graph is not None else x.detach()
        inputs, states, round_logits, trace = [], [], [], []
        with torch.set_grad_enabled(graph is not None):
            s_lo, s_hi = x - self.eps, x + self.eps
            bounds = (s_lo.clamp(min=0.0), s_hi.clamp(max=1.0), (s_lo > 0).to(x.dtype), (s_hi < 1).to(x.dtype))
            x_t, jac = x, torch.ones_like(x.detach())
            u = model.inject(x_t)
            z = model.deq.initial_state(u.detach())
            solve = self._round_solver(z)
            for _ in range(self.rounds):
                inputs.append(x_t.detach())
                read_jac, z_end = jac, solve(u, z)
                states.append(z_end)
                if graph is None:
                    z = z_end
                else:  # T_f plain steps with the graph, at the defence's own states (values exact)
                    z = straight_through(z_end, damped_steps(lambda state, u=u: cell(state, u), z, self.T_f))
                x_t, entropies, logits, jac = self._input_steps(z, x_t, bounds, jac, graph, steps)
                trace.append(entropies)
                round_logits.append(logits)
                u = model.inject(x_t)
            inputs.append(x_t.detach())
            if self.readout == "released":
                return PurificationTrace(
                    model.logits_from_state(z), inputs, states, round_logits, torch.stack(trace), read_jac, inputs[-2]
                )
            if self.readout == "converged":
                logits = model.logits_from_state(model.deq(u, z.detach()))
        return PurificationTrace(logits, inputs, states, round_logits, torch.stack(trace), jac, inputs[-1])

    def _round_solver(self, z0: Tensor):
        """``solve(u, z) -> z_end``: one round's T_f solver steps (``memory``: restarted or carried), no graph."""
        if self.memory == "restart":
            return lambda u, z: solver_iterate(self.model.deq, u, self.T_f, z.detach())
        stepper, cell = ContinuedBroyden(z0), self.model.deq.cell
        return lambda u, z: stepper.run(lambda state: cell(state, u.detach()), self.T_f)

    def _remember(self, tr: PurificationTrace) -> None:
        self.last_inputs, self.last_entropy, self.last_input_jacobian = tr.read_input, tr.entropy, tr.input_jacobian

    def defend(self, x: Tensor) -> Tensor:
        """The defended logits, without any gradient."""
        tr = self.trace(x)
        self._remember(tr)
        return tr.logits

    def forward(self, x: Tensor) -> Tensor:
        """Defended logits with the defence's own gradient (``gradient``, BPDA by default)."""
        return self.forward_with(x, self.gradient)

    def forward_with(self, x: Tensor, gradient: str) -> Tensor:
        """Defended logits (the same values whatever the gradient) with the named gradient, one of
        :data:`CALL_GRADIENTS` (see :mod:`~deqlib.defenses.entropy_gradients`)."""
        gradient = check_choice(gradient, "gradient", _WHERE, CALL_GRADIENTS)
        wanted = torch.is_grad_enabled() and x.requires_grad
        tr = self.trace(x, graph=gradient if wanted and gradient.startswith("loop") else None)
        self._remember(tr)
        if not wanted or gradient.startswith("loop"):
            return tr.logits
        if gradient == "none":
            return refuse_gradient(tr.logits, x)
        if gradient == "transfer":
            return straight_through(tr.logits, self.model(x))
        if gradient == "skip":  # the released AutoAttack's: one f at the last round's state, the original input
            z_read = tr.states[-1].detach()
            return straight_through(
                tr.logits, self.model.logits_from_state(self.model.deq.cell(z_read, self.model.inject(x)))
            )
        # BPDA: the undefended model at x_T, reached from x through the purification's diagonal Jacobian
        purified = tr.read_input + tr.input_jacobian * (x - x.detach())
        return straight_through(tr.logits, self.model(purified))

    def adaptive_attacks(
        self, eps: float, *, norm: str = "Linf", preset: str = "reduced", seed: int = 0
    ) -> Dict[str, Any]:
        """The four attacks this defence must be evaluated with (their per-sample worst case), by name:
        ``bpda``, ``transfer``, ``full_diff``, ``entropy_aware``, each APGD with restarts
        (:func:`deqlib.attacks.adaptive.entropy_adaptive_attacks`, which documents them and the presets)."""
        from ..attacks.adaptive import entropy_adaptive_attacks  # torchattacks only when asked for

        return entropy_adaptive_attacks(self, eps, norm=norm, preset=preset, seed=seed)
