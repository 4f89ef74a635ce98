"""The chapter 4 explorer (deqlib.widgets.trajectory_explorer), built headless: a control changes what it draws."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from _digits_deq import digits_fixture, trained_fixture  # noqa: E402, F401 (fixtures)

pytest.importorskip("ipywidgets")

from deqlib import widgets  # noqa: E402


def _controls(w):
    return {c._kwarg: c for c in w.kwargs_widgets}


def test_trajectory_explorer_redraws_for_each_control(digits, trained):
    _, _, (x, y) = digits
    w = widgets.trajectory_explorer({"a": trained}, x[:5], y[:5], eps_values=(0.0, 0.3), steps=6)
    c = _controls(w)
    assert set(c) == {"model", "digit", "eps", "attack", "gradient"}
    first = w.last["adversarial"]["probs"].clone()
    assert w.last["settings"]["eps"] == 0.3 and first.shape == (7, 1, 10)
    c["eps"].value = 0.0  # no attack: the attacked readout is the clean one
    assert w.last["settings"]["eps"] == 0.0
    assert torch.equal(w.last["x_adv"], x[:1]) and not torch.equal(w.last["adversarial"]["probs"], first)
    c["digit"].value = 3
    assert torch.equal(w.last["x_adv"], x[3:4])
    c["gradient"].value = "unroll"
    assert w.last["settings"]["gradient"] == "unroll"


def test_trajectory_explorer_rejects_bad_input(digits, trained):
    _, _, (x, y) = digits
    with pytest.raises(TypeError, match="mapping"):
        widgets.trajectory_explorer([trained], x[:2], y[:2])
    with pytest.raises(ValueError, match="labels|y"):
        widgets.trajectory_explorer({"a": trained}, x[:2], y[:3])
    with pytest.raises(ValueError, match="eps_values"):
        widgets.trajectory_explorer({"a": trained}, x[:2], y[:2], eps_values=())
