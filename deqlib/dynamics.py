"""DEQs as neural dynamics: the solver's iterates z_0, z_1, ..., z_K as a trajectory, and what the head reads from them.

Taught in chapter 4. The iterates (z_0 = 0) are states of a dynamical system driven by the input
(Yang, Pang, Liu, NeurIPS 2022); the classifier's head can read out any of them. Everything here works per sample and
batch first, without a graph.

API:
    * :func:`state_predictions` — logits, probabilities, entropy and predicted class of every iterate.
    * :func:`solver_iterate` — the state after k iterations of a DEQ's own solver.
    * :func:`solver_trajectory` — z_0..z_K of the solver, padded when every sample stopped early.
    * :func:`head_on_states` — the head applied to a stack of states.
    * :func:`attacked_readouts` — attack the final state, then read every state of the clean and attacked input.

The statistics of these readouts (is the finding of Yang et al. (2023) reproduced?) are in
:mod:`deqlib.state_statistics`; measurements of stability (‖∂z*/∂x‖, residual decay, the fold along a segment) are in :mod:`deqlib.sensitivity`.

The defences built on these readouts (early / averaged readouts, input entropy reduction, random intermediate
states) live in :mod:`deqlib.defenses`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validate import check_deq_classifier, check_int, check_labels, check_labels_in_range, check_tensor
from .losses import entropy

__all__ = ["state_predictions", "solver_iterate", "solver_trajectory", "head_on_states", "attacked_readouts"]


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
        ``(N, *state)``, detached.
    """
    where = "solver_iterate"
    if not callable(getattr(deq, "solve", None)):
        raise TypeError(f"{where}: deq must be a DEQ layer with solve() (e.g. model.deq), got {type(deq).__name__}")
    check_tensor(u, "u", where, batch=True)
    check_int(steps, "steps", where, minimum=1)
    with torch.no_grad():
        _, info = deq.solve(u.detach(), z0, record=True, max_iter=steps)
    # The trajectory is shorter than steps + 1 only when every sample stopped early; its last entry is then the result.
    return info.trajectory[-1]


def solver_trajectory(model: nn.Module, u: Tensor, steps: int, **overrides: Any) -> Tuple[Tensor, Any]:
    """z_0..z_steps of a DEQ classifier's solver on injection u, ``(steps + 1, N, *state)``, and its info; no graph.

    A solver stops once every sample has converged; the missing entries then repeat the last one, as the
    trajectory already does for a sample that stopped earlier than the others.
    """
    where = "solver_trajectory"
    check_deq_classifier(model, where)
    check_tensor(u, "u", where, batch=True)
    steps = check_int(steps, "steps", where, minimum=1)
    with torch.no_grad():
        _, info = model.deq.solve(u.detach(), record=True, max_iter=steps, **overrides)
    traj = info.trajectory
    if traj.shape[0] < steps + 1:
        traj = torch.cat([traj, traj[-1:].expand(steps + 1 - traj.shape[0], *traj.shape[1:])])
    return traj, info


def head_on_states(model: nn.Module, states: Tensor) -> Tensor:
    """The head on ``(K, N, *state)`` states, as one batch: (K, N, C)."""
    check_deq_classifier(model, "head_on_states")
    check_tensor(states, "states", "head_on_states", floating=True, min_dim=3)
    k, n = states.shape[:2]
    return model.logits_from_state(states.reshape(k * n, *states.shape[2:])).reshape(k, n, -1)


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
        A dict with ``states`` ``(K+1, N, *state)``, ``logits`` (K+1, N, C), ``probs`` (K+1, N, C),
        ``entropy`` (K+1, N) in nats, ``predictions`` (K+1, N), ``info`` (the solver's
        :class:`~deqlib.solvers.SolverInfo`), and with ``y``: ``correct`` (K+1, N) bool and ``accuracy`` (K+1,).
    """
    where = "state_predictions"
    check_deq_classifier(model, where)
    x = check_tensor(x, "x", where, batch=True)
    steps = model.deq.max_iter if steps is None else check_int(steps, "steps", where, minimum=1)
    if y is not None:
        check_labels(y, x.shape[0], where)
    states, info = solver_trajectory(model, model.inject(x), steps, **solver_overrides)
    logits = head_on_states(model, states)
    if y is not None:
        check_labels_in_range(y, logits.shape[-1], where)
    out: Dict[str, Any] = {
        "states": states,
        "logits": logits,
        "probs": F.softmax(logits, dim=-1),
        "entropy": entropy(logits),
        "predictions": logits.argmax(dim=-1),
        "info": info,
    }
    if y is not None:
        out["correct"] = out["predictions"] == y.to(out["predictions"].device)
        out["accuracy"] = out["correct"].float().mean(dim=1)
    return out


def attacked_readouts(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    attack: str = "pgd",
    gradient: Optional[str] = "ift",
    k_max: Optional[int] = None,
    seed: int = 0,
    **attack_params: Any,
) -> Dict[str, Any]:
    """Attack the model as deployed (its final state), then read the head at every state of x and of x'.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        x, y: images in [0, 1] and labels.
        eps: the L-infinity radius (0: no attack, x' = x).
        attack: a name of :func:`deqlib.attacks.make_attack` (e.g. "pgd", "apgd_ce", "fgsm").
        gradient: the DEQ gradient the attacker follows ("ift", "phantom", "unroll"; see
            :func:`~deqlib.attacks.attack_gradient`).
        k_max: the states read are z_0..z_K with K = ``k_max`` (default the model's ``deq.max_iter``).
        seed: seeds torch's generator before the attack (random starts).
        **attack_params: passed to the attack (e.g. ``steps=20`` of PGD).

    Returns:
        ``x_adv``, ``y`` and the :func:`state_predictions` results ``clean`` and ``adversarial`` (with ``y``).
    """
    from .attacks import make_attack  # here: deqlib.attacks imports the defences, which import this module
    from .threat import check_eps

    where = "attacked_readouts"
    check_deq_classifier(model, where)
    eps = check_eps(eps, "Linf", where)
    clean = state_predictions(model, x, k_max, y=y)
    if eps == 0:
        x_adv = x.detach().clone()
    else:
        torch.manual_seed(seed)
        x_adv = make_attack(attack, model, eps, gradient=gradient, **attack_params)(x, y).detach()
    return {"x_adv": x_adv, "y": y, "clean": clean, "adversarial": state_predictions(model, x_adv, k_max, y=y)}
