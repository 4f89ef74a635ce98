"""The DEQ cells the solver benchmarks run on, with fixed seeds and inputs.

* ``mlp28``: :func:`deqlib.mlp_classifier` on 28x28 mnist5k digits: a linear injection 784 -> 256 and an
  :class:`~deqlib.cells.MLPCell` of width 256 (tanh, orthogonal W of norm ``weight_scale``).
* ``conv28``: :func:`deqlib.conv_classifier` on the same digits: a conv stem to 32 x 7 x 7 and a
  :class:`~deqlib.cells.ConvCell` (32 -> 64 -> 32 channels, GroupNorm).
* ``conv32``: the same conv classifier on 3 x 32 x 32 images (state 32 x 8 x 8). No 32x32 data set is embedded
  (SVHN / CIFAR-10 need a download), so the inputs are seeded uniform noise images; the solver cost depends on
  the shapes and on the contraction of the cell, not on what the pixels show.

The cells are untrained; their weight scales are raised above deqlib's defaults (MLP 0.5 -> 0.9, conv 0.01 ->
0.05) so that plain fixed-point iteration needs 20-40 steps at the benchmark tolerance, the regime of a trained
DEQ, instead of the 5-15 of a fresh default cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

import torch
from torch import Tensor

import deqlib
from deqlib import data

CELLS = ("mlp28", "conv28", "conv32")
MLP_WEIGHT_SCALE = 0.9
CONV_WEIGHT_SCALE = 0.05


@dataclass
class Problem:
    name: str
    batch: int
    model: torch.nn.Module  # the DEQClassifier
    x: Tensor  # images
    u: Tensor  # injection (the DEQ's input)
    z0: Tensor  # initial state (zeros)

    def f(self, z: Tensor) -> Tensor:
        return self.model.deq.cell(z, self.u)

    @property
    def state_shape(self) -> tuple:
        return tuple(self.z0.shape[1:])


_IMAGES: Dict[str, Tensor] = {}


def images(kind: str, n: int) -> Tensor:
    """The first n images: mnist5k train digits (28) or seeded uniform noise (32)."""
    if kind not in _IMAGES:
        if kind == "28":
            _IMAGES[kind] = data.load("mnist5k", "train").images[:256].float().clone()
        else:
            g = torch.Generator().manual_seed(32)
            _IMAGES[kind] = torch.rand(256, 3, 32, 32, generator=g)
    return _IMAGES[kind][:n]


def build_model(cell: str, *, seed: int = 0, **deq_options) -> torch.nn.Module:
    """The classifier of a benchmark cell, initialised under ``seed``."""
    torch.manual_seed(seed)
    if cell == "mlp28":
        return deqlib.mlp_classifier(
            (1, 28, 28), 10, mean=(0.1311,), std=(0.3084,), width=256, weight_scale=MLP_WEIGHT_SCALE, **deq_options
        )
    if cell == "conv28":
        return deqlib.conv_classifier(
            (1, 28, 28), 10, mean=(0.1311,), std=(0.3084,), channels=32, weight_scale=CONV_WEIGHT_SCALE, **deq_options
        )
    if cell == "conv32":
        return deqlib.conv_classifier(
            (3, 32, 32),
            10,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            channels=32,
            weight_scale=CONV_WEIGHT_SCALE,
            **deq_options,
        )
    raise ValueError(f"unknown benchmark cell {cell!r}; expected one of {CELLS}")


def problem(cell: str, batch: int, *, seed: int = 0) -> Problem:
    model = build_model(cell, seed=seed).eval()
    x = images("28" if cell != "conv32" else "32", batch)
    with torch.no_grad():
        u = model.inject(x)
    z0 = model.deq.initial_state(u)
    return Problem(cell, batch, model, x, u, z0)


def counting(f: Callable[[Tensor], Tensor]) -> tuple[Callable[[Tensor], Tensor], list]:
    """f wrapped to count its calls (the same wrapper for both libraries)."""
    calls = [0]

    def g(z: Tensor) -> Tensor:
        calls[0] += 1
        return f(z)

    return g, calls
