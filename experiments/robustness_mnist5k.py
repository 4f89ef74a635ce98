"""DEQ vs LyaDEQ, each with standard training and with PGD-AT, on the embedded mnist5k digits (fast mode).

For each of the four models: clean accuracy, PGD-20 and AutoAttack-standard robust accuracy (L-infinity,
eps = 0.1 and 0.2) on a fixed, seeded, stratified subset of the test digits; the gradient-masking checks at
eps = 0.1; and, for the LyaDEQ models, the certificate check (fraction of solver steps that violate the
Lyapunov decrease). Results go to ``experiments/results/robustness_mnist5k.json`` and a Markdown table beside it.

Command (this machine, CPU):

    python experiments/robustness_mnist5k.py            # the recorded run
    python experiments/robustness_mnist5k.py --quick    # a smoke run: tiny budgets, nothing recorded

Every stage is resumable: trained weights are checkpointed by ``deqlib.train.fit`` under
``experiments/checkpoints/`` (not committed) and each model's evaluation is saved as soon as it is done.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict

import torch

import deqlib
from deqlib import data, evaluate
from deqlib.defenses import certificate_check, lyadeq_classifier
from deqlib.losses import PGDAT, cross_entropy
from deqlib.train import evaluate_accuracy, fit

HERE = Path(__file__).resolve().parent

# Models: the same MLP injection, cell width, solver and gradient for both; LyaDEQ adds the Lyapunov
# projection (residual-centred, so fixed points stay input dependent) and the orthogonal head.
DEQ_OPTIONS = dict(width=128, solver="anderson", max_iter=30, tol=1e-4, grad="ift")
LYA_OPTIONS = dict(center="residual", alpha=0.5, h=1.0, lyapunov_hidden=(64, 64))

TRAIN = dict(epochs=10, lr=2e-3, batch_size=64, scheduler="cosine", seed=0)
AT = dict(eps=0.2, alpha=0.05, steps=7)  # PGD-AT at the largest evaluation radius
EVAL_EPS = (0.1, 0.2)
N_EVAL = 500
SEED = 0


def build(kind: str, train: data.ImageDataset) -> torch.nn.Module:
    torch.manual_seed(SEED)
    if kind == "deq":
        return deqlib.classifier_for(train, "mlp", **DEQ_OPTIONS)
    return lyadeq_classifier(train, "mlp", **LYA_OPTIONS, **DEQ_OPTIONS)


def loss_for(training: str) -> Callable:
    return cross_entropy if training == "standard" else PGDAT(**AT)


def run_one(kind: str, training: str, train, x, y, args) -> Dict[str, Any]:
    name = f"{kind}_{training}"
    ckpt_dir = HERE / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    model = build(kind, train)
    settings = dict(TRAIN)
    if args.quick:
        settings["epochs"] = 1
    t0 = time.time()
    history = fit(
        model,
        train,
        loss_fn=loss_for(training),
        checkpoint=None if args.quick else ckpt_dir / f"{name}.pt",
        progress=not args.no_progress,
        **settings,
    )
    train_seconds = time.time() - t0
    model.eval()
    # The quick smoke run replaces AutoAttack (fixed official budget) by a 2-step APGD-CE.
    attacks = [("pgd", {"steps": 20})] + ([("apgd_ce", {"steps": 2})] if args.quick else [("autoattack", {})])
    t0 = time.time()
    report = evaluate.evaluate_robustness(model, x, y, attacks, list(EVAL_EPS), seed=SEED, batch_size=250)
    eval_seconds = time.time() - t0
    t0 = time.time()
    masking = evaluate.masking_checks(
        model, x[: args.n_masking], y[: args.n_masking], 0.1, budget=0.25 if not args.quick else 0.02, seed=SEED
    )
    masking_seconds = time.time() - t0
    out: Dict[str, Any] = {
        "model": name,
        "kind": kind,
        "training": training,
        "model_options": {**DEQ_OPTIONS, **(LYA_OPTIONS if kind == "lyadeq" else {})},
        "train_settings": {**settings, **({"pgd_at": AT} if training == "pgd_at" else {})},
        "history": history.to_dict(),
        "train_seconds": round(train_seconds, 1),
        "test_accuracy_full_1000": evaluate_accuracy(model, data.load("mnist5k", "test")),
        "robustness": report,
        "eval_seconds": round(eval_seconds, 1),
        "masking": masking,
        "masking_seconds": round(masking_seconds, 1),
        "n_masking": args.n_masking,
    }
    if kind == "lyadeq":
        cert = certificate_check(model, x[:200], steps=30)
        out["certificate"] = {k: v for k, v in cert.items() if k != "per_step"}
    return out


def summary_markdown(results: Dict[str, Any], command: str) -> str:
    lines = [
        "# Robustness on mnist5k (fast mode): DEQ vs LyaDEQ, standard training vs PGD-AT",
        "",
        f"Made by `{command}` on {results['machine']['date']} ({results['machine']['cpu']}, torch "
        f"{results['machine']['torch']}, {results['machine']['threads']} threads).",
        f"Evaluation: {N_EVAL} stratified test digits (seed {SEED}), L-infinity. AutoAttack = the standard set "
        "(APGD-CE 100 steps, APGD-T 100 steps x 9 targets, FAB-T 9 targets, Square 5000 queries), run with "
        "torchattacks' classes (`deqlib.attacks.autoattack_standard`); a sample counts as robust only if it survives "
        "every attack of the set. PGD-20: step 2.5 eps/20, one random start.",
        "",
        "| model | training | clean (1000) | clean (500) | PGD-20 eps=0.1 | AA eps=0.1 | PGD-20 eps=0.2 | AA eps=0.2 | certificate violations |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        table = r["robustness"]["table"]
        pgd = table["pgd"]["accuracy"] if "pgd" in table else [None, None]
        aa = table["autoattack"]["accuracy"] if "autoattack" in table else [None, None]
        cert = r.get("certificate")
        cert_s = f"{cert['rate']:.3f} ({cert['violations']}/{cert['steps']})" if cert else "—"
        f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(
            f"| {r['kind']} | {r['training']} | {f(r['test_accuracy_full_1000'])} | {f(r['robustness']['clean_accuracy'])} | "
            f"{f(pgd[0])} | {f(aa[0])} | {f(pgd[1])} | {f(aa[1])} | {cert_s} |"
        )
    lines += [
        "",
        "## Gradient-masking checks at eps = 0.1",
        "",
        "| model | check | passed | numbers |",
        "|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        for check, res in r["masking"]["checks"].items():
            nums = {k: v for k, v in res.items() if k not in ("passed", "name", "description")}
            text = json.dumps(nums, default=str)
            if len(text) > 300:
                text = text[:297] + "..."
            lines.append(f"| {name} | {check} | {res.get('passed')} | `{text}` |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, results not written to results/")
    parser.add_argument(
        "--only", nargs="*", default=None, help="subset of deq_standard deq_pgd_at lyadeq_standard lyadeq_pgd_at"
    )
    parser.add_argument("--n-masking", type=int, default=200)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    deqlib.set_mode("fast")
    train = data.load("mnist5k", "train")
    test = data.load("mnist5k", "test").subset(N_EVAL if not args.quick else 50, seed=SEED)
    x, y = test.tensors()
    out_dir = HERE / ("results" if not args.quick else "results_quick")
    out_dir.mkdir(exist_ok=True)
    path = out_dir / "robustness_mnist5k.json"
    results: Dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"models": {}}
    results["machine"] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
    }
    command = "python experiments/robustness_mnist5k.py" + (" --quick" if args.quick else "")
    results["command"] = command
    for kind in ("deq", "lyadeq"):
        for training in ("standard", "pgd_at"):
            name = f"{kind}_{training}"
            if args.only and name not in args.only:
                continue
            if name in results["models"] and not args.quick:
                print(f"== {name}: already evaluated, skipping (delete it from {path} to redo)")
                continue
            print(f"== {name}", flush=True)
            results["models"][name] = run_one(kind, training, train, x, y, args)
            evaluate.save_json(results, path)
            (out_dir / "robustness_mnist5k.md").write_text(summary_markdown(results, command))
            r = results["models"][name]
            print(
                json.dumps(
                    {"model": name, "table": r["robustness"]["table"], "clean": r["robustness"]["clean_accuracy"]}
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
