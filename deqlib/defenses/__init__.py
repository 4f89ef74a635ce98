"""Defences of DEQ classifiers, by what they change: the cell, the readout, the input, or the depth.

Taught in chapters 6–7. Import as ``from deqlib import defenses`` (not exported from ``deqlib``).

API map:
    * :mod:`~deqlib.defenses.lyadeq` — LyaDEQ, the Lyapunov-stable DEQ (Chu et al. 2024, our reconstruction):
      :class:`LyapunovStableCell`, :class:`LyaDEQClassifier`, :func:`lyadeq_classifier`, :func:`orthogonal_linear`,
      :func:`orthogonal_head`; its measurements in :mod:`~deqlib.defenses.lyadeq_checks`:
      :func:`fixed_point_spread`, :func:`certificate_check`. The other readings of the paper (chapter 6):
      :mod:`~deqlib.defenses.horizon` (:class:`HorizonClassifier`, :class:`EulerCell`: R1 and R4),
      :mod:`~deqlib.defenses.one_shot` (:class:`OneShotLyapunovClassifier`: R3) and
      :mod:`~deqlib.defenses.lyadeq_losses` (:class:`AttractorRegulariser`, :class:`LyapunovDecreaseLoss`,
      :class:`LyapunovRegularisedDEQ`: R4's penalty and R5); what each changes, in
      :mod:`~deqlib.defenses.lyadeq_measures` (:func:`initial_state_stability`, :func:`input_state_sensitivity`,
      :func:`input_jacobian_norm`, :func:`without_lyapunov`, :func:`function_agreement`, :func:`state_read`, :func:`state_from`).
    * :mod:`~deqlib.defenses.readouts` — read out early solver iterates (Yang et al. 2022):
      :class:`EarlyStateClassifier`, :class:`AveragedStateClassifier`.
    * :mod:`~deqlib.defenses.entropy_reduction` — move the input to lower the entropy of the intermediate
      predictions (Yang et al. 2023, method 1): :class:`EntropyReductionDefense`; the adaptive attack through it is
      :class:`deqlib.attacks.adaptive.AdaptiveEntropyAttack`.
      The gradients it hands an attacker (BPDA by default, or a refusal) are in
      :mod:`~deqlib.defenses.entropy_gradients` (:data:`DEFENSE_GRADIENTS`); its four adaptive attacks are
      :meth:`EntropyReductionDefense.adaptive_attacks`; one run's record is a :class:`PurificationTrace`;
      :meth:`EntropyReductionDefense.as_released` runs it as the authors' code does (:data:`READOUTS`,
      :data:`MEMORIES`).
    * :mod:`~deqlib.defenses.random_depth` — read out at a random solver depth (Yang et al. 2023, method 2):
      :class:`RandomDepthClassifier`; :class:`RandomAtTest` (random when attacked, as released);
      :func:`select_eval_depth` (the early-exit depth chosen on held-out digits).

The per-state predictions these build on are in :mod:`deqlib.dynamics`; the training losses in :mod:`deqlib.losses`.
"""

from .entropy_gradients import DEFENSE_GRADIENTS
from .entropy_reduction import ATTACK_EPS, MEMORIES, READOUTS, EntropyReductionDefense, PurificationTrace
from .horizon import HORIZON_GRADS, STARTS, EulerCell, HorizonClassifier
from .lyadeq import LyaDEQClassifier, LyapunovStableCell, lyadeq_classifier, orthogonal_head, orthogonal_linear
from .lyadeq_checks import certificate_check, fixed_point_spread
from .lyadeq_losses import AttractorRegulariser, LyapunovDecreaseLoss, LyapunovRegularisedDEQ
from .lyadeq_measures import (
    function_agreement,
    initial_state_stability,
    input_jacobian_norm,
    input_state_sensitivity,
    state_from,
    state_read,
    without_lyapunov,
)
from .one_shot import OneShotLyapunovClassifier
from .random_depth import RandomAtTest, RandomDepthClassifier, select_eval_depth
from .readouts import READOUT_GRADS, AveragedStateClassifier, EarlyStateClassifier

__all__ = [
    "LyapunovStableCell",
    "LyaDEQClassifier",
    "lyadeq_classifier",
    "orthogonal_linear",
    "orthogonal_head",
    "fixed_point_spread",
    "certificate_check",
    "EulerCell",
    "HorizonClassifier",
    "STARTS",
    "HORIZON_GRADS",
    "OneShotLyapunovClassifier",
    "AttractorRegulariser",
    "LyapunovDecreaseLoss",
    "LyapunovRegularisedDEQ",
    "state_read",
    "state_from",
    "initial_state_stability",
    "input_state_sensitivity",
    "input_jacobian_norm",
    "without_lyapunov",
    "function_agreement",
    "READOUT_GRADS",
    "EarlyStateClassifier",
    "AveragedStateClassifier",
    "ATTACK_EPS",
    "EntropyReductionDefense",
    "PurificationTrace",
    "DEFENSE_GRADIENTS",
    "READOUTS",
    "MEMORIES",
    "RandomDepthClassifier",
    "RandomAtTest",
    "select_eval_depth",
]
