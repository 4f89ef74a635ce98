"""Attacking DEQs on mnist5k (chapter 5): which gradient the attacker uses, ready-made vs strongest attacks, and the
early-state / averaged-state readouts, on the zoo's MLP DEQs, three training seeds each.

For each zoo model ("mnist5k-mlp-standard", "mnist5k-mlp-pgdat") and training seed 0, 1, 2 (``zoo.load(name,
seed=s)``), at L-infinity eps 0.1 on a fixed, seeded, stratified subset of the test digits:

1. every attack below runs on EVERY digit (not only on those the previous attacks left), so that each has its own
   per-sample mask and two attacks can be compared on the same digits (exact McNemar):
   - ``ready_made_pgd``: ``torchattacks.PGD(model, eps)`` at torchattacks' defaults (10 steps of 2/255, random
     start) through the DEQ's default gradient (the zoo's models: implicit, IFT) — what a user gets off the shelf;
   - ``pgd_ift``, ``pgd_phantom``, ``pgd_unroll``: PGD with 100 steps of 2.5 eps / 100 on each DEQ gradient;
   - ``intermediate_<i>`` (i in {1, S/2, S}, S the mean number of solver steps) and ``ensemble_<...>``: Yang et al.
     (2022)'s intermediate-state attacks, 100 steps, 5 damped steps of tau 0.5;
   - ``apgd_ce``: APGD-CE, 100 steps (AutoAttack's first member);
2. on the first ``--n-aa`` of those digits: AutoAttack standard (deqlib's ``autoattack_standard``: APGD-CE / APGD-T
   100 steps, 9 targets, FAB-T, Square 5000) and ``torchattacks.AutoAttack`` at its defaults (10-step APGD / FAB),
   side by side;
3. the worst case per digit over everything above;
4. the readout defences of Yang et al. (2022): the early state z_i (i chosen on TRAINING digits: the smallest i
   whose accuracy is within one point of the final state's) and the average of z_1..z_8, each attacked by PGD-100
   crafted on the undefended final state (transfer: what a ready-made evaluation does) and by attacks on the state
   actually read (PGD-100 on the phantom and on the unrolled surrogate, APGD-CE-100 on the phantom surrogate).

The seed claims of Yang et al. (2022) get verdicts: "ready-made attacks overstate DEQ robustness" (ready-made PGD
and torchattacks' AutoAttack against the worst case) and "intermediate-state attacks are stronger" (the ensemble
and the best single intermediate-state attack against PGD on the exact IFT gradient, same steps): reproduced when
the claimed direction holds with McNemar p < 0.05 for every training seed, not reproduced when it holds for none.

Command (this machine, CPU, one thread, nice):

    python experiments/attacks_mnist5k.py                  # the recorded run: 500 digits, AutoAttack on 200
    python experiments/attacks_mnist5k.py --quick  # a smoke run: tiny budgets, written to results_quick/

Resumable: each (model, seed) is saved to the results file as soon as it is done, and skipped when there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch
import torchattacks
from _report import machine, pct, seed_cell

import deqlib
from deqlib import attacks, data, dynamics, evaluate, zoo
from deqlib.defenses import AveragedStateClassifier, EarlyStateClassifier
from deqlib.evaluate import mcnemar, seed_summary, wilson_interval

HERE = Path(__file__).resolve().parent
MODELS = {"standard": "mnist5k-mlp-standard", "pgd_at": "mnist5k-mlp-pgdat"}
SEEDS = (0, 1, 2)
EPS = 0.1
N_EVAL, N_AA = 500, 200
STEPS = 100
EVAL_SEED = 0
AVERAGED = tuple(range(1, 9))
ALPHA = 0.05  # the level of the McNemar tests behind a verdict


def masks_of(model, atk, x, y, batch_size: int = 500) -> Dict[str, Any]:
    """One attack on every digit: its per-sample robust mask (clean-correct and not fooled), seeded."""
    r = attacks.robust_accuracy(model, atk, (x, y), seed=EVAL_SEED, batch_size=batch_size, eps=EPS, norm="Linf")
    return {
        "robust": r["robust"],
        "robust_accuracy": r["accuracy"],
        "ci95": r["ci95"],
        "params": r["params"],
        "seconds": round(r["seconds"], 1),
    }


def gradient_attacks(model, x, steps: int) -> Dict[str, Any]:
    """The independent attacks of part 1."""
    out: Dict[str, Any] = {"ready_made_pgd": torchattacks.PGD(model, eps=EPS)}
    for g in ("ift", "phantom", "unroll"):
        out[f"pgd_{g}"] = attacks.pgd(model, EPS, steps=steps, gradient=g)
    _, info = model.solve(x[:100])
    s = max(1, int(round(float(info.steps.float().mean()))))
    idx = sorted({1, max(1, s // 2), s})
    for i in idx:
        out[f"intermediate_{i}"] = attacks.IntermediateStateAttack(model, EPS, steps=steps, state_index=i)
    out["ensemble_" + "_".join(map(str, idx))] = attacks.EnsembleIntermediateAttack(
        model, EPS, steps=steps, state_indices=idx
    )
    out["apgd_ce"] = attacks.apgd_ce(model, EPS, steps=steps)
    return out


def early_index(model, tol: float = 0.01, dataset: str = "mnist5k") -> int:
    """The smallest i >= 1 whose accuracy on 500 TRAINING digits is within ``tol`` of the final state's."""
    x, y = data.load(dataset, "train").subset(500, seed=1).tensors()
    x, y = x.to(next(model.parameters()).device), y.to(next(model.parameters()).device)
    with torch.no_grad():
        acc = dynamics.state_predictions(model, x, model.deq.max_iter, y=y)["accuracy"]
    return next(i for i in range(1, len(acc)) if acc[i] >= acc[-1] - tol)


def readouts(model, x, y, steps: int) -> Dict[str, Any]:
    """Part 4: the early-state and averaged-state readouts under transfer and under attacks on the read state."""
    i = early_index(model)
    out: Dict[str, Any] = {"early_index": i, "averaged_indices": list(AVERAGED)}
    source = attacks.pgd(model, EPS, steps=steps)  # crafted on the final state, through its IFT gradient
    for name, make in {
        f"early_{i}": lambda g: EarlyStateClassifier(model, i, grad=g),
        "averaged": lambda g: AveragedStateClassifier(model, AVERAGED, grad=g),
    }.items():
        d = make("phantom").eval()
        runs = {
            "transfer_final_state": masks_of(d, attacks.TransferAttack(d, source), x, y),
            "pgd_phantom": masks_of(d, attacks.pgd(d, EPS, steps=steps), x, y),
            "pgd_unroll": masks_of(make("unroll").eval(), attacks.pgd(make("unroll").eval(), EPS, steps=steps), x, y),
            "apgd_ce_phantom": masks_of(d, attacks.apgd_ce(d, EPS, steps=steps), x, y),
        }
        adaptive = [runs[k]["robust"] for k in ("pgd_phantom", "pgd_unroll", "apgd_ce_phantom")]
        worst = [all(v) for v in zip(*adaptive)]
        with torch.no_grad():
            clean = (d(x).argmax(1) == y).tolist()
        out[name] = {
            "clean_accuracy": sum(clean) / len(clean),
            "runs": runs,
            "adaptive_worst": {"robust": worst, "robust_accuracy": sum(worst) / len(worst)},
            "transfer_vs_adaptive": mcnemar(runs["transfer_final_state"]["robust"], worst),
        }
        out[name]["adaptive_worst"]["ci95"] = list(wilson_interval(sum(worst), len(worst)))
    return out


def evaluate_one(name: str, seed: int, x, y, args) -> Dict[str, Any]:
    model = zoo.load(name, seed=seed).eval()
    steps = 5 if args.quick else STEPS
    runs = {k: masks_of(model, atk, x, y) for k, atk in gradient_attacks(model, x, steps).items()}
    print(f"   part 1: { ({k: round(v['robust_accuracy'], 3) for k, v in runs.items()}) }", flush=True)
    xa, ya = x[: args.n_aa], y[: args.n_aa]
    aa = {
        "autoattack_standard": masks_of(model, attacks.autoattack_standard(model, EPS), xa, ya),
        "torchattacks_autoattack_default": masks_of(
            model, torchattacks.AutoAttack(model, eps=EPS, n_classes=10, seed=EVAL_SEED), xa, ya
        ),
    }
    print(f"   part 2: { ({k: round(v['robust_accuracy'], 3) for k, v in aa.items()}) }", flush=True)
    worst = [all(v) for v in zip(*(r["robust"] for r in runs.values()))]
    worst_aa = [w and all(v) for w, *v in zip(worst[: args.n_aa], *(r["robust"] for r in aa.values()))]
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).tolist()
    return {
        "model": name,
        "seed": seed,
        "clean_accuracy": sum(clean) / len(clean),
        "clean_ci95": list(wilson_interval(sum(clean), len(clean))),
        "runs": runs,
        "autoattack": aa,
        "worst_case": {"robust": worst, "robust_accuracy": sum(worst) / len(worst), "n": len(worst)},
        "worst_case_aa": {"robust": worst_aa, "robust_accuracy": sum(worst_aa) / len(worst_aa), "n": len(worst_aa)},
        "readouts": readouts(model, x, y, steps),
    }


def _test(a: List[bool], b: List[bool]) -> Dict[str, Any]:
    """McNemar of mask a against b; ``a_stronger_attack``: a left fewer digits robust, significantly."""
    t = mcnemar(torch.tensor(a), torch.tensor(b))
    t["a_stronger"] = bool(t["difference"] < 0 and t["p_value"] < ALPHA)
    t["b_stronger"] = bool(t["difference"] > 0 and t["p_value"] < ALPHA)
    return t


def _verdict(flags: List[bool]) -> str:
    if not flags:
        return "not testable"
    return "reproduced" if all(flags) else ("not reproduced" if not any(flags) else "mixed across seeds")


def claims(run: Dict[str, Any]) -> Dict[str, Any]:
    """The per-run tests behind the two claims (a: the attack compared, b: the reference)."""
    r = run["runs"]
    inter = {k: v for k, v in r.items() if k.startswith("intermediate_")}
    best = min(inter, key=lambda k: inter[k]["robust_accuracy"])
    ens = next(k for k in r if k.startswith("ensemble_"))
    return {
        "ready_made_pgd_vs_worst": _test(r["ready_made_pgd"]["robust"], run["worst_case"]["robust"]),
        "torchattacks_aa_vs_worst": _test(
            run["autoattack"]["torchattacks_autoattack_default"]["robust"], run["worst_case_aa"]["robust"]
        ),
        "torchattacks_aa_vs_standard_aa": _test(
            run["autoattack"]["torchattacks_autoattack_default"]["robust"],
            run["autoattack"]["autoattack_standard"]["robust"],
        ),
        "pgd_ift_vs_worst": _test(r["pgd_ift"]["robust"], run["worst_case"]["robust"]),
        "ensemble_vs_pgd_ift": _test(r[ens]["robust"], r["pgd_ift"]["robust"]) | {"attack": ens},
        "best_intermediate_vs_pgd_ift": _test(r[best]["robust"], r["pgd_ift"]["robust"]) | {"attack": best},
        "ensemble_vs_pgd_phantom": _test(r[ens]["robust"], r["pgd_phantom"]["robust"]) | {"attack": ens},
    }


def _readout_key(run: Dict[str, Any], readout: str) -> str:
    return f"early_{run['readouts']['early_index']}" if readout == "early" else readout


def summarise(results: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"by_model": {}, "verdicts": {}}
    for label in MODELS:
        done = [v for k, v in sorted(results["runs"].items()) if v["label"] == label]
        if not done:
            continue
        keys = list(done[0]["runs"])
        entry = {"seeds": [d["seed"] for d in done], "clean": seed_summary([d["clean_accuracy"] for d in done])}
        for k in keys:
            entry[k] = seed_summary([d["runs"][k]["robust_accuracy"] for d in done])
        for k in ("autoattack_standard", "torchattacks_autoattack_default"):
            entry[k] = seed_summary([d["autoattack"][k]["robust_accuracy"] for d in done])
        entry["worst_case"] = seed_summary([d["worst_case"]["robust_accuracy"] for d in done])
        entry["worst_case_aa"] = seed_summary([d["worst_case_aa"]["robust_accuracy"] for d in done])
        for ro in ("early", "averaged"):
            pick = [d["readouts"][_readout_key(d, ro)] for d in done]
            entry[f"{ro}_transfer"] = seed_summary([p["runs"]["transfer_final_state"]["robust_accuracy"] for p in pick])
            entry[f"{ro}_adaptive"] = seed_summary([p["adaptive_worst"]["robust_accuracy"] for p in pick])
        out["by_model"][label] = entry
        tests = [d["claims"] for d in done]
        out["verdicts"][label] = {
            "ready_made_overstates (ready-made PGD vs worst case)": _verdict(
                [t["ready_made_pgd_vs_worst"]["b_stronger"] for t in tests]
            ),
            "ready_made_overstates (torchattacks AutoAttack vs worst case)": _verdict(
                [t["torchattacks_aa_vs_worst"]["b_stronger"] for t in tests]
            ),
            "intermediate_stronger (ensemble vs PGD-IFT)": _verdict(
                [t["ensemble_vs_pgd_ift"]["a_stronger"] for t in tests]
            ),
            "intermediate_stronger (best single state vs PGD-IFT)": _verdict(
                [t["best_intermediate_vs_pgd_ift"]["a_stronger"] for t in tests]
            ),
        }
    return out


def _ci(entry: Dict[str, Any]) -> str:
    k, n = sum(entry["robust"]), len(entry["robust"])
    lo, hi = wilson_interval(k, n)
    return f"{pct(k / n)} [{pct(lo)}, {pct(hi)}]"


def markdown(results: Dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Attacking DEQs on mnist5k (chapter 5): gradients, ready-made attacks, readout defences",
        "",
        f"Made by `{results['command']}` ({m['date']}, {m['cpu']}, torch {m['torch']}, {m['threads']} thread(s))"
        + "".join(f"; runs {', '.join(g['runs'])} by `{g['command']}`, merged" for g in results.get("merged", []))
        + ".",
        f"Zoo models {', '.join(MODELS.values())}, training seeds {list(SEEDS)}; L-infinity eps {EPS}; "
        f"{results['n_eval']} stratified test digits (seed {EVAL_SEED}); AutoAttack on the first {results['n_aa']}. "
        f"Every attack runs on every digit (independent masks). PGD / intermediate / APGD-CE: {results['steps']} steps; "
        "ready-made PGD: torchattacks.PGD defaults (10 steps of 2/255) through the model's IFT gradient. "
        "Robust accuracy in %, Wilson 95 % interval in brackets; across seeds mean ± sd [t 95 % interval].",
        "",
    ]
    for label, entry in results["summary"]["by_model"].items():
        lines += [
            f"## {label} ({MODELS[label]}): across seeds {entry['seeds']}",
            "",
            "| attack | robust accuracy |",
            "|---|---|",
        ]
        for k, v in entry.items():
            if k != "seeds":
                lines.append(f"| {k} | {seed_cell(v)} |")
        lines += [""]
    lines += ["## Per run (robust accuracy, Wilson 95 %)", ""]
    for key, run in sorted(results["runs"].items()):
        cells = [f"{k} {_ci(v)}" for k, v in run["runs"].items()]
        cells += [f"{k} {_ci(v)}" for k, v in run["autoattack"].items()]
        cells += [f"worst case {_ci(run['worst_case'])}", f"worst case with AutoAttack {_ci(run['worst_case_aa'])}"]
        lines.append(f"- {key} (clean {pct(run['clean_accuracy'])}): " + "; ".join(cells))
    lines += [
        "",
        "## McNemar tests behind the verdicts (a vs b: digits only a left robust / only b left robust, p)",
        "",
    ]
    lines += ["| run | test | a only | b only | p |", "|---|---|---|---|---|"]
    for key, run in sorted(results["runs"].items()):
        for name, t in run["claims"].items():
            lines.append(
                f"| {key} | {name} {t.get('attack', '')} | {t['a_only']} | {t['b_only']} | {t['p_value']:.2g} |"
            )
    lines += ["", "## Readout defences: transfer from the final state vs attacks on the state read", ""]
    lines += ["| run | readout | clean | transfer | adaptive worst case | McNemar p |", "|---|---|---|---|---|---|"]
    for key, run in sorted(results["runs"].items()):
        ro = run["readouts"]
        for name in ("early", "averaged"):
            e = ro[_readout_key(run, name)]
            lines.append(
                f"| {key} | {_readout_key(run, name)} | {pct(e['clean_accuracy'])} | {_ci(e['runs']['transfer_final_state'])} | "
                f"{_ci(e['adaptive_worst'])} | {e['transfer_vs_adaptive']['p_value']:.2g} |"
            )
    lines += ["", "## Verdicts (McNemar p < 0.05 in the claimed direction for every seed: reproduced)", ""]
    for label, v in results["summary"]["verdicts"].items():
        for claim, verdict in v.items():
            lines.append(f"- {label}: {claim}: **{verdict}**")
    return "\n".join(lines) + "\n"


def merge(results: Dict[str, Any], path: Path, other: Path, command: str) -> int:
    """Add the runs of ``other`` (same budgets, e.g. seeds run by a parallel process) to ``results`` and save."""
    theirs = json.loads(other.read_text())
    for key in ("n_eval", "n_aa", "steps", "eps"):
        if theirs.get(key) != results.get(key):
            raise SystemExit(f"merge: {other} has {key} = {theirs.get(key)}, this file {results.get(key)}")
    added = sorted(set(theirs["runs"]) - set(results["runs"]))
    results["runs"].update({k: theirs["runs"][k] for k in added})
    results["merged"] = results.get("merged", []) + [{"runs": added, "command": theirs["command"], "by": command}]
    results["summary"] = summarise(results)
    evaluate.save_json(results, path)
    path.with_suffix(".md").write_text(markdown(results))
    print(f"merged {added} from {other}")
    return 0


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, written to results_quick/")
    parser.add_argument("--n-eval", type=int, default=None, help=f"test digits (default {N_EVAL})")
    parser.add_argument("--n-aa", type=int, default=None, help=f"digits for AutoAttack (default {N_AA})")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help=f"training seeds (default {SEEDS})")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", default=None, help="write here instead of results/ (a parallel share of seeds)")
    parser.add_argument("--merge", default=None, help="merge the runs of another results file into this one, and stop")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    deqlib.set_mode("fast")
    args.n_eval = args.n_eval or (24 if args.quick else N_EVAL)
    args.n_aa = min(args.n_aa or (8 if args.quick else N_AA), args.n_eval)
    seeds = tuple(args.seeds) if args.seeds is not None else ((0,) if args.quick else SEEDS)
    x, y = data.load("mnist5k", "test").subset(args.n_eval, seed=EVAL_SEED).tensors()
    out_dir = Path(args.out_dir) if args.out_dir else HERE / ("results_quick" if args.quick else "results")
    path = out_dir / "attacks_mnist5k.json"
    command = "python " + " ".join(["experiments/attacks_mnist5k.py", *(argv if argv is not None else sys.argv[1:])])
    results: Dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if args.merge:
        return merge(results, path, Path(args.merge), command)
    steps = 5 if args.quick else STEPS
    same = results.get("n_eval") == args.n_eval and results.get("n_aa") == args.n_aa and results.get("steps") == steps
    if not same or "runs" not in results:
        results = {"runs": {}}  # another budget: start afresh rather than mix budgets in one table
    results.update(command=command, n_eval=args.n_eval, n_aa=args.n_aa, steps=steps, eps=EPS)
    results["machine"] = machine()
    for seed in seeds:
        for label, name in MODELS.items():
            key = f"{label}_seed{seed}"
            if key in results["runs"]:
                print(f"== {key}: already evaluated (delete it from {path} to redo)", flush=True)
                continue
            print(f"== {key}: {name} seed {seed}", flush=True)
            t0 = time.time()
            run = evaluate_one(name, seed, x, y, args)
            run.update(label=label, seconds=round(time.time() - t0, 1))
            run["claims"] = claims(run)
            results["runs"][key] = run
            results["summary"] = summarise(results)
            out_dir.mkdir(parents=True, exist_ok=True)
            evaluate.save_json(results, path)
            (out_dir / "attacks_mnist5k.md").write_text(markdown(results))
            print(
                f"== {key}: done in {run['seconds']} s; worst case {run['worst_case']['robust_accuracy']:.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
