"""experiments/head_to_head.py (chapter 8): rows read from the chapters that recorded them, rows evaluated here, the
comparisons of claim C6 paired digit by digit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def h2h():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import _head_to_head_report
        import head_to_head
    finally:
        sys.path.pop(0)
    return head_to_head, _head_to_head_report


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_recorded_rows_are_read_from_chapter_6_and_7_results(tmp_path, h2h):
    mod, _ = h2h
    # chapter 7: E2 is the judged mask (E1 alone would overstate), clean from E1, on its own positions
    e2 = {e: {"robust": [True, False]} for e in ("0.1", "0.2")}
    e1 = {"clean_correct": [True, True], "eps": {e: {"worst_case": {"robust": [True, True]}} for e in ("0.1", "0.2")}}
    _write(tmp_path / "regulated_dynamics" / "er-pgdat@1.json", {"E1": e1, "E2": e2, "positions": [3, 7]})
    report = {"n": 3, "clean_correct": [True, True, False]}
    report["eps"] = {
        e: {"robust": [True, False, False], "broken_by": [None, "apgd_ce", "clean"]} for e in ("0.1", "0.2")
    }
    _write(tmp_path / "lyadeq_readings" / "mnist5k-mlp-r1-lyadeq-pgdat@2@500.json", {"report": report})
    runs = mod.collect(tmp_path)
    assert set(runs) == {"er-pgdat", "r1-pgdat"} and set(runs["er-pgdat"]) == {1}
    assert runs["er-pgdat"][1]["eps"]["0.2"]["robust"] == [True, False] and runs["er-pgdat"][1]["positions"] == [3, 7]
    assert runs["r1-pgdat"][2]["positions"] == [0, 1, 2]
    row = h2h[1].seed_row(runs["r1-pgdat"][2], mod.EPS_BY_DATASET["mnist5k"])
    assert row["eps"]["0.1"]["robust"] == pytest.approx(1 / 3) and row["eps"]["0.1"]["decided_by"] == "apgd_ce"


def test_a_defence_on_a_subset_is_compared_with_its_control_on_those_digits(h2h):
    _, rep = h2h

    def run(positions, masks):
        return {"positions": positions, "eps": {e: {"robust": m} for e, m in zip(("0.1", "0.2"), masks)}}

    control = run([0, 1, 2, 3], [[True, False, True, False]] * 2)
    defence = run([1, 3], [[True, False], [True, True]])
    out = rep.compare({"d": {0: defence}, "c": {0: control}}, "d", "c", (0.1, 0.2))
    assert out["0.1"]["per_seed"][0]["difference"] == 0.5  # 1/2 against the control's 0/2 on digits 1 and 3
    assert out["0.2"]["per_seed"][0]["difference"] == 1.0
    assert out["0.1"]["verdict"].startswith("screen only")  # one seed is no verdict
    assert rep.compare({"d": {0: defence}}, "d", "c", (0.1,))["0.1"]["verdict"] == "not run"


def test_the_driver_runs_end_to_end_on_tiny_budgets(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "head_to_head.py", "--quick", "--seeds", "0", "--out-dir", str(tmp_path)]
    cmd += ["--only", "explicit-pgdat", "early-pgdat"]
    subprocess.run(cmd, cwd=ROOT / "experiments", env=env, check=True, capture_output=True, timeout=600)
    res = json.loads((tmp_path / "head_to_head.json").read_text())
    table = res["summary"]["table"]
    assert set(table["explicit-pgdat"]["seeds"]) == {"0"} and table["deq-pgdat"]["seeds"] == {}
    early = json.loads((tmp_path / "head_to_head" / "early-pgdat@0.json").read_text())
    for e in ("0.1", "0.2"):
        worst, battery = early["eps"][e]["robust"], early["battery"]["eps"][e]["robust"]
        assert all(b or not w for w, b in zip(worst, battery))  # the worst case is never above the battery alone
    assert early["early_index"] >= 1
    md = (tmp_path / "head_to_head.md").read_text()
    assert "explicit 4-layer net, PGD-AT" in md and "| er-pgdat | explicit-pgdat | 0.1 | - | - | not run |" in md


def test_full_mode_rows_are_the_zoo_full_recipes(h2h):
    mod, _ = h2h
    from deqlib import zoo

    for dataset in ("mnist", "svhn", "cifar10"):
        rows = mod.evaluated_here(dataset)
        assert not any(mod.ROWS[r].family == "LyaDEQ" for r in rows)  # no full recipes of chapter 6's readings
        assert {"deq-pgdat", "ris-trades", "er-pgdat", "er-ris-pgdat", "early-pgdat", "explicit-trades"} <= set(rows)
        for r in rows:
            assert zoo.get(mod.ROWS[r].recipe_for(dataset)).mode == "full"
    fast = mod.evaluated_here("mnist5k")
    assert all(mod.ROWS[r].recorded is None for r in fast) and "deq-pgdat" not in fast


def test_the_recorded_table_and_claims_are_up_to_date_with_the_runs_they_read(h2h):
    """Chapter 8 renders results/head_to_head.json and results/claims.json: both must be what their scripts make from
    the runs recorded now (a run landed without `--summary` / `claims.py` afterwards fails here)."""
    mod, rep = h2h
    results = ROOT / "experiments" / "results"
    recorded = json.loads((results / "head_to_head.json").read_text())
    fresh = rep.summarise(mod.collect(results), mod.ROWS, mod.C6, mod.EPS_BY_DATASET["mnist5k"])
    again = json.loads(json.dumps(fresh, default=float))  # through JSON, as the file was written
    stale = "stale: run `python experiments/head_to_head.py --summary && python experiments/claims.py`"
    assert again["table"] == recorded["summary"]["table"], stale
    assert again["c6"] == recorded["summary"]["c6"], stale
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import claims
    finally:
        sys.path.pop(0)
    rows = json.loads(json.dumps(claims.all_rows()))
    assert rows == json.loads((results / "claims.json").read_text())["rows"], stale
