"""deqlib's torchattacks subclasses and the checks every attack call of deqlib runs.

API map:

* :class:`CallChecks` — a mixin for any ``torchattacks.Attack``: :meth:`~CallChecks.start_call` checks the inputs of
  a call ([0, 1] images (N, ...), integer labels (N,)), and the FIRST logits of the call (``get_logits``, or
  :meth:`~CallChecks.check_logits_once` for an attack that computes them itself) are checked before any gradient:
  shape (N, num_classes), labels in [0, num_classes), and ``num_classes`` equal to the attack's ``n_classes`` for
  the attacks built for a number of classes (APGD-T, FAB-T, AutoAttack). A raw ``IndexError: Target 10 is out of
  bounds`` from inside torchattacks, or an APGD-T that silently targets the wrong classes, become one clear error.
* the guarded torchattacks subclasses (:class:`FGSMAttack`, :class:`PGDAttack`, ...) that
  :func:`deqlib.attacks.builder.build_attack` builds: besides the checks, their ``forward`` refuses an L2 radius
  beyond the diameter of the image cube, returns the clean images when eps = 0, runs under
  :func:`~deqlib.attacks.attack_gradient` when a ``gradient=`` was asked for, and projects the result onto the
  eps-ball ∩ [0, 1] (for the projected-gradient attacks this only removes floating-point drift; for CW, a
  minimum-norm attack, it makes the attack respect the threat model); and they run inside
  :func:`deqlib.warm_start.warm_starts`, so that every DEQ solve of the attack starts from the equilibrium of the
  previous query (``warm_starts(model, enabled=False)`` around the attack turns this off);
* :class:`AutoAttackComposite` — ``torchattacks.MultiAttack`` with the call checks (its members have their own),
  and one warm-start pool shared by all its members.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torchattacks
from torch import Tensor

from .._validate import check_class_labels, check_images, check_labels_in_range, check_logits
from ..threat import check_l2_scale, project
from ..warm_start import warm_starts
from .gradient import attack_gradient
from .registry import attack_name

__all__ = [
    "CallChecks",
    "FGSMAttack",
    "PGDAttack",
    "PGDL2Attack",
    "CWAttack",
    "APGDAttack",
    "APGDTAttack",
    "FABAttack",
    "SquareAttack",
    "AutoAttackComposite",
]


class CallChecks:
    """Mixin for a ``torchattacks.Attack``: checks of each call's inputs and of the first logits it computes."""

    _deqlib_pending: Optional[Tensor] = None

    def start_call(self, images: Any, labels: Any) -> Tuple[Tensor, Tensor]:
        """The call's images ([0, 1], (N, ...)) and labels (int64, (N,)); the next logits are checked against them."""
        where = attack_name(self)  # type: ignore[arg-type]
        images = check_images(images, where, "images")
        labels = check_class_labels(labels, images.shape[0], where, "labels")
        self._deqlib_pending = labels
        return images, labels

    def end_call(self) -> None:
        """Forget the labels of the call (an eps = 0 call computes no logits)."""
        self._deqlib_pending = None

    def check_logits_once(self, logits: Tensor, n: int) -> Tensor:
        """The first logits of a call: shape (n, C), the attack's ``n_classes`` equal to C, the labels in [0, C)."""
        labels, self._deqlib_pending = self._deqlib_pending, None
        if labels is None:
            return logits
        where = attack_name(self)  # type: ignore[arg-type]
        check_logits(logits, n, where)
        classes = logits.shape[1]
        wanted = (getattr(self, "_deqlib_params", None) or {}).get("n_classes")
        if wanted is not None and wanted != classes:
            raise ValueError(
                f"{where}: n_classes = {wanted} but the model returns {classes} logits; build the attack with "
                f"n_classes={classes} (it chooses the target classes from them)"
            )
        check_labels_in_range(labels, classes, where, "labels")
        return logits

    def get_logits(self, inputs: Tensor, labels: Optional[Tensor] = None, *args: Any, **kwargs: Any) -> Tensor:
        logits = super().get_logits(inputs, labels, *args, **kwargs)  # type: ignore[misc]
        return self.check_logits_once(logits, inputs.shape[0])


class _Guarded(CallChecks):
    """Mixin for deqlib's torchattacks subclasses: call checks, L2 scale, eps = 0 short cut, gradient switch, final
    projection. It reads ``eps``, ``norm`` and ``gradient``, which the builder's ``_patch`` sets on every attack."""

    def forward(self, images: Tensor, labels: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        images, labels = self.start_call(images, labels)
        try:
            images = images.clone().detach().to(self.device)
            labels = labels.clone().detach().to(self.device)
            if self.norm == "L2":
                check_l2_scale(self.eps, images, self._deqlib_name)
            if self.eps == 0:
                return images
            with attack_gradient(self.model, self.gradient), warm_starts(self.model):
                adv = super().forward(images, labels, *args, **kwargs)  # type: ignore[misc]
            return project(adv.detach(), images, self.eps, self.norm)
        finally:
            self.end_call()


class FGSMAttack(_Guarded, torchattacks.FGSM):
    """torchattacks.FGSM with deqlib's guards (see the module docstring)."""


class PGDAttack(_Guarded, torchattacks.PGD):
    """torchattacks.PGD (L-infinity) with deqlib's guards."""


class PGDL2Attack(_Guarded, torchattacks.PGDL2):
    """torchattacks.PGDL2 with deqlib's guards."""


class CWAttack(_Guarded, torchattacks.CW):
    """torchattacks.CW (L2, minimum norm) whose result is projected onto the L2 eps-ball."""


class APGDAttack(_Guarded, torchattacks.APGD):
    """torchattacks.APGD with deqlib's guards."""


class APGDTAttack(_Guarded, torchattacks.APGDT):
    """torchattacks.APGDT (targeted DLR loss over several target classes) with deqlib's guards."""


class FABAttack(_Guarded, torchattacks.FAB):
    """torchattacks.FAB with deqlib's guards."""


class SquareAttack(_Guarded, torchattacks.Square):
    """torchattacks.Square (black-box, score-based) with deqlib's guards."""


class AutoAttackComposite(CallChecks, torchattacks.MultiAttack):
    """torchattacks.MultiAttack with the call checks: its first logits (after the first member ran) are checked
    against its ``n_classes``, whichever members run."""

    def forward(self, images: Tensor, labels: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        images, labels = self.start_call(images, labels)
        try:
            with warm_starts(self.model):  # one pool for all members: each starts where the previous one ended
                return super().forward(images, labels, *args, **kwargs)
        finally:
            self.end_call()
