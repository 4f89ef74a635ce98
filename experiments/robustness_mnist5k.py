"""DEQ robustness on the embedded mnist5k digits, standard training vs PGD-AT, under the strongest-attack battery.

For each training (standard cross-entropy, PGD-AT at eps 0.2) and each of three training seeds: train the fast-mode
MLP DEQ, then evaluate it with :func:`deqlib.evaluate.strongest_attack` (the per-sample worst case over AutoAttack
standard, PGD under each DEQ gradient, the intermediate-state and ensemble attacks and Square) at L-infinity
eps 0.1 and 0.2 on a fixed, seeded, stratified subset of the test digits. Every robust accuracy comes with its Wilson
95 % interval; across seeds, the mean, standard deviation and a t interval; standard vs PGD-AT is compared on the same
digits with McNemar's exact test for each seed.

LyaDEQ is NOT in this table: the residual-centred LyaDEQ of the earlier version of this experiment computes the
nominal DEQ's function (its Lyapunov network gets an exactly zero gradient), so it is no defence; which reading of
the paper could be one is the subject of chapter 6.

Command (this machine, CPU, one thread):

    python experiments/robustness_mnist5k.py                  # the recorded run (preset "full", 200 digits)
    python experiments/robustness_mnist5k.py --quick          # a smoke run: tiny budgets, written to results_quick/

Every stage is resumable: weights are checkpointed by ``deqlib.train.fit`` under ``experiments/checkpoints/`` (not
committed) and each (model, seed) evaluation is saved to the results file as soon as it is done.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch
from _report import machine, pct, seed_cell

import deqlib
from deqlib import data, evaluate
from deqlib.evaluate.statistics import mcnemar, seed_summary
from deqlib.losses import PGDAT, cross_entropy
from deqlib.train import evaluate_accuracy, fit

HERE = Path(__file__).resolve().parent

DEQ_OPTIONS = dict(width=128, solver="anderson", max_iter=30, tol=1e-4, grad="ift")
TRAIN = dict(epochs=10, lr=2e-3, batch_size=64, scheduler="cosine")
AT = dict(eps=0.2, alpha=0.05, steps=7)  # PGD-AT at the largest evaluation radius
TRAININGS = ("standard", "pgd_at")
SEEDS = (0, 1, 2)
EVAL_EPS = (0.1, 0.2)
N_EVAL = 200
EVAL_SEED = 0


def loss_for(training: str) -> Callable:
    return cross_entropy if training == "standard" else PGDAT(**AT)


def train_one(training: str, seed: int, train: data.ImageDataset, args) -> tuple:
    """The trained model of (training, seed), from its checkpoint when it exists; and its training record."""
    torch.manual_seed(seed)
    model = deqlib.classifier_for(train, "mlp", **DEQ_OPTIONS)
    settings = dict(TRAIN, seed=seed, epochs=1 if args.quick else TRAIN["epochs"])
    ckpt = None if args.quick else HERE / "checkpoints" / f"deq_{training}_seed{seed}.pt"
    t0 = time.time()
    history = fit(
        model, train, loss_fn=loss_for(training), checkpoint=ckpt, resume=True, progress=args.progress, **settings
    )
    record = {
        "train_settings": {**settings, **({"pgd_at": AT} if training == "pgd_at" else {})},
        "history": history.to_dict(),
        "train_seconds": round(time.time() - t0, 1),
    }
    return model.eval(), record


def evaluate_one(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> Dict[str, Any]:
    report = evaluate.strongest_attack(
        model, x, y, list(EVAL_EPS), preset=args.preset, seed=EVAL_SEED, batch_size=100, progress=args.progress
    )
    report["test_accuracy_full_1000"] = evaluate_accuracy(model, data.load("mnist5k", "test"))
    return report


def summarise(results: Dict[str, Any]) -> Dict[str, Any]:
    """Across seeds per training and radius; standard vs PGD-AT per seed (McNemar on the same digits)."""
    out: Dict[str, Any] = {"by_training": {}, "paired": {}}
    runs = results["runs"]
    for training in TRAININGS:
        done = [runs[k] for k in sorted(runs) if runs[k]["training"] == training]
        if not done:
            continue
        entry = {
            "seeds": [r["seed"] for r in done],
            "clean": seed_summary([r["report"]["clean_accuracy"] for r in done]),
        }
        for eps in map(str, EVAL_EPS):
            entry[f"eps={eps}"] = seed_summary([r["report"]["eps"][eps]["robust_accuracy"] for r in done])
        out["by_training"][training] = entry
    for seed in SEEDS:
        a, b = runs.get(f"standard_seed{seed}"), runs.get(f"pgd_at_seed{seed}")
        if a and b:
            out["paired"][f"seed{seed}"] = {
                eps: mcnemar(a["report"]["eps"][eps]["robust"], b["report"]["eps"][eps]["robust"])
                for eps in map(str, EVAL_EPS)
            }
    return out


def markdown(results: Dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# DEQ robustness on mnist5k (fast mode): standard training vs PGD-AT, strongest-attack battery",
        "",
        f"Made by `{results['command']}` ({m['date']}, {m['cpu']}, torch {m['torch']}, {m['threads']} thread(s)).",
        f"Evaluation: {results['n_eval']} stratified test digits (seed {EVAL_SEED}), L-infinity, battery preset "
        f"`{results['preset']}`{' (REDUCED budgets)' if results['preset'] != 'full' else ''}: the per-sample worst case "
        "over every attack of `deqlib.evaluate.strongest_attack`. Robust accuracy in %, Wilson 95 % interval in "
        f"brackets. Model: MLP DEQ width 128, Anderson (max_iter 30, tol 1e-4), IFT; {results['epochs']} epoch(s); PGD-AT "
        "eps 0.2, 7 steps of 0.05; clean (1000) is the whole test split.",
        "",
        "| training | seed | clean (1000) | clean (n) | "
        + " | ".join(f"eps {e}" for e in EVAL_EPS)
        + " | non-converged (fwd / adj) |",
        "|---|---|---|---|" + "---|" * len(EVAL_EPS) + "---|",
    ]
    for key in sorted(results["runs"]):
        r = results["runs"][key]
        rep = r["report"]
        cells = []
        for eps in map(str, EVAL_EPS):
            e = rep["eps"][eps]
            cells.append(f"{pct(e['robust_accuracy'])} [{pct(e['ci95'][0])}, {pct(e['ci95'][1])}]")
        conv = rep["eps"][str(EVAL_EPS[0])].get("convergence", {})
        fwd, adj = conv.get("forward_nonconverged_fraction"), conv.get("backward_nonconverged_fraction")
        lines.append(
            f"| {r['training']} | {r['seed']} | {pct(rep['test_accuracy_full_1000'])} | {pct(rep['clean_accuracy'])} | "
            + " | ".join(cells)
            + f" | {pct(fwd)} / {pct(adj)} |"
        )
    lines += ["", "## Across training seeds (mean ± sd, t 95 % interval)", ""]
    lines += [
        "| training | clean (n) | " + " | ".join(f"eps {e}" for e in EVAL_EPS) + " |",
        "|---|---|" + "---|" * len(EVAL_EPS),
    ]
    for training, entry in results["summary"]["by_training"].items():
        row = [entry["clean"]] + [entry[f"eps={e}"] for e in EVAL_EPS]
        text = [seed_cell(s) for s in row]
        lines.append(f"| {training} ({len(entry['seeds'])} seeds) | " + " | ".join(text) + " |")
    if results["summary"]["paired"]:
        lines += ["", "## Standard vs PGD-AT on the same digits (McNemar, exact)", ""]
        lines += ["| seed | eps | only standard robust | only PGD-AT robust | p |", "|---|---|---|---|---|"]
        for seed, by_eps in results["summary"]["paired"].items():
            for eps, t in by_eps.items():
                lines.append(f"| {seed} | {eps} | {t['a_only']} | {t['b_only']} | {t['p_value']:.2g} |")
    lines += ["", "## Which attack broke each sample (counts, per run and radius)", ""]
    for key in sorted(results["runs"]):
        for eps, e in results["runs"][key]["report"]["eps"].items():
            counts: Dict[str, int] = {}
            for name in e["broken_by"]:
                if name is not None:
                    counts[name] = counts.get(name, 0) + 1
            lines.append(f"- {key}, eps {eps}: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, written to results_quick/")
    parser.add_argument("--preset", default=None, help="battery preset (default: full; reduced with --quick)")
    parser.add_argument("--n-eval", type=int, default=None, help=f"test digits (default {N_EVAL})")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help=f"training seeds (default {SEEDS})")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.preset = args.preset or ("reduced" if args.quick else "full")
    n_eval = args.n_eval or (20 if args.quick else N_EVAL)
    seeds = tuple(args.seeds) if args.seeds is not None else ((0,) if args.quick else SEEDS)
    deqlib.set_mode("fast")
    train = data.load("mnist5k", "train")
    x, y = data.load("mnist5k", "test").subset(n_eval, seed=EVAL_SEED).tensors()
    out_dir = HERE / ("results_quick" if args.quick else "results")
    path = out_dir / "robustness_mnist5k.json"
    command = "python " + " ".join(["experiments/robustness_mnist5k.py", *(argv if argv is not None else sys.argv[1:])])
    results: Dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if results.get("preset") != args.preset or results.get("n_eval") != n_eval or "runs" not in results:
        results = {"runs": {}}  # another budget: start afresh rather than mix budgets in one table
    results.update(command=command, preset=args.preset, n_eval=n_eval, eval_eps=list(EVAL_EPS))
    results["epochs"] = 1 if args.quick else TRAIN["epochs"]
    results["machine"] = machine()
    for seed in seeds:
        for training in TRAININGS:
            key = f"{training}_seed{seed}"
            if key in results["runs"]:
                print(f"== {key}: already evaluated (delete it from {path} to redo)", flush=True)
                continue
            print(f"== {key}: training", flush=True)
            model, record = train_one(training, seed, train, args)
            print(f"== {key}: battery ({args.preset}) on {n_eval} digits", flush=True)
            report = evaluate_one(model, x, y, args)
            results["runs"][key] = {"training": training, "seed": seed, **record, "report": report}
            results["summary"] = summarise(results)
            evaluate.save_json(results, path)
            (out_dir / "robustness_mnist5k.md").write_text(markdown(results))
            accs = {eps: round(e["robust_accuracy"], 3) for eps, e in report["eps"].items()}
            print(f"== {key}: clean {report['clean_accuracy']:.3f}, robust {accs}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
