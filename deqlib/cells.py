"""DEQ cells, input injections, heads, and the DEQ classifier for [0, 1] images.

A cell computes the next state from (z, u), where u is the input injection computed once per input.
No BatchNorm inside a cell: it would make a sample's equilibrium depend on the rest of the batch.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ._validate import (
    check_bool,
    check_choice,
    check_dataset_like,
    check_image_shape,
    check_images,
    check_int,
    check_matches,
    check_nonnegative,
    check_number,
    check_tensor,
)
from .deq import DEQ

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "softplus": nn.Softplus}


def _activation(name: str) -> nn.Module:
    return ACTIVATIONS[check_choice(name, "activation", "cell", tuple(ACTIVATIONS))]()


class MLPCell(nn.Module):
    """f(z, u) = norm(act(W z + u)) on flat states (N, width).

    With tanh and no norm (the defaults), ||df/dz|| <= ||W||_2, so the cell starts as a contraction.

    Args:
        width: state size (u must have the same size).
        activation: "relu", "tanh", "gelu" or "softplus".
        norm: apply LayerNorm (per sample) after the activation. Off by default: LayerNorm divides by the
            state's spread and easily makes f expansive (the solver then stops converging).
        spectral_norm: constrain ||W||_2 <= 1 with a spectral-norm parametrisation.
        weight_scale: W is initialised orthogonal times this scale (< 1 starts contractive).
    """

    def __init__(
        self,
        width: int,
        *,
        activation: str = "tanh",
        norm: bool = False,
        spectral_norm: bool = False,
        weight_scale: float = 0.5,
    ) -> None:
        super().__init__()
        where = "MLPCell"
        width = self.width = check_int(width, "width", where, minimum=1)
        weight_scale = check_nonnegative(weight_scale, "weight_scale", where)
        norm, spectral_norm = check_bool(norm, "norm", where), check_bool(spectral_norm, "spectral_norm", where)
        self.linear = nn.Linear(width, width, bias=False)
        nn.init.orthogonal_(self.linear.weight, gain=weight_scale)
        if spectral_norm:
            self.linear = _spectral_norm(self.linear)
        self.act = _activation(activation)
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        return self.norm(self.act(self.linear(z) + u))

    def state_shape(self, u: Tensor) -> Tuple[int, ...]:
        if u.dim() != 2 or u.shape[1] != self.width:
            raise ValueError(f"MLPCell: expected an injection of shape (N, {self.width}), got {tuple(u.shape)}")
        return tuple(u.shape)


def _groups(channels: int, groups: int) -> int:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class ConvCell(nn.Module):
    """A conv cell on (N, C, H, W) states with GroupNorm (per sample) only on the output:

    f(z, u) = GN(relu(u + conv2(relu(conv1(z))))).

    The state path has no normalisation before the output (a GroupNorm of conv1(z) divides by its small std and
    makes f expansive), so with small conv weights f is a contraction; the output GroupNorm keeps states bounded.

    Args:
        channels: state channels (u must have the same shape as the state).
        hidden: channels of the inner convolution (default 2 * channels).
        groups: GroupNorm groups.
        weight_scale: std of the conv weights' normal initialisation (small starts contractive).
    """

    def __init__(
        self, channels: int, *, hidden: Optional[int] = None, groups: int = 8, weight_scale: float = 0.01
    ) -> None:
        super().__init__()
        where = "ConvCell"
        channels = check_int(channels, "channels", where, minimum=1)
        hidden = 2 * channels if hidden is None else check_int(hidden, "hidden", where, minimum=1)
        groups = check_int(groups, "groups", where, minimum=1)
        weight_scale = check_nonnegative(weight_scale, "weight_scale", where)
        self.channels = channels
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, 0.0, weight_scale)

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        return self.norm(torch.relu(u + self.conv2(torch.relu(self.conv1(z)))))

    def state_shape(self, u: Tensor) -> Tuple[int, ...]:
        if u.dim() != 4 or u.shape[1] != self.channels:
            raise ValueError(
                f"ConvCell: expected an injection of shape (N, {self.channels}, H, W), got {tuple(u.shape)}"
            )
        return tuple(u.shape)


def _numbers(values: Any, name: str, where: str) -> Tuple[float, ...]:
    """A non-empty sequence of finite numbers (per-channel statistics)."""
    if isinstance(values, Tensor):
        values = values.detach().reshape(-1).tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise TypeError(f"{where}: {name} must be a non-empty sequence of numbers (one per channel), got {values!r}")
    return tuple(check_number(v, f"{name}[{i}]", where) for i, v in enumerate(values))


class Normalize(nn.Module):
    """(x - mean) / std per channel, so that models take [0, 1] images (what attack libraries expect)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean, std = _numbers(mean, "mean", "Normalize"), _numbers(std, "std", "Normalize")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"Normalize: need as many means as stds and positive stds, got {mean}, {std}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def check_image_batch(x: Tensor, image_shape: Tuple[int, ...], reference: Tensor, where: str) -> None:
    """Raise a clear error unless ``x`` is a finite float batch of [0, 1] images of shape (N, C, H, W), (C, H, W)
    being ``image_shape``, with the dtype and device of ``reference`` (a model's parameter); ``where`` names the
    model in the message."""
    check_tensor(x, "x (float images in [0, 1])", where, floating=True)
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(image_shape) or x.shape[0] == 0:
        raise ValueError(
            f"{where}: expected images of shape (N, {', '.join(map(str, image_shape))}), got {tuple(x.shape)}"
        )
    check_matches(x, reference, where, "x")
    check_images(x.detach(), where)


class DEQClassifier(nn.Module):
    """[0, 1] images (N, C, H, W) -> normalise -> injection -> DEQ -> head -> logits (N, num_classes).

    Args:
        injection: maps normalised images to the injection u (the DEQ's input).
        cell: the DEQ cell, called as cell(z, u).
        head: maps the equilibrium state (or any state) to logits.
        image_shape: (C, H, W) of the inputs, checked at each call.
        mean, std: per-channel normalisation statistics (inside the model).
        **deq_options: passed to :class:`~deqlib.deq.DEQ` (solver, grad, max_iter, tol, ...).

    Inputs must have the model's dtype and device: a float64 or float16 batch given to a float32 model raises a
    ``TypeError`` naming both dtypes. It is not converted silently (a float64 batch would lose its precision, a
    float16 one would be computed at another precision than the caller asked for): convert the batch
    (``x.float()``), or the model (``model.double()``).
    """

    def __init__(
        self,
        injection: nn.Module,
        cell: nn.Module,
        head: nn.Module,
        *,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        **deq_options: Any,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape, "DEQClassifier")
        mean, std = _numbers(mean, "mean", "DEQClassifier"), _numbers(std, "std", "DEQClassifier")
        if len(mean) != self.image_shape[0] or len(std) != self.image_shape[0]:
            raise ValueError(
                f"DEQClassifier: mean and std need {self.image_shape[0]} value(s) (one per channel of image_shape "
                f"{self.image_shape}), got {len(mean)} and {len(std)}"
            )
        self.normalize = Normalize(mean, std)
        self.injection = injection
        self.deq = DEQ(cell, **deq_options)
        self.head = head

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error unless x is a finite float batch of [0, 1] images of the expected shape, in the model's
        dtype and on its device (a float64 or float16 batch is refused, not converted: convert it, or the model)."""
        check_image_batch(x, self.image_shape, self._reference_tensor(), "DEQClassifier")

    def _reference_tensor(self) -> Tensor:
        """A floating-point parameter (the dtype the model computes in), else the normalisation buffer."""
        for p in self.parameters():
            if p.is_floating_point():
                return p
        return self.normalize.mean

    def inject(self, x: Tensor) -> Tensor:
        """The DEQ's input u for images x."""
        self.check_input(x)
        return self.injection(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.deq(self.inject(x)))

    def logits_from_state(self, z: Tensor) -> Tensor:
        """Apply the head to any state (e.g. an intermediate solver iterate)."""
        return self.head(z)

    def solve(self, x: Tensor, **kwargs: Any):
        """``(z*, info)`` without gradients; ``info.trajectory`` holds the states (see :meth:`deqlib.deq.DEQ.solve`)."""
        with torch.no_grad():
            return self.deq.solve(self.inject(x), **kwargs)


def mlp_classifier(
    image_shape: Sequence[int],
    num_classes: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    width: int = 256,
    activation: str = "tanh",
    norm: bool = False,
    spectral_norm: bool = False,
    weight_scale: float = 0.5,
    **deq_options: Any,
) -> DEQClassifier:
    """A DEQ classifier with an :class:`MLPCell` on flattened images (8x8 digits, 28x28 MNIST, ...).

    Example:
        >>> model = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=64)
        >>> model(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    where = "mlp_classifier"
    image_shape = check_image_shape(image_shape, where)
    num_classes = check_int(num_classes, "num_classes", where, minimum=2)
    width = check_int(width, "width", where, minimum=1)
    d_in = int(math.prod(image_shape))
    injection = nn.Sequential(nn.Flatten(), nn.Linear(d_in, width))
    cell = MLPCell(width, activation=activation, norm=norm, spectral_norm=spectral_norm, weight_scale=weight_scale)
    head = nn.Linear(width, num_classes)
    return DEQClassifier(injection, cell, head, image_shape=image_shape, mean=mean, std=std, **deq_options)


def conv_classifier(
    image_shape: Sequence[int],
    num_classes: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    channels: int = 32,
    downsample: int = 2,
    groups: int = 8,
    weight_scale: float = 0.01,
    **deq_options: Any,
) -> DEQClassifier:
    """A DEQ classifier with a :class:`ConvCell` (28x28 and 32x32 images).

    The injection is a conv stem with ``downsample`` stride-2 stages (28 -> 14 -> 7, 32 -> 16 -> 8) so the
    equilibrium is solved on a small feature map; the head pools to 2x2 and applies a linear layer.
    """
    where = "conv_classifier"
    image_shape = check_image_shape(image_shape, where)
    num_classes = check_int(num_classes, "num_classes", where, minimum=2)
    channels = check_int(channels, "channels", where, minimum=1)
    downsample = check_int(downsample, "downsample", where, minimum=0)
    groups = check_int(groups, "groups", where, minimum=1)
    c_in = image_shape[0]
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, channels, 3, padding=1),
        nn.GroupNorm(_groups(channels, groups), channels),
        nn.ReLU(),
    ]
    for _ in range(downsample):
        layers += [
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.GroupNorm(_groups(channels, groups), channels),
            nn.ReLU(),
        ]
    layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(_groups(channels, groups), channels)]
    injection = nn.Sequential(*layers)
    cell = ConvCell(channels, groups=groups, weight_scale=weight_scale)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, num_classes))
    return DEQClassifier(injection, cell, head, image_shape=image_shape, mean=mean, std=std, **deq_options)


def classifier_for(dataset: Any, kind: str = "mlp", **kwargs: Any) -> DEQClassifier:
    """Build a DEQ classifier matched to a :class:`deqlib.data.ImageDataset` (shape, classes, normalisation).

    Args:
        dataset: anything with ``image_shape``, ``num_classes``, ``mean`` and ``std``.
        kind: "mlp" or "conv".
        **kwargs: passed to :func:`mlp_classifier` / :func:`conv_classifier`.

    Raises:
        TypeError: ``dataset`` lacks one of those attributes (e.g. a data set's name instead of the data set).
    """
    check_dataset_like(dataset, "classifier_for")
    builders = {"mlp": mlp_classifier, "conv": conv_classifier}
    kind = check_choice(kind, "classifier kind", "classifier_for", tuple(builders))
    return builders[kind](dataset.image_shape, dataset.num_classes, mean=dataset.mean, std=dataset.std, **kwargs)
