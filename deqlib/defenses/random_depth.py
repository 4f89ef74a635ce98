"""Random intermediate states (Yang, Li, Pang, Liu, ICML 2023, "method 2"): a DEQ classifier read out at a random depth.

API: :class:`RandomDepthClassifier` (and its :meth:`~RandomDepthClassifier.pinned_depth`, one depth for several calls),
:class:`RandomAtTest` (the model still random when attacked, as the authors' evaluation left it), and
:func:`select_eval_depth` (the early-exit depth chosen on held-out digits, not on the test digits).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from .._validate import check_deq_classifier, check_fraction, check_int
from ..dynamics import solver_iterate
from ..solvers import damped_steps

__all__ = ["RandomDepthClassifier", "RandomAtTest", "select_eval_depth"]


class RandomDepthClassifier(nn.Module):
    """A DEQ classifier read out at a random solver depth (Yang et al. 2023, "random intermediate states").

    Forward: u = model.inject(x); k = a depth (see below); z_k = the k-th iterate of the model's own solver
    from z_0 (:func:`deqlib.dynamics.solver_iterate`, no graph); z = ``phantom_steps`` damped steps
    z <- (1 - τ) z + τ f(z, u) from z_k (:func:`deqlib.solvers.damped_steps`, τ = ``phantom_tau``), WITH the graph
    (the phantom gradient from that state); logits = model.head(z). Gradients reach the parameters and the input x
    through the damped steps.

    The depth: in ``train()`` mode every call draws k uniformly from {1, ..., max_depth} (one k for the
    whole batch, as one forward pass in the paper); in ``eval()`` mode k = ``eval_depth``. The depth of the
    last call is in ``last_depth``. Our choice: z_k is the iterate of the model's configured solver (for an
    Anderson model, Anderson iterates; Yang et al. use Broyden iterates of their MDEQ), and evaluation runs the
    same function as training with a fixed k, so the phantom steps are part of the readout in both modes.

    Adversarial training with it: :class:`deqlib.losses.PGDAT` and :class:`~deqlib.losses.TRADES` call the model
    they are given, so ``fit(RandomDepthClassifier(model), data, loss_fn=PGDAT(...))`` crafts the inner attack on the
    random-depth model as well, each attack step with its own random depth (the wrapper is in ``train()`` mode
    during ``fit``; pass ``attack_mode="eval"`` to the loss to attack at ``eval_depth`` instead).

    Several calls at ONE depth: inside ``with model.pinned_depth():`` every call reads out at the same depth (drawn
    once on entry in ``train()`` mode, ``eval_depth`` in ``eval()`` mode, or the depth given). TRADES draws
    independent depths for its clean and adversarial logits by default (as the authors' code), so its KL is positive
    even at ε = 0; ``TRADES(..., shared_depth=True)`` evaluates both inside one ``pinned_depth()`` block.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier` (anything with ``inject``, ``deq`` and ``logits_from_state``).
        max_depth: T, the largest depth drawn (8 in the paper).
        eval_depth: depth in ``eval()`` mode (default T).
        phantom_steps: damped steps with the graph (5 in the paper).
        phantom_tau: damping τ of those steps (the paper's λ = 0.5).
        generator: a ``torch.Generator`` (CPU) for the depth draws; default the global RNG.

    Example:
        >>> import torch
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
        phantom_tau: float = 0.5,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        where = "RandomDepthClassifier"
        self.model = check_deq_classifier(model, where)
        self.max_depth = check_int(max_depth, "max_depth", where, minimum=1)
        self.eval_depth = (
            self.max_depth if eval_depth is None else check_int(eval_depth, "eval_depth", where, minimum=1)
        )
        self.phantom_steps = check_int(phantom_steps, "phantom_steps", where, minimum=1)
        self.phantom_tau = check_fraction(phantom_tau, "phantom_tau", where)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"{where}: generator must be a torch.Generator, got {type(generator).__name__}")
        self.generator = generator
        self.last_depth: Optional[int] = None
        self._pinned: Optional[int] = None

    def extra_repr(self) -> str:
        return (
            f"max_depth={self.max_depth}, eval_depth={self.eval_depth}, phantom_steps={self.phantom_steps}, "
            f"phantom_tau={self.phantom_tau:g}"
        )

    def draw_depth(self) -> int:
        """A depth uniform in {1, ..., max_depth}."""
        return int(torch.randint(1, self.max_depth + 1, (), generator=self.generator))

    @contextmanager
    def pinned_depth(self, depth: Optional[int] = None) -> Iterator[int]:
        """A block in which every call reads out at one depth; yields it.

        ``depth`` (an int >= 1), or by default the depth a call would use now: one draw in ``train()`` mode,
        ``eval_depth`` in ``eval()`` mode. Blocks nest; leaving one restores the depth (or the draws) before it.

        Example:
            >>> from deqlib import data
            >>> from deqlib.cells import classifier_for
            >>> model = RandomDepthClassifier(classifier_for(data.load("digits"), "mlp", width=16)).train()
            >>> x = torch.rand(2, 1, 8, 8)
            >>> with model.pinned_depth() as depth:
            ...     same = torch.equal(model(x), model(x)) and model.last_depth == depth
            >>> same
            True
        """
        if depth is None:
            depth = self.draw_depth() if self.training else self.eval_depth
        else:
            depth = check_int(depth, "depth", "RandomDepthClassifier.pinned_depth", minimum=1)
        outer, self._pinned = self._pinned, depth
        try:
            yield depth
        finally:
            self._pinned = outer

    def forward(self, x: Tensor) -> Tensor:
        if self._pinned is not None:
            depth = self._pinned
        else:
            depth = self.draw_depth() if self.training else self.eval_depth
        self.last_depth = depth
        u = self.model.inject(x)
        cell = self.model.deq.cell
        z = solver_iterate(self.model.deq, u, depth)
        z = damped_steps(lambda s: cell(s, u), z, self.phantom_steps, self.phantom_tau)
        return self.model.logits_from_state(z)


class RandomAtTest(nn.Module):
    """A :class:`RandomDepthClassifier` that draws a new depth on every call, in ``train()`` and ``eval()`` mode.

    The authors' released evaluation attacks the random-depth model while it is still random, without averaging
    over depths (no EOT): attacking this module reproduces that (chapter 7, E1). Judge the result on the fixed-depth
    model. Its parameters are the wrapped model's.
    """

    def __init__(self, model: RandomDepthClassifier) -> None:
        super().__init__()
        if not isinstance(model, RandomDepthClassifier):
            raise TypeError(f"RandomAtTest: model must be a RandomDepthClassifier, got {type(model).__name__}")
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        with self.model.pinned_depth(self.model.draw_depth()):
            return self.model(x)


def select_eval_depth(
    model: RandomDepthClassifier,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    depths: Optional[Sequence[int]] = None,
    steps: int = 10,
    seed: int = 0,
) -> Dict[str, Any]:
    """The evaluation depth with the highest PGD robust accuracy on (x, y); ties go to the higher clean accuracy,
    then to the smaller depth. Pass held-out digits, never the test digits the model is then evaluated on.

    Each depth d is judged as the fixed-depth model (``pinned_depth(d)``) under L∞ PGD with ``steps`` steps of
    eps / 4, a random start and the phantom gradient through its damped steps (the released code's attack budget).

    Args:
        model: the random-depth classifier (its ``eval_depth`` is not changed: set it from the result).
        x, y: held-out images in [0, 1] and labels.
        eps: the attack radius.
        depths: candidates (default 1, ..., max_depth).
        steps: PGD steps.
        seed: seed of the random starts.

    Returns:
        ``{"depth", "per_depth": {d: {"clean", "robust"}}, "eps", "steps", "n"}``.
    """
    from ..attacks import pgd, robust_accuracy  # attacks import defences: import here

    if not isinstance(model, RandomDepthClassifier):
        raise TypeError(f"select_eval_depth: model must be a RandomDepthClassifier, got {type(model).__name__}")
    candidates = list(range(1, model.max_depth + 1) if depths is None else depths)
    if not candidates:
        raise ValueError("select_eval_depth: no candidate depths")
    for d in candidates:
        check_int(d, "depth", "select_eval_depth", minimum=1)
    steps = check_int(steps, "steps", "select_eval_depth", minimum=1)
    was_training = model.training
    model.eval()
    per: Dict[int, Dict[str, float]] = {}
    try:
        for d in candidates:
            with model.pinned_depth(d):
                r = robust_accuracy(model, pgd(model, eps, alpha=eps / 4, steps=steps), (x, y), seed=seed)
            per[d] = {"clean": r["clean_accuracy"], "robust": r["accuracy"]}
    finally:
        model.train(was_training)
    best = max(candidates, key=lambda d: (per[d]["robust"], per[d]["clean"], -d))
    return {"depth": best, "per_depth": per, "eps": eps, "steps": steps, "n": int(x.shape[0])}
