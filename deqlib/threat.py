"""The threat model: L-infinity and L2 balls around [0, 1] images, their radii, norms and projections.

Taught in chapter 5 (``notebooks/05_attacking_deqs.ipynb``); the training losses and every attack use it.

One home for what every attack and every adversarial-training loss needs (no torchattacks here, so the training
losses can use it without it): the canonical norm names, the checks of a radius and a step size on the pixel scale,
the per-sample perturbation norm, the projection onto the ball ∩ [0, 1], one ascent step, and a random start.

Pixels are in [0, 1] (normalisation lives inside the model), so an L-infinity radius above 1 is meaningless: it is
almost always a radius written on the 0..255 scale (8 instead of 8/255), and is refused.

Example:
    >>> import torch
    >>> x = torch.full((1, 1, 2, 2), 0.5)
    >>> project(x + 0.3, x, eps=0.1, norm="Linf").max().item()
    0.6000000238418579
"""

from __future__ import annotations

import math
import numbers
from typing import Any, List, Optional

import torch
from torch import Tensor

from ._validate import check_choice, check_nonnegative, check_positive, check_tensor

__all__ = [
    "NORMS",
    "check_norm",
    "check_eps",
    "check_eps_list",
    "check_step",
    "check_l2_scale",
    "perturbation_norm",
    "project",
    "ascent_step",
    "random_start",
]

NORMS = ("Linf", "L2")
_NORM_ALIASES = {"linf": "Linf", "l_inf": "Linf", "inf": "Linf", "l2": "L2", "l_2": "L2"}


def check_norm(norm: object, where: str = "attack") -> str:
    """The canonical norm name, "Linf" or "L2" (aliases such as "linf", "l2" accepted)."""
    return check_choice(norm, "norm", where, NORMS, aliases=_NORM_ALIASES, ignore_case=True)


def _wrong_scale(where: str, name: str, value: float) -> ValueError:
    return ValueError(
        f"{where}: L-infinity {name} = {value:g} is on the wrong scale: pixels are in [0, 1], so a value above 1 "
        f"allows any image. Did you mean {value:g}/255 = {value / 255:.4g}?"
    )


def check_eps(eps: object, norm: str = "Linf", where: str = "attack") -> float:
    """A perturbation radius: a finite number >= 0, at most 1 for L-infinity.

    Raises:
        TypeError: not a number. ValueError: negative, or an L-infinity radius above 1 ("8 instead of 8/255").
    """
    norm = check_norm(norm, where)
    value = check_nonnegative(eps, "eps", where)
    if norm == "Linf" and value > 1.0:
        raise _wrong_scale(where, "eps", value)
    return value


def check_eps_list(
    eps_list: Any, norm: Optional[str] = None, where: str = "attack", *, distinct: bool = False
) -> List[float]:
    """A non-empty list of radii: a sequence of numbers (or one number); each checked by :func:`check_eps` for
    ``norm`` (None: only a finite number >= 0, for reports whose attacks have norms of their own).

    Raises:
        TypeError: a string (``"0.1"`` is not a list of radii) or another non-sequence, or a radius that is not a
            number. ValueError: no radius, a bad radius, or (``distinct``) a radius listed twice.
    """
    if isinstance(eps_list, numbers.Real):
        eps_list = [eps_list]
    if isinstance(eps_list, (str, bytes)) or not hasattr(eps_list, "__iter__"):
        raise TypeError(
            f"{where}: eps_list must be a sequence of radii such as [0.1, 0.2], got {type(eps_list).__name__} {eps_list!r}"
        )
    out = [check_nonnegative(e, "eps", where) if norm is None else check_eps(e, norm, where) for e in eps_list]
    if not out:
        raise ValueError(f"{where}: give at least one eps")
    if distinct and len(set(out)) != len(out):
        raise ValueError(f"{where}: eps_list lists a radius twice: {out}")
    return out


def check_step(value: object, name: str, where: str = "attack", *, norm: Optional[str] = None) -> float:
    """A step size: finite and > 0, and at most 1 for an L-infinity step (as eps)."""
    out = check_positive(value, name, where)
    if norm is not None and check_norm(norm, where) == "Linf" and out > 1.0:
        raise _wrong_scale(where, name, out)
    return out


def check_l2_scale(eps: float, images: Tensor, where: str = "attack") -> None:
    """Refuse an L2 radius larger than the diameter sqrt(d) of [0, 1]^d: it is on the wrong scale."""
    d = images[0].numel()
    if eps > math.sqrt(d) + 1e-9:
        raise ValueError(
            f"{where}: L2 eps = {eps:g} exceeds sqrt(d) = {math.sqrt(d):.4g}, the largest distance between two images "
            f"with pixels in [0, 1] ({tuple(images.shape[1:])}): eps is on the wrong scale"
        )


def _check_pair(a: Any, b: Any, names: str, where: str) -> None:
    """Two floating-point tensors (N, ...) of the same shape (names: "x_adv, x")."""
    first, second = names.split(", ")
    check_tensor(a, first, where, floating=True, min_dim=1)
    check_tensor(b, second, where, floating=True, min_dim=1)
    if a.shape != b.shape:
        raise ValueError(
            f"{where}: {first} and {second} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _per_sample_norm(t: Tensor) -> Tensor:
    """The L2 norm of each sample, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def perturbation_norm(x_adv: Tensor, x: Tensor, norm: str) -> Tensor:
    """Per-sample ``||x_adv - x||`` in the given norm, shape (N,)."""
    norm = check_norm(norm, "perturbation_norm")
    _check_pair(x_adv, x, "x_adv, x", "perturbation_norm")
    delta = (x_adv - x).flatten(1)
    if norm == "Linf":
        return delta.abs().amax(dim=1) if delta.shape[1] else delta.new_zeros(delta.shape[0])
    return delta.norm(dim=1)


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str = "Linf") -> Tensor:
    """Project ``x_adv`` onto the eps-ball around ``x`` (per sample) intersected with [0, 1].

    Points already inside are returned unchanged; the clamp to [0, 1] after the ball projection never leaves the
    ball, since ``x`` itself is in [0, 1].
    """
    norm = check_norm(norm, "project")
    eps = check_eps(eps, norm, "project")
    _check_pair(x_adv, x, "x_adv, x", "project")
    delta = x_adv - x
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = _per_sample_norm(delta)
        delta = delta * torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))
    return (x + delta).clamp(0.0, 1.0)


def ascent_step(x_adv: Tensor, grad: Tensor, alpha: float, norm: str) -> Tensor:
    """One steepest-ascent step of size ``alpha``: the signed gradient (L-infinity) or the normalised one (L2)."""
    norm = check_norm(norm, "ascent_step")
    alpha = check_step(alpha, "alpha", "ascent_step", norm=norm)
    _check_pair(x_adv, grad, "x_adv, grad", "ascent_step")
    if norm == "Linf":
        return x_adv + alpha * grad.sign()
    return x_adv + alpha * grad / _per_sample_norm(grad).clamp_min(1e-12)


def random_start(x: Tensor, eps: float, norm: str = "Linf") -> Tensor:
    """A random point of the ball ∩ [0, 1]: uniform per pixel (L-infinity), uniform direction and radius (L2)."""
    norm = check_norm(norm, "random_start")
    eps = check_eps(eps, norm, "random_start")
    check_tensor(x, "x", "random_start", floating=True, min_dim=1)
    if norm == "Linf":
        return project(x + torch.empty_like(x).uniform_(-eps, eps), x, eps, norm)
    direction = torch.randn_like(x)
    direction = direction / _per_sample_norm(direction).clamp_min(1e-12)
    radius = eps * torch.rand(x.shape[0], *([1] * (x.dim() - 1)), dtype=x.dtype, device=x.device)
    return project(x + radius * direction, x, eps, norm)
