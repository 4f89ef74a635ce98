"""The gradients the input-entropy-reduction defence can hand an attacker, and the refusal to hand any.

The defence (:class:`~deqlib.defenses.EntropyReductionDefense`) returns its own logits VALUES whatever the gradient;
the gradient is chosen by name (:data:`DEFENSE_GRADIENTS` for the defence's own setting, :data:`CALL_GRADIENTS` for
one call of ``forward_with``):

* ``"bpda"`` — BPDA (Athalye et al. 2018): the gradient of the undefended model at the PURIFIED point x_T, chained
  with the Jacobian of the purification x -> x_T. That Jacobian is diagonal and exact almost everywhere: sign(∇H) is
  piecewise constant, so each input step x_{t+1} = Π(x_t − η·sign(g_t)) moves a pixel with the identity, except
  where the projection clips it; a pixel held by the [0, 1] box does not move with x (derivative 0), a pixel held by
  the ε-ball's face x ± ε moves with x (derivative 1). The defence records it as ``last_input_jacobian``.
* ``"loop"`` — the whole loop differentiated where it is differentiable: the T_f solver steps of each round as T_f
  plain steps z <- f(z, u_t) at the defence's own states (exact for a fixed-point solver), the input steps through
  their projections (sign' = 0), chained across rounds. For a fixed-point model this is the exact gradient of the
  defended logits almost everywhere (the tests compare it with finite differences).
* ``"loop_smooth"`` — as ``"loop"``, and also through the signed steps' dependence on the input: each sign(g) keeps
  its value but back-propagates as tanh(g / τ) with τ the sample's mean |g|, so the gradient follows how the
  purification's direction changes with the input (second order: every input step is differentiated, with the
  graph of its own gradient ∇_x H kept — see :func:`smooth_sign` for the cost).
* ``"transfer"`` (``forward_with`` only, never the defence's setting) — the undefended model's gradient at the given
  input: a transfer attack. It is one of the four adaptive attacks, and must be asked for by name.
* ``"skip"`` (``forward_with`` only) — the gradient the authors' released AutoAttack evaluation sees: one cell
  evaluation at the last round's solver state z_R (the state the "released" readout reads), with the ORIGINAL
  input's injection, head(f(z_R, u(x))) with z_R detached; the 40 input steps and the solver are skipped. A weak gradient by construction, named so that the
  chapter can show what it reports (E1 of chapter 7).
* ``"none"`` — refuse: differentiating the logits raises :class:`RuntimeError` naming the adaptive attacks.

API: :data:`DEFENSE_GRADIENTS`, :data:`CALL_GRADIENTS`, :func:`smooth_sign`, :func:`refuse_gradient`,
:data:`REFUSAL`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["DEFENSE_GRADIENTS", "CALL_GRADIENTS", "REFUSAL", "smooth_sign", "refuse_gradient"]

#: The gradients a defence can be built with (its ``forward``); "bpda" is the default.
DEFENSE_GRADIENTS = ("bpda", "loop", "loop_smooth", "none")
#: The gradients of one call of ``forward_with``: the defence's, plus the undefended model's ("transfer") and the
#: released evaluation's ("skip").
CALL_GRADIENTS = ("bpda", "loop", "loop_smooth", "transfer", "skip", "none")

#: What a refusing defence says when it is differentiated.
REFUSAL = (
    "EntropyReductionDefense: this defence was built with gradient='none' and refuses to be differentiated: its "
    "signed input steps have no useful gradient, and an attack handed another model's gradient would silently "
    "become a transfer attack. Evaluate it with its adaptive attacks, defense.adaptive_attacks(eps) -> 'bpda', "
    "'transfer', 'full_diff', 'entropy_aware' (the per-sample worst case over them; deqlib.evaluate's battery runs "
    "them), or build it with gradient='bpda'."
)


def smooth_sign(g: Tensor) -> Tensor:
    """sign(g) in the forward pass; in the backward, the derivative of tanh(g / τ), τ = the sample's mean |g|.

    τ is detached and per sample, so the surrogate does not depend on the scale of the gradient. Differentiating
    through it needs g's own graph (``create_graph=True``) and a double backward: on the digits MLP DEQ at the
    paper's settings, 2.6 times the saved tensors and 2.3 times the time of the first-order ``"loop"`` gradient.
    """
    tau = g.detach().abs().flatten(1).mean(1).clamp_min(torch.finfo(g.dtype).tiny)
    smooth = torch.tanh(g / tau.view(-1, *([1] * (g.dim() - 1))))
    return g.sign().detach() + (smooth - smooth.detach())


class _Refuse(torch.autograd.Function):
    """The identity on ``value``, attached to ``x``; its backward raises."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Any:  # type: ignore[override]
        raise RuntimeError(REFUSAL)


def refuse_gradient(value: Tensor, x: Tensor) -> Tensor:
    """``value`` (detached logits) attached to ``x`` so that back-propagating into ``x`` raises :data:`REFUSAL`."""
    return _Refuse.apply(value.detach(), x)
