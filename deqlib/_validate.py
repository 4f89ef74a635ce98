"""Argument validation with one policy, used by every module of deqlib (private).

The policy:

- a value of the wrong **type** raises ``TypeError``; a value of the right type but a wrong **value** raises
  ``ValueError``;
- ``bool`` is never accepted where a number is expected (``True`` is an ``int`` in Python, never what was meant);
- every message starts with where the error is (``"fit: epochs must be ..."``) and names the value it got.

Each ``check_*`` function returns the value in its canonical form (``int``, ``float``, the canonical name), so that
callers write ``self.steps = check_int(steps, "steps", where)``.

Example:
    >>> check_int(3, "steps", "PGD")
    3
    >>> check_int("3", "steps", "PGD")
    Traceback (most recent call last):
    ...
    TypeError: PGD: steps must be an int, got str '3'
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

#: Tolerance of the [0, 1] pixel check.
PIXEL_TOL = 1e-6


def _got(value: object) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def _bound_text(minimum: Optional[float], maximum: Optional[float], low_open: bool, high_open: bool) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if low_open else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<' if high_open else '<='} {maximum:g}")
    return " and ".join(parts)


def check_int(
    value: object, name: str, where: str, *, minimum: Optional[int] = None, maximum: Optional[int] = None
) -> int:
    """An integer (Python or numpy; bools refused) within ``[minimum, maximum]``.

    Raises:
        TypeError: not an integer. ValueError: out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {_got(value)}")
    out = int(value)
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        raise ValueError(f"{where}: {name} must be an int {_bound_text(minimum, maximum, False, False)}, got {value!r}")
    return out


def check_number(
    value: object,
    name: str,
    where: str,
    *,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number (Python, numpy or a one-element tensor; bools refused) within the bounds.

    ``low_open`` / ``high_open`` make the bounds strict (``minimum=0, low_open=True`` is "> 0").

    Raises:
        TypeError: not a real number. ValueError: NaN, infinite or out of range.
    """
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number, got {_got(value)}")
    out = float(value)
    bounds = _bound_text(minimum, maximum, low_open, high_open)
    if not math.isfinite(out):
        raise ValueError(f"{where}: {name} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}")
    too_low = minimum is not None and (out <= minimum if low_open else out < minimum)
    too_high = maximum is not None and (out >= maximum if high_open else out > maximum)
    if too_low or too_high:
        raise ValueError(f"{where}: {name} must be a finite number {bounds}, got {value!r}")
    return out


def check_positive(value: object, name: str, where: str) -> float:
    """A finite number > 0."""
    return check_number(value, name, where, minimum=0.0, low_open=True)


def check_nonnegative(value: object, name: str, where: str) -> float:
    """A finite number >= 0."""
    return check_number(value, name, where, minimum=0.0)


def check_fraction(value: object, name: str, where: str) -> float:
    """A number in (0, 1] (a damping factor, a step fraction)."""
    return check_number(value, name, where, minimum=0.0, maximum=1.0, low_open=True)


def check_probability(value: object, name: str, where: str) -> float:
    """A number in [0, 1]."""
    return check_number(value, name, where, minimum=0.0, maximum=1.0)


def check_bool(value: object, name: str, where: str) -> bool:
    """A ``bool`` (numpy bools too); ints and strings refused."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{where}: {name} must be True or False, got {_got(value)}")


def check_seed(value: object, where: str, name: str = "seed") -> int:
    """A seed: an int in [0, 2**32)."""
    return check_int(value, name, where, minimum=0, maximum=2**32 - 1)


def check_choice(
    value: object,
    name: str,
    where: str,
    choices: Sequence[T],
    *,
    aliases: Optional[Mapping[str, T]] = None,
    ignore_case: bool = False,
) -> T:
    """One of ``choices`` (or an alias of one), returned in its canonical form.

    Raises:
        ValueError: a value of the choices' kind (a string, or None where None is a choice) that is not one of them.
        TypeError: anything else.
    """
    if value in choices and (value is not None or None in choices):
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        key = value.strip()
        key = key.lower() if ignore_case else key
        for choice in choices:
            if isinstance(choice, str) and (choice.lower() if ignore_case else choice) == key:
                return choice
        if aliases:
            for alias, target in aliases.items():
                if (alias.lower() if ignore_case else alias) == key:
                    return target
        raise ValueError(f"{where}: unknown {name} {value!r}; expected one of {tuple(choices)}")
    raise TypeError(f"{where}: {name} must be one of {tuple(choices)}, got {_got(value)}")


def check_callable(value: object, name: str, where: str, how: str = "") -> Callable[..., Any]:
    """A callable; ``how`` describes the expected call (e.g. ``"as cell(z, x)"``)."""
    if not callable(value):
        raise TypeError(f"{where}: {name} must be callable{' ' + how if how else ''}, got {type(value).__name__}")
    return value  # type: ignore[return-value]


def check_tensor(
    value: object,
    name: str,
    where: str,
    *,
    floating: bool = False,
    batch: bool = False,
    min_dim: int = 0,
    finite: bool = False,
) -> Tensor:
    """A tensor; optionally floating-point, with a non-empty batch dimension first, of ``min_dim`` dimensions, finite.

    Raises:
        TypeError: not a tensor, or not floating-point when ``floating``.
        ValueError: too few dimensions, an empty batch, NaN or Inf.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating-point tensor, got {value.dtype}")
    if value.dim() < max(min_dim, 1 if batch else 0) or (batch and value.shape[0] == 0):
        need = f"at least {max(min_dim, 1)} dimensions with a non-empty batch first" if batch else f"{min_dim}+ dims"
        raise ValueError(f"{where}: {name} must have {need}, got shape {tuple(value.shape)}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{where}: {name} contains NaN or Inf")
    return value


def check_images(x: object, where: str, name: str = "x") -> Tensor:
    """A non-empty float batch (N, ...) of images with pixels in [0, 1] (normalisation lives inside the model)."""
    x = check_tensor(x, name, where, floating=True, batch=True, min_dim=2)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{where}: {name} contains NaN or Inf")
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if lo < -PIXEL_TOL or hi > 1 + PIXEL_TOL:
        raise ValueError(
            f"{where}: pixels must be in [0, 1] (normalisation is inside the model), got [{lo:.3g}, {hi:.3g}] in {name}"
        )
    return x


def check_labels(y: object, n: int, where: str, name: str = "y") -> Tensor:
    """Integer class labels of shape (n,)."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{where}: {name} must be a tensor of int64 labels, got {type(y).__name__}")
    if y.dtype != torch.long:
        raise TypeError(f"{where}: {name} must be int64 class labels, got {y.dtype}")
    if tuple(y.shape) != (n,):
        raise ValueError(f"{where}: {name} must have shape ({n},), got {tuple(y.shape)}")
    return y


def check_deq_classifier(model: object, where: str, name: str = "model") -> Any:
    """A DEQ classifier (duck-typed): anything with ``inject``, ``deq`` and ``logits_from_state``.

    Raises:
        TypeError: one of the three is missing.
    """
    missing = [a for a in ("inject", "deq", "logits_from_state") if not hasattr(model, a)]
    if missing:
        raise TypeError(
            f"{where}: {name} must be a DEQClassifier-like module (e.g. deqlib.cells.DEQClassifier); "
            f"{type(model).__name__} lacks {missing}"
        )
    return model


def check_labels_in_range(y: object, num_classes: int, where: str, name: str = "y") -> Tensor:
    """Integer class labels (a tensor of any shape) with every value in ``[0, num_classes)``.

    ``-100`` (the ignore index of torch's cross-entropy) is refused like any other negative label: a dropped label
    would be counted wrong by every accuracy.

    Example:
        >>> check_labels_in_range(torch.tensor([0, 3]), 3, "fit")
        Traceback (most recent call last):
        ...
        ValueError: fit: y must be class indices in [0, 3) (num_classes = 3), got values in [0, 3]

    Raises:
        TypeError: not a tensor, or not of an integer dtype. ValueError: a label outside the range.
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"{where}: {name} must be a tensor of integer class labels, got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{where}: {name} must be integer class labels, got {y.dtype}")
    if y.numel():
        lo, hi = (int(v) for v in torch.aminmax(y.detach().reshape(-1)))
        if lo < 0 or hi >= num_classes:
            hint = " (-100, torch's ignore index, is not supported: drop those samples)" if lo == -100 else ""
            raise ValueError(
                f"{where}: {name} must be class indices in [0, {num_classes}) (num_classes = {num_classes}), "
                f"got values in [{lo}, {hi}]{hint}"
            )
    return y


def check_dataset_like(dataset: object, where: str, name: str = "dataset") -> Any:
    """An image data set (duck-typed): anything with ``image_shape``, ``num_classes``, ``mean`` and ``std``.

    Raises:
        TypeError: one of the four is missing.
    """
    missing = [a for a in ("image_shape", "num_classes", "mean", "std") if not hasattr(dataset, a)]
    if missing:
        raise TypeError(
            f"{where}: {name} must be an image data set such as deqlib.data.load('digits') (with image_shape, "
            f"num_classes, mean and std); {type(dataset).__name__} lacks {missing}"
        )
    return dataset


def check_matches(x: Tensor, reference: Tensor, where: str, name: str = "x", owner: str = "the model") -> Tensor:
    """``x`` has the dtype and the device of ``reference`` (a parameter or buffer of ``owner``).

    Raises:
        TypeError: another dtype (say which conversion fixes it). ValueError: another device.
    """
    if x.dtype != reference.dtype:
        raise TypeError(
            f"{where}: {name} has dtype {x.dtype} but {owner} computes in {reference.dtype}; convert the input "
            f"({name}.to({reference.dtype})) or {owner} (e.g. model.to({x.dtype}))"
        )
    if x.device != reference.device:
        raise ValueError(
            f"{where}: {name} is on {x.device} but {owner} is on {reference.device}; move one of them (.to(device))"
        )
    return x


def check_module(model: object, where: str, name: str = "model") -> Any:
    """A ``torch.nn.Module`` (a classifier of [0, 1] images, for the robustness evaluations).

    Raises:
        TypeError: anything else.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"{where}: {name} must be a torch.nn.Module mapping [0, 1] images to logits, got {type(model).__name__}"
        )
    return model


def check_logits(out: object, n: int, where: str, name: str = "the model") -> Tensor:
    """What a classifier returned for a batch of ``n``: floating-point logits of shape (n, num_classes), 2+ classes.

    Example:
        >>> check_logits(torch.zeros(4 * 10), 4, "robust_accuracy")
        Traceback (most recent call last):
        ...
        ValueError: robust_accuracy: the model must return logits of shape (N, num_classes) = (4, C) with C >= 2, got (40,)

    Raises:
        TypeError: not a floating-point tensor. ValueError: another shape (flat, 3-D, another batch, one class).
    """
    want = f"logits of shape (N, num_classes) = ({n}, C)"
    if not isinstance(out, Tensor) or not out.is_floating_point():
        got = f"a {out.dtype} tensor" if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(f"{where}: {name} must return {want}, a floating-point tensor, got {got}")
    if out.dim() != 2 or out.shape[0] != n or out.shape[1] < 2:
        raise ValueError(f"{where}: {name} must return {want} with C >= 2, got {tuple(out.shape)}")
    return out


def check_class_labels(y: object, n: int, where: str, name: str = "y") -> Tensor:
    """Class labels for ``n`` samples: an integer tensor of shape (n,), returned as int64 (floats never truncated).

    The range is checked against the model's logits with :func:`check_labels_in_range`.

    Raises:
        TypeError: not a tensor, or floating-point / bool labels. ValueError: another shape.
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"{where}: {name} must be a tensor of integer class labels, got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{where}: {name} must be integer class labels (int64), got {y.dtype}; they are never rounded")
    if tuple(y.shape) != (n,):
        raise ValueError(f"{where}: {name} must have shape ({n},), one label per sample, got {tuple(y.shape)}")
    return y.long()


def check_device(device: object, where: str, name: str = "device") -> Optional[torch.device]:
    """None, a ``torch.device`` or a device string that torch can parse (``"cpu"``, ``"cuda:0"``), as a device.

    Whether the device exists on this machine is :func:`deqlib.config.select_device`'s check.

    Example:
        >>> check_device("tpu0", "fit")
        Traceback (most recent call last):
        ...
        ValueError: fit: device 'tpu0' is not a device name (e.g. 'cpu', 'cuda', 'cuda:0', 'mps')

    Raises:
        TypeError: another type (an int, a bool). ValueError: a string that names no device.
    """
    if device is None or isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"{where}: {name} must be a string, a torch.device or None, got {_got(device)}")
    try:
        return torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"{where}: {name} {device!r} is not a device name (e.g. 'cpu', 'cuda', 'cuda:0', 'mps')"
        ) from None


def check_image_shape(image_shape: Any, where: str) -> tuple[int, int, int]:
    """(C, H, W), three positive ints."""
    if isinstance(image_shape, (str, bytes)) or not isinstance(image_shape, (Sequence, torch.Size)):
        raise TypeError(f"{where}: image_shape must be a (C, H, W) tuple of ints, got {image_shape!r}")
    if len(image_shape) != 3:
        raise ValueError(f"{where}: image_shape must be (C, H, W), got {tuple(image_shape)}")
    c, h, w = (check_int(s, "image_shape", where, minimum=1) for s in image_shape)
    return c, h, w
