"""The tiny data, model and settings shared by tests/test_distributed.py and its torchrun worker."""

import torch

from deqlib import cells, data

# 91 samples in global batches of 15: shards of 8 and 7 (unequal weights), and a last batch of one sample, which
# leaves the second process a zero-weight stand-in.
N_TRAIN, N_VAL = 91, 37
SETTINGS = dict(lr=3e-3, batch_size=15, scheduler="cosine", seed=11, progress=False, device="cpu")


def tiny_data():
    train = data.load("digits", "train").subset(N_TRAIN, seed=0)
    val = data.load("digits", "test").subset(N_VAL, seed=0)
    return train, val


def tiny_model():
    torch.manual_seed(3)
    return cells.classifier_for(tiny_data()[0], "mlp", width=16, solver="anderson", max_iter=25, tol=1e-5)
