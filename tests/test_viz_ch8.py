"""Chapter 8's figure: robust accuracy against the radius per family (deqlib.viz.head_to_head)."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from deqlib import viz  # noqa: E402
from deqlib.evaluate import seed_summary  # noqa: E402


def _row(values_01, clean, ci95=(0.0, 1.0)):
    seeds = {
        str(s): {"n": 10, "clean": c, "eps": {"0.1": {"robust": v, "ci95": list(ci95)}}}
        for s, (v, c) in enumerate(zip(values_01, clean))
    }
    return {"seeds": seeds, "clean": seed_summary(clean), "eps": {"0.1": seed_summary(values_01)}}


def test_curves_take_the_seed_interval_or_the_one_seeds_wilson_interval():
    table = {"a": _row([0.5, 0.6, 0.7], [0.9, 0.9, 0.9]), "b": _row([0.4], [0.8], ci95=(0.2, 0.65)), "c": {"seeds": {}}}
    curves = viz.head_to_head_curves(table, [0.1])
    assert set(curves) == {"a", "b"}  # a row without a finished seed has no curve
    a, b = curves["a"], curves["b"]
    assert list(a["radii"]) == [0.0, 0.1] and a["mean"][1] == pytest.approx(0.6) and a["seeds"] == 3
    assert a["low"][1] == pytest.approx(seed_summary([0.5, 0.6, 0.7])["interval"][0])
    assert (b["low"][1], b["high"][1]) == (0.2, 0.65)  # one seed: its Wilson interval
    assert b["low"][0] == b["high"][0] == pytest.approx(0.8)  # and no interval for its clean accuracy


def test_one_panel_per_family_each_with_the_reference():
    table = {"ref": _row([0.5, 0.6], [0.9, 0.9]), "x": _row([0.4], [0.8]), "y": _row([0.3], [0.7]), "z": {"seeds": {}}}
    rows = {
        "ref": {"label": "R", "family": "DEQ"},
        "x": {"label": "X", "family": "A"},
        "y": {"label": "Y", "family": "B"},
        "z": {"label": "Z", "family": "C"},
    }
    fig = viz.plot_head_to_head(table, rows, [0.1], reference="ref", ncols=2)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["DEQ", "A", "B"]  # family C has no finished seed
    for ax in shown[1:]:
        assert any(line.get_linestyle() == "--" for line in ax.get_lines())  # the reference
    with pytest.raises(ValueError, match="no row"):
        viz.plot_head_to_head({"z": {"seeds": {}}}, {"z": rows["z"]}, [0.1])
