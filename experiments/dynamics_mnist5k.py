"""DEQs as neural dynamics on mnist5k: the readouts along the solver's iterates, standard training vs PGD-AT.

For the zoo's fast MLP DEQs "mnist5k-mlp-standard" and "mnist5k-mlp-pgdat", training seeds 0, 1, 2
(``zoo.load(name, seed=s)``), on the 1,000 test digits of mnist5k:

1. The trajectory study (Yang et al. 2023's finding). The same head on every solver iterate z_0..z_K
   (:func:`deqlib.dynamics.state_predictions`, K = 30, Anderson at tol 1e-4): accuracy and entropy per state, on
   clean digits and on adversarial ones. The attack: APGD-CE (100 steps, 1 restart, seed 0) on the model as
   deployed (the final state), with the implicit (IFT) gradient, L-infinity eps 0.1 and 0.2 — ONE documented
   strong attack, not the battery (the battery's robust accuracy is experiments/robustness_mnist5k.py). The four
   paired tests of :func:`deqlib.state_statistics.intermediate_state_tests` at the intermediate state k = 2 (z_1 =
   f(0, x) has not used the weight-tied layer's recurrence yet; the readouts settle within about 3 of the solver's
   median 8 steps, so later states are the final one) decide the finding per model and seed; they are also
   recorded at k = 1..5.
2. The readouts of Yang et al. 2022: :class:`deqlib.defenses.EarlyStateClassifier` (state 2) and
   :class:`deqlib.defenses.AveragedStateClassifier` (states 1..8): clean accuracy and accuracy on the adversarial
   digits crafted on the final state (a transfer: the "looks robust" reading; chapter 5 attacks the readout).
3. Stability: per digit, rho(J) at z* (power iteration), the Anderson residual's decay rate, the plain iteration's
   decay rate, and ‖dz*/dx‖₂ (:func:`deqlib.sensitivity.input_sensitivity`); standard vs PGD-AT paired on the
   same digits (bootstrap of the per-digit log ratio) and across seeds.
4. The fold on a trained model: along the segment from each of the first 50 digits the attack flipped (among the
   first 200) to its adversarial example (eps 0.2), 41 points: the largest rho(J), the largest jump of z*
   relative to the median jump, convergence at the deployed budget (30 steps) and at 200 steps, and a hysteresis
   test (continuation from either end, tol 1e-6: a gap above 0.01 means two equilibria coexist, a fold).

Command (this machine, CPU, one thread):

    python experiments/dynamics_mnist5k.py            # the recorded run (1,000 digits, 3 seeds)
    python experiments/dynamics_mnist5k.py --redo-fold  # recompute only part 4 of finished runs
    python experiments/dynamics_mnist5k.py --quick    # smoke run: 40 digits, seed 0, APGD 10 steps; results_quick/

Resumable: each (model, seed) result is saved to the results file as soon as it is done.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
from _report import machine

import deqlib
from deqlib import attacks, data, evaluate, zoo
from deqlib.defenses import AveragedStateClassifier, EarlyStateClassifier
from deqlib.dynamics import state_predictions
from deqlib.evaluate.statistics import seed_summary, wilson_interval
from deqlib.sensitivity import hysteresis_gap, input_sensitivity, residual_decay_rate, segment_scan
from deqlib.solvers import fixed_point, quiet_convergence
from deqlib.state_statistics import intermediate_state_tests, mean_interval

HERE = Path(__file__).resolve().parent
MODELS = {"standard": "mnist5k-mlp-standard", "pgdat": "mnist5k-mlp-pgdat"}
SEEDS = (0, 1, 2)
EPS = (0.1, 0.2)
K_MID = 2  # the intermediate state of the verdict: the first that went through the weight-tied layer twice
KS = (1, 2, 3, 4, 5)  # the tests are also recorded at these states
EARLY, AVERAGED = 2, tuple(range(1, 9))
N_FOLD, FOLD_POINTS = 50, 41
HYSTERESIS = 1e-2  # a continuation gap above this (both solves converged, tol 1e-6): two equilibria coexist
TESTS = ("entropy_above_final", "entropy_above_clean", "accuracy_below_final", "low_entropy_robust")


def _curve(r: Dict[str, Any]) -> Dict[str, Any]:
    n = r["correct"].shape[1]
    acc = [int(c.sum()) for c in r["correct"]]
    return {
        "accuracy": [a / n for a in acc],
        "accuracy_ci95": [list(wilson_interval(a, n)) for a in acc],
        "entropy_mean": r["entropy"].mean(dim=1).tolist(),
        "entropy_ci95": [mean_interval(h, n_resamples=1000)["interval"] for h in r["entropy"]],
    }


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Dict[str, Any]:
    with torch.no_grad():
        k = int((model(x).argmax(1) == y).sum())
    return {"accuracy": k / len(y), "ci95": list(wilson_interval(k, len(y)))}


def stability(model: torch.nn.Module, x: torch.Tensor) -> Dict[str, List[float]]:
    """Per digit: rho(J), Anderson and plain-iteration residual decay rates, ||dz*/dx||_2."""
    z, info = model.solve(x, record=False)
    u = model.inject(x).detach()
    with quiet_convergence():
        _, plain = fixed_point(lambda s: model.deq.cell(s, u), torch.zeros_like(z), max_iter=300, tol=1e-5)
    sens = input_sensitivity(model, x, z_star=z, generator=torch.Generator().manual_seed(0))
    return {
        "rho": model.deq.spectral_radius(u, z).tolist(),
        "anderson_rate": residual_decay_rate(info).tolist(),
        "plain_rate": residual_decay_rate(plain, skip=5).tolist(),
        "plain_converged": plain.converged.float().mean().item(),
        "sensitivity": sens["sigma"].tolist(),
        "sensitivity_converged": sens["converged"].float().mean().item(),
        "steps": info.steps.tolist(),
    }


def fold(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, n: int) -> Dict[str, Any]:
    """The first n digits the attack flipped: rho(J) and jumps along digit -> adversarial example, and hysteresis."""
    with torch.no_grad():
        flipped = ((model(x).argmax(1) == y) & (model(x_adv).argmax(1) != y)).nonzero()[:n, 0].tolist()
    rows = []
    with quiet_convergence():
        for i in flipped:
            s = segment_scan(model, x[i], x_adv[i], FOLD_POINTS)  # the deployed solver (30 steps)
            s200 = segment_scan(model, x[i], x_adv[i], FOLD_POINTS, max_iter=200)
            h = hysteresis_gap(model, x[i], x_adv[i], FOLD_POINTS, max_iter=200, tol=1e-6)
            jumps = s200["jump"][1:]
            gap = h["gap"][0][h["converged"][0]]
            rows.append(
                {
                    "digit": i,
                    "max_rho": s200["rho"].max().item(),
                    "max_jump_over_median": (jumps.max() / jumps.median().clamp_min(1e-12)).item(),
                    "converged_deployed": bool(s["converged"].all()),
                    "converged_200": bool(s200["converged"].all()),
                    "max_gap_converged": gap.max().item() if len(gap) else None,
                    "prediction_changes": int((s200["prediction"][1:] != s200["prediction"][:-1]).sum()),
                }
            )
    gaps = [r["max_gap_converged"] for r in rows if r["max_gap_converged"] is not None]
    return {
        "n": len(rows),
        "max_rho": max(r["max_rho"] for r in rows),
        "share_rho_above_1": float(np.mean([r["max_rho"] >= 1 for r in rows])),
        "median_max_jump_over_median": float(np.median([r["max_jump_over_median"] for r in rows])),
        "max_max_jump_over_median": max(r["max_jump_over_median"] for r in rows),
        "share_converged_deployed": float(np.mean([r["converged_deployed"] for r in rows])),
        "share_converged_200": float(np.mean([r["converged_200"] for r in rows])),
        "n_hysteresis": int(sum(g > HYSTERESIS for g in gaps)),
        "max_gap": max(gaps) if gaps else None,
        "rows": rows,
    }


def adversarial_head(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """APGD-CE on the first 200 digits (the first batch of the main run: the same adversarial examples)."""
    return attacks.apgd_ce(model, eps, steps=steps, seed=0, gradient="ift")(x[:200], y[:200])


def one_model(name: str, seed: int, x: torch.Tensor, y: torch.Tensor, args) -> Dict[str, Any]:
    model = zoo.load(name, seed=seed, allow_training=False)
    t0 = time.time()
    clean = state_predictions(model, x, y=y)
    out: Dict[str, Any] = {"clean": _curve(clean), "eps": {}}
    early = EarlyStateClassifier(model, EARLY)
    averaged = AveragedStateClassifier(model, AVERAGED)
    out["readouts_clean"] = {"early": _accuracy(early, x, y), "averaged": _accuracy(averaged, x, y)}
    out["stability_clean"] = stability(model, x)
    for eps in EPS:
        atk = attacks.apgd_ce(model, eps, steps=args.steps, seed=0, gradient="ift")
        x_adv = torch.cat([atk(x[i : i + 200], y[i : i + 200]) for i in range(0, len(x), 200)])
        adv = state_predictions(model, x_adv, y=y)
        tests = intermediate_state_tests(clean, adv, K_MID)
        e: Dict[str, Any] = {"adversarial": _curve(adv), "tests": tests}
        e["tests_by_k"] = {str(k): intermediate_state_tests(clean, adv, k) for k in KS}
        e["readouts"] = {"early": _accuracy(early, x_adv, y), "averaged": _accuracy(averaged, x_adv, y)}
        e["robust_final"] = adv["correct"][-1].tolist()
        e["entropy_k_adv"] = adv["entropy"][K_MID].tolist()
        if eps == max(EPS):
            e["stability_adversarial"] = stability(model, x_adv)
            e["fold"] = fold(model, x[:200], y[:200], x_adv[:200], args.n_fold)
        out["eps"][str(eps)] = e
        print(
            f"   eps {eps}: robust {e['adversarial']['accuracy'][-1]:.3f}, tests "
            + ", ".join(f"{t} {tests[t]['holds']}" for t in TESTS),
            flush=True,
        )
    out["seconds"] = round(time.time() - t0, 1)
    return out


def _ratio(a: List[float], b: List[float]) -> Dict[str, Any]:
    """Paired: the mean per-digit log ratio log(b / a) (PGD-AT over standard), with a bootstrap interval."""
    return mean_interval(np.log(np.asarray(b)) - np.log(np.asarray(a)), n_resamples=2000)


def summarise(results: Dict[str, Any]) -> Dict[str, Any]:
    runs, out = results["runs"], {"tests": {}, "stability": {}, "readouts": {}}
    for training in MODELS:
        done = [runs[k] for k in sorted(runs) if k.startswith(training + "_")]
        if not done:
            continue
        for eps in map(str, EPS):
            for t in TESTS:
                key = "auc" if t == "low_entropy_robust" else ("difference" if t == "accuracy_below_final" else "mean")
                vals = [r["eps"][eps]["tests"][t][key] for r in done if r["eps"][eps]["tests"][t][key] is not None]
                out["tests"][f"{training}/{eps}/{t}"] = {
                    "per_seed_holds": [r["eps"][eps]["tests"][t]["holds"] for r in done],
                    "seeds": seed_summary(vals) if vals else None,
                }
            for ro in ("early", "averaged"):
                out["readouts"][f"{training}/{eps}/{ro}"] = seed_summary(
                    [r["eps"][eps]["readouts"][ro]["accuracy"] for r in done]
                )
    for seed in SEEDS:
        a, b = runs.get(f"standard_seed{seed}"), runs.get(f"pgdat_seed{seed}")
        if a and b:
            sa, sb = a["stability_clean"], b["stability_clean"]
            out["stability"][f"seed{seed}"] = {
                q: {
                    "median_standard": float(np.median(sa[q])),
                    "median_pgdat": float(np.median(sb[q])),
                    **_ratio(sa[q], sb[q]),
                }
                for q in ("rho", "sensitivity", "anderson_rate")
            }
    return out


def markdown(results: Dict[str, Any]) -> str:
    m, s = results["machine"], results["summary"]
    lines = [
        "# DEQs as neural dynamics on mnist5k: the readouts along the iterations, standard vs PGD-AT",
        "",
        f"Made by `{results['command']}` ({m['date']}, {m['cpu']}, torch {m['torch']}, 1 thread)"
        + (f"; the fold section by `{results['fold_command']}`." if "fold_command" in results else "."),
        f"{results['n_eval']} test digits; zoo models `mnist5k-mlp-standard` / `mnist5k-mlp-pgdat`, seeds "
        f"{sorted({r['seed'] for r in results['runs'].values()})}. Attack: APGD-CE, {results['steps']} steps, 1 "
        "restart, IFT gradient, L-inf, on the final state (one strong attack, NOT the battery). Intermediate state "
        f"k = {K_MID}; final state K = 30. Intervals: 95 % (Wilson for accuracies, bootstrap for means / AUC, "
        "Student t across seeds).",
        "",
        f"## Per model and seed: accuracy and mean entropy at z_k (k = {K_MID}) and z_K",
        "",
        "| model | seed | eps | clean acc k / K | adv acc k / K | clean H k / K | adv H k / K |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in sorted(results["runs"]):
        r = results["runs"][key]
        c = r["clean"]
        for eps, e in r["eps"].items():
            a = e["adversarial"]
            lines.append(
                f"| {r['training']} | {r['seed']} | {eps} | {c['accuracy'][K_MID]:.3f} / {c['accuracy'][-1]:.3f} | "
                f"{a['accuracy'][K_MID]:.3f} / {a['accuracy'][-1]:.3f} | {c['entropy_mean'][K_MID]:.3f} / "
                f"{c['entropy_mean'][-1]:.3f} | {a['entropy_mean'][K_MID]:.3f} / {a['entropy_mean'][-1]:.3f} |"
            )
    lines += ["", "## The four tests (per seed: estimate [95 % interval], holds?)", ""]
    lines += ["| model | seed | eps | " + " | ".join(TESTS) + " |", "|---|---|---|" + "---|" * len(TESTS)]
    for key in sorted(results["runs"]):
        r = results["runs"][key]
        for eps, e in r["eps"].items():
            cells = []
            for t in TESTS:
                v = e["tests"][t]
                est = v.get("auc", v.get("difference", v.get("mean")))
                iv = v["interval"]
                cells.append(
                    "—" if est is None else f"{est:+.3f} [{iv[0]:+.3f}, {iv[1]:+.3f}] {'yes' if v['holds'] else 'no'}"
                )
            lines.append(f"| {r['training']} | {r['seed']} | {eps} | " + " | ".join(cells) + " |")
    lines += ["", "## Readouts of Yang et al. 2022 (accuracy; adversarial = crafted on the final state)", ""]
    lines += [
        "| model | seed | clean early / averaged | " + " | ".join(f"eps {e} early / averaged" for e in EPS) + " |",
        "|---|---|---|" + "---|" * len(EPS),
    ]
    for key in sorted(results["runs"]):
        r = results["runs"][key]
        rc = r["readouts_clean"]
        cells = [
            f"{r['eps'][str(e)]['readouts']['early']['accuracy']:.3f} / {r['eps'][str(e)]['readouts']['averaged']['accuracy']:.3f}"
            for e in EPS
        ]
        lines.append(
            f"| {r['training']} | {r['seed']} | {rc['early']['accuracy']:.3f} / {rc['averaged']['accuracy']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "## Stability on clean digits, standard vs PGD-AT (medians; mean log ratio PGD-AT / standard [95 %])",
        "",
    ]
    lines += ["| seed | rho(J) | ‖dz*/dx‖₂ | Anderson rate |", "|---|---|---|---|"]
    for seed, q in s["stability"].items():
        cells = [
            f"{v['median_standard']:.3f} vs {v['median_pgdat']:.3f}, {v['mean']:+.3f} [{v['interval'][0]:+.3f}, {v['interval'][1]:+.3f}]"
            for v in q.values()
        ]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## The fold along digit -> adversarial example (eps {max(EPS)}, {FOLD_POINTS} points, digits the attack flipped)",
        "",
    ]
    lines += [
        "| model | seed | digits | max rho(J) | share rho >= 1 | largest jump / median jump: median, max | "
        "all converged: 30 / 200 steps | hysteresis (gap > 0.01) | largest gap |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(results["runs"]):
        r = results["runs"][key]
        f = r["eps"][str(max(EPS))]["fold"]
        gap = "—" if f.get("max_gap") is None else f"{f['max_gap']:.2g}"
        lines.append(
            f"| {r['training']} | {r['seed']} | {f['n']} | {f['max_rho']:.3f} | {f['share_rho_above_1']:.2f} | "
            f"{f['median_max_jump_over_median']:.1f}, {f['max_max_jump_over_median']:.1f} | "
            f"{f.get('share_converged_deployed', float('nan')):.2f} / {f.get('share_converged_200', float('nan')):.2f} | "
            f"{f.get('n_hysteresis', '—')} | {gap} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 digits, seed 0, APGD 10 steps; results_quick/")
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--redo-fold", action="store_true", help="recompute only the fold part of finished runs")
    parser.add_argument("--wait", type=float, default=0, help="minutes to wait for a missing zoo seed")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    deqlib.set_mode("fast")
    n_eval = 40 if args.quick else 1000
    args.steps, args.n_fold = (10, 5) if args.quick else (100, N_FOLD)
    seeds = tuple(args.seeds) if args.seeds is not None else ((0,) if args.quick else SEEDS)
    x, y = (
        data.load("mnist5k", "test").subset(n_eval, seed=0).tensors()
        if args.quick
        else data.load("mnist5k", "test").tensors()
    )
    out_dir = HERE / ("results_quick" if args.quick else "results")
    path = out_dir / "dynamics_mnist5k.json"
    command = "python " + " ".join(["experiments/dynamics_mnist5k.py", *(argv if argv is not None else sys.argv[1:])])
    results: Dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if results.get("n_eval") != n_eval or results.get("steps") != args.steps:
        results = {"runs": {}}
    if args.redo_fold:  # the main command stays the one that made the rest
        results["fold_command"] = command
    else:
        results["command"] = command
    results.update(n_eval=n_eval, steps=args.steps, eps=list(EPS), k_mid=K_MID)
    results["machine" if not args.redo_fold else "fold_machine"] = machine()
    for seed in seeds:
        for training, name in MODELS.items():
            key = f"{training}_seed{seed}"
            if key in results["runs"] and args.redo_fold:
                model = zoo.load(name, seed=seed, allow_training=False)
                x_adv = adversarial_head(model, x, y, max(EPS), args.steps)
                results["runs"][key]["eps"][str(max(EPS))]["fold"] = fold(model, x[:200], y[:200], x_adv, args.n_fold)
                print(f"== {key}: fold redone", flush=True)
                results["summary"] = summarise(results)
                evaluate.save_json(results, path)
                (out_dir / "dynamics_mnist5k.md").write_text(markdown(results))
                continue
            if key in results["runs"]:
                print(f"== {key}: done already", flush=True)
                continue
            deadline = time.time() + 60 * args.wait
            while True:  # the lead trains seeds 1 and 2 into the cache: wait for them instead of training
                try:
                    zoo.load(name, seed=seed, allow_training=False)
                    break
                except zoo.ZooError:
                    if time.time() > deadline:
                        raise
                    time.sleep(30)
            print(f"== {key}", flush=True)
            results["runs"][key] = {"training": training, "seed": seed, **one_model(name, seed, x, y, args)}
            results["summary"] = summarise(results)
            evaluate.save_json(results, path)
            (out_dir / "dynamics_mnist5k.md").write_text(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
