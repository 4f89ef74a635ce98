"""Every seed claim and re-tested finding in one table, read from the recorded results (chapter 8).

Each row: the claim, the paper, our test of it (the reading or model and its control), the radius, the verdict,
the numbers (mean difference over training seeds with its 95 % t interval, McNemar p per seed) and the evaluation
that decided it. The verdicts are the ones the chapters' drivers computed with :func:`deqlib.evaluate.claim_verdict`
(reproduced: better with p < 0.05 for each of three seeds; not reproduced: for none; mixed; fewer seeds: a screen,
no verdict); the per-seed findings of chapter 4 are reproduced when they hold for every seed, not reproduced when
for none. C2's mechanism is checked here (an orthogonal layer keeps every distance between fixed points).

Sources: ``results/lyadeq_readings.json`` (C1, C3), ``results/regulated_dynamics.json`` (C4, C5),
``results/head_to_head.json`` (C6), ``results/dynamics_mnist5k.json`` (Yang et al. 2023's finding along the
dynamics, chapter 4), ``results/attacks_mnist5k.json`` (Yang et al. 2022's two claims, chapter 5).

Command::

    python experiments/claims.py      # writes results/claims.json and results/claims.md
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from _report import machine, mean_cell, per_seed_cell

from deqlib.evaluate import save_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
COMMAND = "python experiments/claims.py"
LYA, YANG23, YANG22 = "LyaDEQ (Chu et al. 2023)", "Yang et al. 2023", "Yang et al. 2022"


def _load(name: str) -> Optional[Dict[str, Any]]:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _row(claim, paper, statement, test, eps, verdict, numbers="", decided_by="", source="") -> Dict[str, Any]:
    return dict(
        claim=claim,
        paper=paper,
        statement=statement,
        test=test,
        eps=eps,
        verdict=verdict,
        numbers=numbers,
        decided_by=decided_by,
        source=source,
    )


def _paired(row: Dict[str, Any]) -> str:
    return f"{mean_cell(row.get('over_seeds'))}; {per_seed_cell(row['per_seed'])}"


def lyadeq_rows() -> List[Dict[str, Any]]:
    """C1 and C3 per kept reading (three seeds, 500 digits), from chapter 6's results."""
    rec = _load("lyadeq_readings.json")
    out: List[Dict[str, Any]] = []
    for reading, s in (rec or {}).get("summary", {}).items():
        if s["n"] != 500:
            continue  # the one-seed screen of the other readings is no verdict
        claim, statement = s["claim"].split(": ", 1)
        for e, r in s["eps"].items():
            out.append(
                _row(
                    claim,
                    LYA,
                    statement,
                    f"{reading} vs {s['control']}",
                    e,
                    r["verdict"],
                    _paired(r),
                    "the battery (preset full) with the reading's adaptive attacks",
                    "lyadeq_readings.json",
                )
            )
    return out


def c2_rows() -> List[Dict[str, Any]]:
    """C2's mechanism: an orthogonal layer maps fixed points without changing any distance between them."""
    from deqlib import data, zoo

    r1 = zoo.load("mnist5k-mlp-r1-lyadeq-standard", allow_training=False)
    x, _ = data.load("mnist5k", "test").subset(200, seed=0).tensors()
    with torch.no_grad():
        z = r1.states(x)[-1]  # the states the head reads
        ratio = torch.pdist(r1.head[1](z)) / torch.pdist(z)  # head[1]: the trained orthogonal layer
    numbers = f"distance ratio after / before the trained orthogonal layer: {ratio.min():.6f} to {ratio.max():.6f}"
    numbers += " (R1, 200 test digits)"
    return [
        _row(
            "C2",
            LYA,
            "the orthogonal layer is needed against crowded fixed points",
            "does an orthogonal layer separate crowded fixed points?",
            "-",
            "not reproduced (as a mechanism)",
            numbers,
            "exact computation",
            "claims.py",
        ),
        _row(
            "C2",
            LYA,
            "the orthogonal layer helps training",
            "needs the paper's architecture",
            "-",
            "not testable",
            "",
            "",
            "",
        ),
    ]


def yang23_rows() -> List[Dict[str, Any]]:
    """C4 and C5 under the released evaluation (E1) and the adaptive one (E2), from chapter 7's results."""
    rec = _load("regulated_dynamics.json")
    out: List[Dict[str, Any]] = []
    for defence, c in (rec or {}).get("claims", {}).items():
        claim, statement = c["claim"].split(": ", 1)
        for e, evs in c["eps"].items():
            for ev, r in evs.items():
                how = "E1: the released attacks" if ev == "E1" else "E2: worst case over E1, Square 5,000, the battery"
                test = f"{defence} vs {c['control']} ({ev})"
                out.append(
                    _row(claim, YANG23, statement, test, e, r["verdict"], _paired(r), how, "regulated_dynamics.json")
                )
    return out


def c6_rows() -> List[Dict[str, Any]]:
    rec = _load("head_to_head.json")
    out: List[Dict[str, Any]] = []
    for c in (rec or {}).get("summary", {}).get("c6", {}).values():
        for e, r in c["eps"].items():
            out.append(
                _row(
                    "C6",
                    YANG23,
                    "regulated DEQs beat adversarially trained DEQs and deep baselines of similar size",
                    f"{c['defence']} vs {c['control']}",
                    e,
                    r["verdict"],
                    _paired(r) if r["per_seed"] else "",
                    "per-sample worst case over the battery and the defence's adaptive attacks",
                    "head_to_head.json",
                )
            )
    return out


def finding_rows() -> List[Dict[str, Any]]:
    """Chapter 4's four paired tests of Yang et al. 2023's finding, and chapter 5's verdicts on Yang et al. 2022."""
    out: List[Dict[str, Any]] = []
    dyn = _load("dynamics_mnist5k.json")
    for key, t in (dyn or {}).get("summary", {}).get("tests", {}).items():
        training, e, test = key.split("/")
        holds = t["per_seed_holds"]
        verdict = "reproduced" if all(holds) else ("not reproduced" if not any(holds) else "mixed")
        numbers = f"holds for seeds {[i for i, h in enumerate(holds) if h]} of {len(holds)}"
        if t.get("seeds"):
            s = t["seeds"]
            numbers += f"; mean {s['mean']:.3f}" + (
                f" [{s['interval'][0]:.3f}, {s['interval'][1]:.3f}]" if s["interval"] else ""
            )
        statement = "along the dynamics, adversarial inputs have higher entropy and low entropy goes with robustness"
        decided = "APGD-CE 100 on the final state (IFT gradient), the state k = 2"
        out.append(
            _row(
                "F-ch4",
                YANG23,
                statement,
                f"{training} DEQ: {test}",
                e,
                verdict,
                numbers,
                decided,
                "dynamics_mnist5k.json",
            )
        )
    att = _load("attacks_mnist5k.json")
    for training, verdicts in (att or {}).get("summary", {}).get("verdicts", {}).items():
        for name, verdict in verdicts.items():
            claim, how = name.split(" (", 1)
            statement = {
                "ready_made_overstates": "ready-made attacks overstate DEQ robustness",
                "intermediate_stronger": "intermediate-state attacks are stronger",
            }.get(claim, claim)
            decided = "the per-digit worst case over every attack of chapter 5"
            test = f"{training} DEQ: {how.rstrip(')')}"
            out.append(_row("F-ch5", YANG22, statement, test, "0.1", verdict, "", decided, "attacks_mnist5k.json"))
    return out


def markdown(rows: List[Dict[str, Any]]) -> str:
    m = machine()
    lines = [
        "# Every claim in one table",
        "",
        f"Made by `{COMMAND}` ({m['date']}) from the recorded results named in each row. Differences in points: "
        "mean over training seeds [95 % t interval]; McNemar p per seed.",
        "",
        "| claim | paper | statement | our test | eps | verdict | numbers | decided by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r[k] for k in ("claim", "paper", "statement", "test", "eps", "verdict", "numbers", "decided_by")]
        lines.append("| " + " | ".join(str(c) or "-" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def all_rows() -> List[Dict[str, Any]]:
    """Every row of the table, in the order of the papers and chapters."""
    return lyadeq_rows() + c2_rows() + yang23_rows() + c6_rows() + finding_rows()


def main() -> None:
    rows = all_rows()
    save_json({"command": COMMAND, "machine": machine(), "rows": rows}, RESULTS / "claims.json")
    (RESULTS / "claims.md").write_text(markdown(rows))
    print(f"{len(rows)} rows: results/claims.json, results/claims.md")


if __name__ == "__main__":
    main()
