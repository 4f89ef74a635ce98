"""The explicit baseline: a deep, weight-untied network of about a DEQ's parameter count (chapter 8).

Both papers claim their DEQs beat explicit networks of similar size. :class:`ExplicitClassifier` is the DEQ
classifier of :func:`deqlib.cells.mlp_classifier` unrolled: the same normalisation, injection u, cell form
``z_k = tanh(W_k z_(k-1) + u)`` and head, but ``depth`` layers each with its own ``W_k``, run once each from
``z_0 = tanh(u)`` (the DEQ's first step from z = 0, which no weight matrix could act on: starting the layers at 0
would leave the first ``W`` without any effect or gradient); no solver, no fixed point. :func:`matched_width` picks the width at which it has about as
many parameters as the DEQ, so the comparison is between an implicit and an explicit network of the same size.

Example:
    >>> from deqlib import cells, data
    >>> ds = data.load("digits", "train")
    >>> width = matched_width(ds, deq_width=64, depth=4)
    >>> model = explicit_classifier_for(ds, depth=4, width=width)
    >>> deq = cells.classifier_for(ds, "mlp", width=64)
    >>> abs(n_parameters(model) - n_parameters(deq)) / n_parameters(deq) < 0.02
    True
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from torch import Tensor, nn

from . import cells
from ._validate import check_dataset_like, check_image_shape, check_images, check_int, check_matches, check_tensor

__all__ = ["ExplicitClassifier", "explicit_classifier_for", "matched_width", "n_parameters"]


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
        check_tensor(x, "x (float images in [0, 1])", "ExplicitClassifier", floating=True)
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape or x.shape[0] == 0:
            raise ValueError(
                f"ExplicitClassifier: expected images of shape (N, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        check_matches(x, next(p for p in self.parameters() if p.is_floating_point()), "ExplicitClassifier", "x")
        check_images(x.detach(), "ExplicitClassifier")

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


def explicit_classifier_for(
    dataset: Any, *, depth: int, width: int, activation: str = "tanh", weight_scale: float = 0.5
) -> ExplicitClassifier:
    """An :class:`ExplicitClassifier` of ``depth`` untied :class:`~deqlib.cells.MLPCell` layers of ``width``,
    matched to a data set (shape, classes, normalisation); each layer initialised as the DEQ's cell is."""
    check_dataset_like(dataset, "explicit_classifier_for")
    depth = check_int(depth, "depth", "explicit_classifier_for", minimum=1)
    width = check_int(width, "width", "explicit_classifier_for", minimum=1)
    d_in = int(math.prod(dataset.image_shape))
    layers = [cells.MLPCell(width, activation=activation, weight_scale=weight_scale) for _ in range(depth)]
    return ExplicitClassifier(
        nn.Sequential(nn.Flatten(), nn.Linear(d_in, width)),
        cells.ACTIVATIONS[activation](),
        layers,
        nn.Linear(width, int(dataset.num_classes)),
        image_shape=dataset.image_shape,
        mean=dataset.mean,
        std=dataset.std,
    )


def n_parameters(model: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _explicit_count(d_in: int, classes: int, depth: int, width: int) -> int:
    return d_in * width + width + depth * width * width + width * classes + classes


def matched_width(dataset: Any, *, deq_width: int, depth: int) -> int:
    """The width at which a ``depth``-layer :func:`explicit_classifier_for` network has the parameter count
    nearest to the MLP DEQ classifier of ``deq_width`` on ``dataset`` (one cell matrix, injection, head)."""
    check_dataset_like(dataset, "matched_width")
    depth = check_int(depth, "depth", "matched_width", minimum=1)
    d_in, classes = int(math.prod(dataset.image_shape)), int(dataset.num_classes)
    target = _explicit_count(d_in, classes, 1, check_int(deq_width, "deq_width", "matched_width", minimum=1))
    return min(range(1, 4 * deq_width + 1), key=lambda w: abs(_explicit_count(d_in, classes, depth, w) - target))
