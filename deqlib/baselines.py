"""The explicit baseline: a deep, weight-untied network of about a DEQ's parameter count (chapter 8).

Both papers claim their DEQs beat explicit networks of similar size. :class:`ExplicitClassifier` is a DEQ
classifier of :mod:`deqlib.cells` unrolled: the same normalisation, injection u, cell form (for the MLP cell
``z_k = tanh(W_k z_(k-1) + u)``) and head, but ``depth`` layers each with its own weights, run once each from
``z_0 = f(0, u)``, the DEQ's first step from z = 0 (starting the layers at 0 would leave the first layer's weights
without any effect or gradient); no solver, no fixed point. :func:`matched_size` picks the width (MLP) or the
channels (conv) at which it has about as many parameters as the DEQ, so the comparison is between an implicit and an
explicit network of the same size.

Example:
    >>> from deqlib import cells, data
    >>> ds = data.load("digits", "train")
    >>> width = matched_size(ds, "mlp", deq_size=64, depth=4)
    >>> model = explicit_classifier_for(ds, "mlp", depth=4, width=width)
    >>> deq = cells.classifier_for(ds, "mlp", width=64)
    >>> abs(n_parameters(model) - n_parameters(deq)) / n_parameters(deq) < 0.02
    True
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, Sequence

from torch import Tensor, nn

from . import cells
from ._validate import check_choice, check_dataset_like, check_image_shape, check_int

__all__ = ["ExplicitClassifier", "explicit_classifier_for", "matched_size", "n_parameters"]


class ExplicitClassifier(nn.Module):
    """[0, 1] images (N, C, H, W) -> normalise -> injection u -> z_0 = start(u) -> ``depth`` untied cells -> head.

    Args:
        injection: maps normalised images to u (N, width).
        start: maps u to the first state z_0 (the cells' activation: the DEQ's first step from z = 0).
        layers: the cells, each called as ``layer(z, u)`` (e.g. :class:`~deqlib.cells.MLPCell`), in order.
        head: maps the last state to logits.
        image_shape: (C, H, W) of the inputs, checked at each call.
        mean, std: per-channel normalisation statistics (inside the model).
    """

    def __init__(
        self,
        injection: nn.Module,
        start: nn.Module,
        layers: Sequence[nn.Module],
        head: nn.Module,
        *,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape, "ExplicitClassifier")
        if len(layers) == 0:
            raise ValueError("ExplicitClassifier: give at least one layer")
        self.normalize = cells.Normalize(mean, std)
        self.injection, self.start, self.layers, self.head = injection, start, nn.ModuleList(layers), head

    @property
    def depth(self) -> int:
        """The number of untied layers."""
        return len(self.layers)

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error unless x is a finite float batch of [0, 1] images of the expected shape, in the
        model's dtype and on its device."""
        reference = next(p for p in self.parameters() if p.is_floating_point())
        cells.check_image_batch(x, self.image_shape, reference, "ExplicitClassifier")

    def states(self, x: Tensor) -> list:
        """The states z_1 .. z_depth of images x."""
        self.check_input(x)
        u = self.injection(self.normalize(x))
        z, out = self.start(u), []
        for layer in self.layers:
            z = layer(z, u)
            out.append(z)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.states(x)[-1])


def explicit_classifier_for(dataset: Any, kind: str = "mlp", *, depth: int, **options: Any) -> ExplicitClassifier:
    """An :class:`ExplicitClassifier` matched to a data set: the DEQ classifier of ``kind`` that
    :func:`deqlib.cells.classifier_for` builds with ``options`` (``width`` for "mlp", ``channels`` for "conv", and
    their cell options), its injection, cell and head kept, and ``depth - 1`` more cells of the same form.

    The first state is the DEQ's first step from z = 0: ``tanh(u)`` for the MLP cell, ``GroupNorm(relu(u))`` for the
    conv cell (with its own normalisation parameters).

    Raises:
        ValueError: ``depth`` < 1, an unknown ``kind``, or the DEQ builder's own errors (``options``).
    """
    check_dataset_like(dataset, "explicit_classifier_for")
    depth = check_int(depth, "depth", "explicit_classifier_for", minimum=1)
    kind = check_choice(kind, "kind", "explicit_classifier_for", ("mlp", "conv"))
    deq = cells.classifier_for(dataset, kind, **options)
    cell = deq.deq.cell
    if kind == "mlp":
        start: nn.Module = copy.deepcopy(cell.act)
        more = [cells.MLPCell(cell.width, **_mlp_cell_options(options)) for _ in range(depth - 1)]
    else:
        start = nn.Sequential(nn.ReLU(), copy.deepcopy(cell.norm))
        more = [cells.ConvCell(cell.channels, **_conv_cell_options(options)) for _ in range(depth - 1)]
    return ExplicitClassifier(
        deq.injection,
        start,
        [cell] + more,
        deq.head,
        image_shape=dataset.image_shape,
        mean=dataset.mean,
        std=dataset.std,
    )


def _mlp_cell_options(options: Dict[str, Any]) -> Dict[str, Any]:
    return {k: options[k] for k in ("activation", "norm", "spectral_norm", "weight_scale") if k in options}


def _conv_cell_options(options: Dict[str, Any]) -> Dict[str, Any]:
    return {k: options[k] for k in ("groups", "weight_scale") if k in options}


def n_parameters(model: nn.Module) -> int:
    """The number of parameters, trainable or frozen (a model's size: a one-shot LyaDEQ's frozen DEQ counts)."""
    return sum(p.numel() for p in model.parameters())


def matched_size(dataset: Any, kind: str, *, deq_size: int, depth: int, **options: Any) -> int:
    """The width ("mlp") or channel count ("conv", a multiple of the GroupNorm groups) at which a ``depth``-layer
    :func:`explicit_classifier_for` network has the parameter count nearest to the DEQ classifier of ``deq_size``
    (built with the same ``options``)."""
    check_dataset_like(dataset, "matched_size")
    kind = check_choice(kind, "kind", "matched_size", ("mlp", "conv"))
    deq_size = check_int(deq_size, "deq_size", "matched_size", minimum=1)
    key = "width" if kind == "mlp" else "channels"
    target = n_parameters(cells.classifier_for(dataset, kind, **{key: deq_size}, **options))
    step = 1 if kind == "mlp" else int(options.get("groups", 8))
    sizes = range(step, 2 * deq_size + step, step)
    if kind == "mlp":  # a closed form: injection, depth cell matrices, head (the tests check it against real models)
        d_in, c = int(math.prod(dataset.image_shape)), int(dataset.num_classes)
        count = {w: d_in * w + w + depth * w * w + w * c + c for w in sizes}
    else:
        count = {
            ch: n_parameters(explicit_classifier_for(dataset, kind, depth=depth, channels=ch, **options))
            for ch in sizes
        }
    return min(sizes, key=lambda size: abs(count[size] - target))
