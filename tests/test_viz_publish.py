"""viz.glue: Python numbers for the prose's format specs, and a no-op without a notebook kernel."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from deqlib import viz
from deqlib.viz.publish import _plain


def test_numpy_and_tensor_scalars_become_python_numbers():
    for value in (np.float64(-0.5), np.int64(3), torch.tensor(0.25)):
        plain = _plain(value)
        assert type(plain) in (float, int) and float(repr(plain)) == float(value)
    assert _plain([1, 2]) == [1, 2]


def test_glue_returns_nothing_so_a_glue_cell_shows_no_output_and_checks_the_name():
    assert viz.glue("ch0_x", np.float64(1.5)) is None
    with pytest.raises(TypeError, match="name"):
        viz.glue("", 1)


def test_on_colab_glue_prints_what_the_unrendered_role_names(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    viz.glue("ch9_rate", np.float64(0.25))
    viz.glue("ch9_table", pd.DataFrame({"a": [1]}))  # not a number: nothing printed
    assert capsys.readouterr().out == "ch9_rate = 0.25\n"
