"""Parameter validation and the projection onto the threat model, shared by every attack in deqlib.

Pixels are in [0, 1] (normalisation lives inside the model), so an L-infinity radius above 1 is meaningless:
it is almost always a radius written on the 0..255 scale (8 instead of 8/255), and is refused.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

from torch import Tensor

NORMS = ("Linf", "L2")
_NORM_ALIASES = {"linf": "Linf", "l_inf": "Linf", "inf": "Linf", "l2": "L2", "l_2": "L2"}


def check_norm(norm: str, where: str = "attack") -> str:
    """Return the canonical norm name ("Linf" or "L2"); raise ValueError for anything else."""
    if isinstance(norm, str):
        key = norm.strip()
        if key in NORMS:
            return key
        if key.lower() in _NORM_ALIASES:
            return _NORM_ALIASES[key.lower()]
    raise ValueError(f"{where}: unknown norm {norm!r}; expected one of {NORMS}")


def _real(value: object, name: str, where: str) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number, got {type(value).__name__} {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{where}: {name} must be finite, got {value!r}")
    return out


def check_eps(eps: object, norm: str = "Linf", where: str = "attack") -> float:
    """Validate a perturbation radius: a finite number >= 0, at most 1 for L-infinity.

    Raises:
        ValueError: negative, or an L-infinity radius above 1 ("8 instead of 8/255").
        TypeError: not a number.
    """
    norm = check_norm(norm, where)
    value = _real(eps, "eps", where)
    if value < 0:
        raise ValueError(f"{where}: eps must be >= 0, got {eps!r}")
    if norm == "Linf" and value > 1.0:
        raise ValueError(
            f"{where}: L-infinity eps = {value:g} is on the wrong scale: pixels are in [0, 1], so an eps above 1 "
            f"allows any image. Did you mean {value:g}/255 = {value / 255:.4g}?"
        )
    return value


def check_l2_scale(eps: float, images: Tensor, where: str = "attack") -> None:
    """Refuse an L2 radius larger than the diameter sqrt(d) of [0, 1]^d: it is on the wrong scale."""
    d = images[0].numel()
    if eps > math.sqrt(d) + 1e-9:
        raise ValueError(
            f"{where}: L2 eps = {eps:g} exceeds sqrt(d) = {math.sqrt(d):.4g}, the largest distance between two images "
            f"with pixels in [0, 1] ({tuple(images.shape[1:])}): eps is on the wrong scale"
        )


def check_positive(value: object, name: str, where: str = "attack", *, norm: Optional[str] = None) -> float:
    """A step size or similar: finite and > 0 (and <= 1 for an L-infinity step, as eps)."""
    out = _real(value, name, where)
    if out <= 0:
        raise ValueError(f"{where}: {name} must be > 0, got {value!r}")
    if norm == "Linf" and out > 1.0:
        raise ValueError(
            f"{where}: L-infinity {name} = {out:g} is on the wrong scale: pixels are in [0, 1]. "
            f"Did you mean {out:g}/255 = {out / 255:.4g}?"
        )
    return out


def check_fraction(value: object, name: str, where: str = "attack") -> float:
    """A number in (0, 1]."""
    out = _real(value, name, where)
    if not 0.0 < out <= 1.0:
        raise ValueError(f"{where}: {name} must be in (0, 1], got {value!r}")
    return out


def check_int(value: object, name: str, where: str = "attack", *, minimum: int = 1) -> int:
    """An int >= minimum (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__} {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_seed(seed: object, where: str = "attack") -> int:
    return check_int(seed, "seed", where, minimum=0)


def perturbation_norm(x_adv: Tensor, x: Tensor, norm: str) -> Tensor:
    """Per-sample ||x_adv - x|| in the given norm, shape (N,)."""
    delta = (x_adv - x).flatten(1)
    if check_norm(norm) == "Linf":
        return delta.abs().amax(dim=1) if delta.shape[1] else delta.new_zeros(delta.shape[0])
    return delta.norm(dim=1)


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Project x_adv onto the eps-ball around x (L-infinity or L2) intersected with [0, 1].

    Points already inside are returned unchanged (up to the final clamp, a no-op for them).
    """
    delta = x_adv - x
    if check_norm(norm) == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (eps / n).clamp(max=1.0)
        delta = delta * factor.view(-1, *([1] * (delta.dim() - 1)))
    return (x + delta).clamp(0.0, 1.0)
