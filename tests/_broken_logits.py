"""A tiny classifier whose logits can be broken on purpose, shared by the bad-input tests."""

import torch
from torch import nn

#: How ``LinearClassifier(shape=...)`` breaks its logits.
SHAPES = ("ok", "flat", "3d", "batch")


class LinearClassifier(nn.Module):
    """10 classes of 8x8 images; ``shape`` breaks its logits as a wrong model would (flat, 3-D, wrong batch)."""

    def __init__(self, shape: str = "ok") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.shape = nn.Linear(64, 10), shape

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return {"ok": out, "flat": out.flatten(), "3d": out[:, :, None], "batch": out[:1]}[self.shape]
