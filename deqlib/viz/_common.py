"""What every figure module of :mod:`deqlib.viz` shares: the input types, array conversion, axes (private)."""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, Union

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]
#: A map of the plane: (M, 2) float64 tensor -> (M, 2) tensor (or array).
PlaneMap = Callable[[torch.Tensor], ArrayLike]

__all__ = ["ArrayLike", "PlaneMap", "to_numpy", "as_tensor", "new_axes", "curves", "plane_grid", "color_cycle"]


def to_numpy(a: ArrayLike) -> np.ndarray:
    """A NumPy copy of a tensor (detached, on the CPU) or array-like."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def as_tensor(z: ArrayLike) -> torch.Tensor:
    """A tensor as it is, anything else as a float64 tensor."""
    return z if isinstance(z, torch.Tensor) else torch.as_tensor(np.asarray(z), dtype=torch.float64)


def new_axes(ax: Optional[Axes], figsize: Tuple[float, float] = (5.0, 3.5)) -> Axes:
    """``ax``, or the axes of a new figure of size ``figsize``."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def color_cycle() -> List[str]:
    """The colours of matplotlib's current property cycle."""
    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def curves(data: Union[ArrayLike, Sequence[ArrayLike]]) -> List[np.ndarray]:
    """One 1-D array per curve, from a 1-D array, a 2-D array (rows are curves) or a list of 1-D arrays."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        arr = to_numpy(data).astype(float)
        if arr.ndim == 1:
            return [arr]
        if arr.ndim == 2:
            return [row for row in arr]
        raise ValueError(f"expected a 1-D or 2-D array of curves, got shape {arr.shape}")
    return [to_numpy(c).astype(float).reshape(-1) for c in data]


def plane_grid(
    xlim: Tuple[float, float], ylim: Tuple[float, float], n: int
) -> Tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """An n x n grid of the rectangle: the mesh (gx, gy) and its points as an (n*n, 2) float64 tensor."""
    gx, gy = np.meshgrid(np.linspace(*xlim, n), np.linspace(*ylim, n))
    pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float64)
    return gx, gy, pts
