"""Small helpers on modules that several parts of deqlib need (private)."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from .deq import DEQ


def model_device(model: nn.Module, default: Optional[torch.device] = None) -> Optional[torch.device]:
    """The device of the model's first parameter (else first buffer), or ``default`` for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return default


def deq_modules(model: nn.Module) -> List[DEQ]:
    """Every :class:`~deqlib.deq.DEQ` inside ``model`` (``model`` itself included), in module order."""
    return [m for m in model.modules() if isinstance(m, DEQ)]
