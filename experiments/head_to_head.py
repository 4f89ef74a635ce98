"""Chapter 8: every defence of chapters 4-7 and an explicit network of the same size, under the strongest attacks.

Rows (mnist5k, the zoo's fast recipes, training seeds 0, 1, 2; L-infinity eps 0.1 and 0.2 on the 500 stratified test
digits every chapter uses). Each row's robust accuracy is the per-sample worst case over the strongest battery
(``deqlib.evaluate.strongest_attack``, preset full: AutoAttack's members, PGD-100 x 5 restarts on every gradient,
the intermediate-state attacks, the model's own adaptive attacks) and the attacks adapted to that defence:

* recorded by chapter 7 (``results/regulated_dynamics/``, its E2: the worst case over the released evaluation,
  Square 5,000 and the battery): the plain DEQs (standard, PGD-AT, TRADES), input entropy reduction on the standard
  and PGD-AT DEQs (200 of the digits, battery reduced: chapter 7's budget), random intermediate states (PGD-AT,
  TRADES; at the depth chosen on held-out digits);
* recorded by chapter 6 (``results/lyadeq_readings/``): the LyaDEQ readings kept for three seeds (R1, R3 exact, R3
  detached; standard training and PGD-AT), under the battery with their adaptive attacks;
* evaluated here (``results/head_to_head/``): the early-state and averaged-state readouts of the PGD-AT DEQ
  (chapter 5's choice of state; the battery on the read state's phantom surrogate, PGD-100 on its unrolled
  surrogate and PGD-100 transferred from the final state); Yang'23 both (input entropy reduction on the DEQ trained
  with random intermediate states, chapter 7's E1 / E2 / E3 on its 200 digits); LyaDEQ + Yang'23 (R3's Lyapunov
  stage on that DEQ, zoo ``mnist5k-mlp-r3-exact-ris-pgdat``); the explicit 4-layer network of the DEQ's parameter
  count (``deqlib.baselines``; zoo ``mnist5k-mlp-explicit-*``), standard, PGD-AT and TRADES.

Claim C6 ("regulated DEQs beat adversarially trained DEQs and deep baselines of similar size"): every Yang'23 row
against the DEQ and against the explicit network trained with the same adversarial loss, McNemar per training seed
on the same digits, a t interval over the seeds (``deqlib.evaluate.claim_verdict``).

Command (workers may run at once; each (row, seed) evaluated here is one file in ``results/head_to_head/``)::

    python experiments/head_to_head.py
    python experiments/head_to_head.py --summary   # only rewrite results/head_to_head.{json,md}
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from _head_to_head_report import markdown, summarise
from _workers import load_runs, run_claimed

import deqlib
from deqlib import attacks, evaluate, zoo
from deqlib.defenses import AveragedStateClassifier, EarlyStateClassifier, EntropyReductionDefense
from deqlib.evaluate import save_json
from deqlib.evaluate.released import robust_under_all
from deqlib.solvers import quiet_convergence

HERE = Path(__file__).resolve().parent
EPS = (0.1, 0.2)
EVAL_SEED = 0
SEEDS = (0, 1, 2)
COMMAND = "python experiments/head_to_head.py"


@dataclass(frozen=True)
class Row:
    """One line of the table: ``source`` is ``"regulated_dynamics"`` or ``"lyadeq_readings"`` (recorded there,
    ``key`` its run name) or ``"here"`` (``key`` the zoo recipe, ``kind`` how it is defended and attacked)."""

    label: str
    family: str
    source: str
    key: str
    kind: str = "battery"


ROWS: Dict[str, Row] = {
    "deq-standard": Row("DEQ, standard training", "DEQ", "regulated_dynamics", "deq-standard"),
    "deq-pgdat": Row("DEQ, PGD-AT", "DEQ", "regulated_dynamics", "deq-pgdat"),
    "deq-trades": Row("DEQ, TRADES", "DEQ", "regulated_dynamics", "deq-trades"),
    "early-pgdat": Row("early-state readout, PGD-AT DEQ", "readout", "here", "mnist5k-mlp-pgdat", "early"),
    "averaged-pgdat": Row("averaged-state readout, PGD-AT DEQ", "readout", "here", "mnist5k-mlp-pgdat", "averaged"),
    "r1-standard": Row("LyaDEQ R1, standard", "LyaDEQ", "lyadeq_readings", "mnist5k-mlp-r1-lyadeq-standard"),
    "r1-pgdat": Row("LyaDEQ R1, PGD-AT", "LyaDEQ", "lyadeq_readings", "mnist5k-mlp-r1-lyadeq-pgdat"),
    "r3-exact-standard": Row("LyaDEQ R3 exact, standard", "LyaDEQ", "lyadeq_readings", "mnist5k-mlp-r3-exact-standard"),
    "r3-exact-pgdat": Row("LyaDEQ R3 exact, PGD-AT", "LyaDEQ", "lyadeq_readings", "mnist5k-mlp-r3-exact-pgdat"),
    "r3-detached-standard": Row(
        "LyaDEQ R3 detached, standard", "LyaDEQ", "lyadeq_readings", "mnist5k-mlp-r3-detached-standard"
    ),
    "r3-detached-pgdat": Row(
        "LyaDEQ R3 detached, PGD-AT", "LyaDEQ", "lyadeq_readings", "mnist5k-mlp-r3-detached-pgdat"
    ),
    "er-standard": Row("entropy reduction, standard DEQ", "Yang'23", "regulated_dynamics", "er-standard"),
    "er-pgdat": Row("entropy reduction, PGD-AT DEQ", "Yang'23", "regulated_dynamics", "er-pgdat"),
    "ris-pgdat": Row("random intermediate states, PGD-AT", "Yang'23", "regulated_dynamics", "ris-pgdat"),
    "ris-trades": Row("random intermediate states, TRADES", "Yang'23", "regulated_dynamics", "ris-trades"),
    "er-ris-pgdat": Row(
        "both: entropy reduction on the random-states DEQ", "Yang'23", "here", "mnist5k-mlp-randdepth-pgdat", "entropy"
    ),
    "r3-ris-pgdat": Row(
        "LyaDEQ R3 on the random-states DEQ", "LyaDEQ + Yang'23", "here", "mnist5k-mlp-r3-exact-ris-pgdat"
    ),
    "explicit-standard": Row("explicit 4-layer net, standard", "explicit", "here", "mnist5k-mlp-explicit-standard"),
    "explicit-pgdat": Row("explicit 4-layer net, PGD-AT", "explicit", "here", "mnist5k-mlp-explicit-pgdat"),
    "explicit-trades": Row("explicit 4-layer net, TRADES", "explicit", "here", "mnist5k-mlp-explicit-trades"),
}
#: C6: each regulated defence against the AT DEQ and the explicit net trained with the same loss.
C6 = {
    "er-pgdat": ("deq-pgdat", "explicit-pgdat"),
    "ris-pgdat": ("deq-pgdat", "explicit-pgdat"),
    "ris-trades": ("deq-trades", "explicit-trades"),
    "er-ris-pgdat": ("deq-pgdat", "explicit-pgdat"),
}


def digits(n: int):
    """The 500 (or ``n``) evaluated test digits: chapters 6 and 7's stratified subset."""
    from deqlib import data

    return data.load("mnist5k", "test").subset_and_rest(n, seed=EVAL_SEED)[0]


def _masks(report: Dict[str, Any]) -> Dict[str, Any]:
    """The per-sample robust masks and first-breaking attacks of a battery report."""
    return {str(e): {"robust": r["robust"], "broken_by": r["broken_by"]} for e, r in report["eps"].items()}


def _readout_model(row: Row, seed: int):
    from attacks_mnist5k import AVERAGED, early_index

    base = zoo.load(row.key, seed=None if seed == 0 else seed, progress=False).eval()
    if row.kind == "early":
        i = early_index(base)
        return base, (lambda g: EarlyStateClassifier(base, i, grad=g)), {"early_index": i}
    return base, (lambda g: AveragedStateClassifier(base, AVERAGED, grad=g)), {"averaged_indices": list(AVERAGED)}


def evaluate_readout(row: Row, seed: int, args) -> Dict[str, Any]:
    """The battery on the read state (phantom surrogate), PGD on its unrolled surrogate, PGD from the final state."""
    base, make, extra = _readout_model(row, seed)
    test = digits(args.n)
    x, y = test.images, test.labels
    phantom, unroll = make("phantom").eval(), make("unroll").eval()
    with quiet_convergence():
        report = evaluate.strongest_attack(phantom, x, y, EPS, preset=args.preset, budgets=args.budgets, seed=EVAL_SEED)
        extra_attacks = {
            str(e): {
                "pgd_unroll": attacks.pgd(unroll, e, steps=args.pgd_steps),
                "transfer_final_state": attacks.TransferAttack(phantom, attacks.pgd(base, e, steps=args.pgd_steps)),
            }
            for e in EPS
        }
        out = _masks(report)
        for e, atks in extra_attacks.items():
            for name, atk in atks.items():
                judge = unroll if name == "pgd_unroll" else phantom
                robust = attacks.robust_accuracy(judge, atk, (x, y), seed=EVAL_SEED, eps=float(e), norm="Linf")[
                    "robust"
                ]
                broken = [b or (None if r else name) for b, r in zip(out[e]["broken_by"], robust)]
                out[e] = {"robust": robust_under_all(out[e]["robust"], robust), "broken_by": broken}
    return {"clean_correct": report["clean_correct"], "eps": out, "battery": report, **extra}


def evaluate_entropy(row: Row, seed: int, args) -> Dict[str, Any]:
    """Input entropy reduction as released on the DEQ inside ``row.key``'s model: chapter 7's E1 / E2 / E3."""
    import regulated_dynamics as rd

    wrapped = zoo.load(row.key, seed=None if seed == 0 else seed, progress=False).eval()
    base = getattr(wrapped, "model", wrapped)  # a random-depth model's DEQ classifier
    model = EntropyReductionDefense.as_released(base, **rd.ER)
    run = rd.evaluate_one(row.label, seed, args.rd, built=(model, "entropy"))
    eps = {e: {"robust": run["E2"][e]["robust"], "broken_by": None} for e in map(str, EPS)}
    return {"clean_correct": run["E1"]["clean_correct"], "eps": eps, "positions": run["positions"], "chapter7": run}


def evaluate_battery(row: Row, seed: int, args) -> Dict[str, Any]:
    model = zoo.load(row.key, seed=None if seed == 0 else seed, progress=False).eval()
    test = digits(args.n)
    with quiet_convergence():
        report = evaluate.strongest_attack(
            model, test.images, test.labels, EPS, preset=args.preset, budgets=args.budgets, seed=EVAL_SEED
        )
    return {"clean_correct": report["clean_correct"], "eps": _masks(report), "battery": report}


def evaluate_row(name: str, seed: int, args) -> Dict[str, Any]:
    """One (row, seed) evaluated here; its result file's content."""
    row, start = ROWS[name], time.perf_counter()
    how = {"early": evaluate_readout, "averaged": evaluate_readout, "entropy": evaluate_entropy}
    out = how.get(row.kind, evaluate_battery)(row, seed, args)
    out.setdefault("positions", list(range(args.n)))
    out.update(row=name, seed=seed, n=len(out["positions"]), seconds=round(time.perf_counter() - start, 1))
    return out


def recorded(row: Row, seed: int, folder: Path) -> Optional[Dict[str, Any]]:
    """A row's (seed's) masks from the chapter that recorded it, in this driver's format; None if not there."""
    if row.source == "regulated_dynamics":
        path = folder / "regulated_dynamics" / f"{row.key}@{seed}.json"
        if not path.exists():
            return None
        run = load_runs(path.parent)[path.stem]
        eps = {e: {"robust": run["E2"][e]["robust"], "broken_by": None} for e in map(str, EPS)}
        return {"clean_correct": run["E1"]["clean_correct"], "eps": eps, "positions": run["positions"]}
    path = folder / "lyadeq_readings" / f"{row.key}@{seed}@500.json"
    if not path.exists():
        return None
    report = load_runs(path.parent)[path.stem]["report"]
    return {"clean_correct": report["clean_correct"], "eps": _masks(report), "positions": list(range(report["n"]))}


def collect(folder: Path) -> Dict[str, Dict[int, Dict[str, Any]]]:
    """Every row's finished seeds: row -> seed -> {clean_correct, eps: {e: robust, broken_by}, positions}."""
    here = load_runs(folder / "head_to_head") if (folder / "head_to_head").exists() else {}
    out: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for name, row in ROWS.items():
        for seed in SEEDS:
            got = here.get(f"{name}@{seed}") if row.source == "here" else recorded(row, seed, folder)
            if got is not None:
                out.setdefault(name, {})[seed] = got
    return out


def _arguments(args) -> None:
    """The budgets: full (500 digits, preset full, PGD-100) or --quick (tiny, written to results_quick/)."""
    import regulated_dynamics as rd

    args.n, args.preset, args.budgets, args.pgd_steps = 500, "full", None, 100
    args.rd = rd.main_arguments(quick=args.quick)
    if args.quick:
        args.n, args.preset, args.pgd_steps = 16, "reduced", 2
        args.budgets = {"square_queries": 10, "apgd_steps": 2, "fab_steps": 2, "pgd_steps": 2}


def write_summary(out_dir: Path) -> Dict[str, Any]:
    runs = collect(out_dir)
    summary = summarise(runs, ROWS, C6, EPS)
    meta = {"command": COMMAND, "eps": list(EPS), "seeds": list(SEEDS), "deqlib": deqlib.__version__}
    save_json(
        {**meta, "rows": {k: vars(v) for k, v in ROWS.items()}, "summary": summary}, out_dir / "head_to_head.json"
    )
    (out_dir / "head_to_head.md").write_text(markdown(summary, ROWS, COMMAND))
    return summary


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budgets, written to results_quick/")
    p.add_argument("--only", nargs="*", default=None, help="row names evaluated here (default: all)")
    p.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    p.add_argument("--summary", action="store_true", help="only rewrite the summary from the finished runs")
    p.add_argument("--out-dir", type=Path, default=None, help="results folder (default results/, or results_quick/)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    _arguments(args)
    out_dir = args.out_dir or HERE / ("results_quick" if args.quick else "results")
    folder = out_dir / "head_to_head"
    folder.mkdir(parents=True, exist_ok=True)
    names = [n for n in (args.only or ROWS) if ROWS[n].source == "here"]
    for seed in [] if args.summary else args.seeds:
        for name in names:
            if run_claimed(folder, f"{name}@{seed}", lambda: evaluate_row(name, seed, args)):
                write_summary(out_dir)
    write_summary(out_dir)


if __name__ == "__main__":
    main()
