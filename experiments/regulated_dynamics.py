"""Chapter 7: Yang et al. 2023's two defences of DEQs, evaluated as released (E1), adaptively (E2) and black-box (E3).

Models (zoo recipes on mnist5k, fast mode; training seeds 0, 1, 2):

* ``deq-standard``, ``deq-pgdat``, ``deq-trades``: the plain MLP DEQs (the controls);
* ``er-standard``, ``er-pgdat``: input entropy reduction as released
  (:meth:`deqlib.defenses.EntropyReductionDefense.as_released`: Broyden memory carried over 4 rounds of 2 steps,
  10 signed input steps of eta per round, the last-but-one state read) on the standard / PGD-AT DEQ. Scaling (ours):
  the paper's ball eps_def = its adversarial-training radius (8/255 on CIFAR-10) and eta = eps_def / 4; here
  eps_def = 0.2 (the zoo's PGD-AT radius), eta = 0.05;
* ``ris-pgdat``, ``ris-trades``: random intermediate states (depth U{1..8} per forward, 5 damped phantom steps of
  0.5) trained with PGD-AT / TRADES beta 6 (zoo ``mnist5k-mlp-randdepth-*``); the evaluation depth chosen by PGD-10
  robust accuracy at eps 0.2 on 500 held-out test digits disjoint from the evaluated ones (the release chose it on
  the test digits: E1 does that).

Three evaluations on the same digits, L-infinity eps 0.1 and 0.2:

* E1 as released (:mod:`deqlib.evaluate.released`): PGD-10 (crafted on the undefended DEQ and transferred, for the
  entropy defence; on the still-random model, for random depth) and AutoAttack's four members whose gradient skips
  the input loop / sees a random depth, each on its own (the release reported them separately); their best single
  number and their union;
* E3 black box: Square, 5,000 queries, on the defended model (for the entropy defence E1's Square is the same attack);
* E2 adaptive: the per-sample worst case over E1, E3 and the strongest battery (``deqlib.evaluate.strongest_attack``)
  on the digits E1 and E3 left, which for the entropy defence includes its four adaptive attacks (BPDA, full
  differentiation through all 40 input steps, transfer, an entropy-aware loss; APGD with restarts). The defences are
  deterministic at evaluation (a fixed depth), so no EOT is needed.

Budget (this 2-core CPU, no GPU): 500 digits for the plain and random-depth models with the battery's ``full``
preset; the entropy defence costs about 20 solver and input steps per forward, so it gets 200 of those digits (a
stratified subset) and the battery's ``reduced`` preset (its own adaptive attacks at APGD 20 steps x 2 restarts),
with E1 and E3 at the released budgets. Reduced results are labelled. Stage ``ablation`` (seed 0, 200 digits): the
entropy defence's readout and solver memory (ours vs released vs converged), clean and under PGD-10 transfer and
BPDA-APGD, and the inference cost against a plain forward.

For random depth, E1 is judged at the depth chosen on the test digits (as released), E2 and E3 at the depth chosen on
held-out digits (E1's attacks are judged again there, as part of E2). E1 runs AutoAttack's four standard members;
the release ran its "plus" version, which adds restarts, APGD-DLR and untargeted FAB: our E1 is that much weaker,
and the gap E1 - E2 includes what those additions would have found (chapter 7 says so).

Command (workers may run at once; each (model, seed) result is one file in ``results/regulated_dynamics/``, for
the n of its model family above)::

    python experiments/regulated_dynamics.py --stage ablation
    python experiments/regulated_dynamics.py --stage main
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from _report import machine, mean_cell, pct, per_seed_cell
from _report import on_positions as _on
from _workers import claim, load_runs, run_claimed

import deqlib
from deqlib import data, evaluate, zoo
from deqlib.attacks import square
from deqlib.data.dataset import stratified_choice
from deqlib.defenses import EntropyReductionDefense, select_eval_depth
from deqlib.evaluate import claim_verdict, mcnemar, save_json, seed_summary
from deqlib.evaluate.released import attack_each, released_attacks, robust_under_all
from deqlib.solvers import quiet_convergence

HERE = Path(__file__).resolve().parent
EPS = (0.1, 0.2)
EVAL_SEED = 0
ER = {"eps": 0.2, "eta": 0.05}  # the defence's ball and step (see the module docstring)
DEPTH_EPS = 0.2  # the radius the evaluation depth is chosen at
#: name -> (zoo recipe, kind)
MODELS: Dict[str, Tuple[str, str]] = {
    "deq-standard": ("mnist5k-mlp-standard", "plain"),
    "deq-pgdat": ("mnist5k-mlp-pgdat", "plain"),
    "deq-trades": ("mnist5k-mlp-trades", "plain"),
    "ris-pgdat": ("mnist5k-mlp-randdepth-pgdat", "random_depth"),
    "ris-trades": ("mnist5k-mlp-randdepth-trades", "random_depth"),
    "er-pgdat": ("mnist5k-mlp-pgdat", "entropy"),
    "er-standard": ("mnist5k-mlp-standard", "entropy"),
}
#: defence -> (its control, the claim)
CLAIMS = {
    "er-pgdat": ("deq-pgdat", "C4: input entropy reduction improves robustness (on a PGD-AT DEQ)"),
    "er-standard": ("deq-standard", "C4: input entropy reduction improves robustness (on a standard DEQ)"),
    "ris-pgdat": ("deq-pgdat", "C5: random intermediate states improve adversarial training (PGD-AT)"),
    "ris-trades": ("deq-trades", "C5: random intermediate states improve adversarial training (TRADES)"),
}
COMMAND = (
    "python experiments/regulated_dynamics.py --stage ablation && python experiments/regulated_dynamics.py --stage main"
)
ALPHA = 0.05


def digits(n: int, n_er: int):
    """The evaluated test digits (a stratified n), the held-out rest, and the positions of the entropy defence's
    stratified n_er among the n."""
    test, rest = data.load("mnist5k", "test").subset_and_rest(n, seed=EVAL_SEED)
    er_pos = np.sort(stratified_choice(test.labels.numpy(), n_er, np.random.RandomState(EVAL_SEED)))
    return test, rest, torch.from_numpy(er_pos)


def build(name: str, seed: int):
    recipe, kind = MODELS[name]
    base = zoo.load(recipe, seed=None if seed == 0 else seed, progress=False).eval()
    if kind == "entropy":
        return EntropyReductionDefense.as_released(base, **ER), kind
    return base, kind


def evaluate_one(name: str, seed: int, args, built=None) -> Dict[str, Any]:
    """E1, E2 and E3 of model ``name`` at training seed ``seed``; ``built``: ``(model, kind)`` instead of
    :func:`build`'s (chapter 8 evaluates its combinations this way)."""
    start = time.perf_counter()
    model, kind = built or build(name, seed)
    test, rest, er_pos = digits(args.n, args.n_er)
    x, y = test.images, test.labels
    positions = er_pos if kind == "entropy" else torch.arange(len(y))
    x, y = x[positions], y[positions]
    out: Dict[str, Any] = {"name": name, "seed": seed, "n": int(len(y)), "positions": positions.tolist()}
    if kind == "random_depth":
        with quiet_convergence():
            out["depth_heldout"] = select_eval_depth(
                model, rest.images[: args.n_val], rest.labels[: args.n_val], DEPTH_EPS
            )
            out["depth_test"] = select_eval_depth(model, x, y, DEPTH_EPS)
        model.eval_depth = out["depth_test"]["depth"]  # E1: the depth the release would have chosen
    e1 = {e: released_attacks(model, e, seed=EVAL_SEED, budgets=args.released) for e in EPS}
    with quiet_convergence():
        out["E1"] = attack_each(model, e1, x, y, seed=EVAL_SEED, progress=args.progress)
        if kind == "random_depth":  # E2 and E3 judge the model at the depth chosen on held-out digits
            model.eval_depth = out["depth_heldout"]["depth"]
            same = model.eval_depth == out["depth_test"]["depth"]
            out["E1_heldout"] = out["E1"] if same else attack_each(model, e1, x, y, seed=EVAL_SEED)
            e3 = {e: {"square": _square(model, e, args)} for e in EPS}  # E1's Square saw a random depth
            out["E3"] = attack_each(model, e3, x, y, seed=EVAL_SEED)
        out["E2_battery"], pool = _battery(model, x, y, out, kind, args)
    out["E2_pool"] = pool.tolist()
    out["E2"] = _worst(out, pool)
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def _square(model, eps: float, args):
    return square(model, eps, n_queries=args.released.get("square_queries", 5000), resc_schedule=False, seed=EVAL_SEED)


def _e3(out: Dict[str, Any], e: str) -> List[bool]:
    """E3's robust mask at radius e: its own run, or E1's Square (the same attack on the defended values)."""
    if "E3" in out:
        return out["E3"]["eps"][e]["per_attack"]["square"]["robust"]
    return out["E1"]["eps"][e]["per_attack"]["aa:square"]["robust"]


def _e1_judged(out: Dict[str, Any]) -> Dict[str, Any]:
    """E1's attacks judged on the model E2 evaluates (for random depth: at the held-out depth)."""
    return out.get("E1_heldout", out["E1"])


def _battery(model, x, y, out, kind: str, args):
    """The battery on the digits robust under E1 and E3 at some radius; its result and those digits' positions."""
    pool = torch.tensor(_pool_of({**out, "n": len(y)}), dtype=torch.long)
    if pool.numel() == 0:
        return None, pool
    preset, budgets = ("reduced", args.budgets_er) if kind == "entropy" else (args.preset, args.budgets)
    report = evaluate.strongest_attack(model, x[pool], y[pool], EPS, preset=preset, budgets=budgets, seed=EVAL_SEED)
    return report, pool


def _pool_of(out: Dict[str, Any]) -> List[int]:
    """The digits the battery ran on: robust under E1 (as E2 judges it) and E3 at some radius (recorded as
    ``E2_pool`` since the first two runs; recomputed by the same rule for those)."""
    if "E2_pool" in out:
        return out["E2_pool"]
    alive = torch.zeros(out["n"], dtype=torch.bool)
    for e in map(str, EPS):
        alive |= robust_under_all(_e1_judged(out)["eps"][e]["worst_case"]["robust"], _e3(out, e))
    return alive.nonzero().flatten().tolist()


def _worst(out: Dict[str, Any], pool: torch.Tensor) -> Dict[str, Any]:
    """E2 per radius: robust under E1, E3 and the battery (the battery's mask placed back on all digits)."""
    n, res = out["n"], {}
    for e in map(str, EPS):
        battery = torch.zeros(n, dtype=torch.bool)
        if out["E2_battery"] is not None:
            battery[pool] = torch.as_tensor(out["E2_battery"]["eps"][e]["robust"])
        mask = robust_under_all(_e1_judged(out)["eps"][e]["worst_case"]["robust"], _e3(out, e), battery)
        k = int(mask.sum())
        res[e] = {"robust_accuracy": k / n, "ci95": list(evaluate.wilson_interval(k, n)), "robust": mask.tolist()}
    return res


def headline(run: Dict[str, Any], e: str) -> Dict[str, float]:
    """A run's robust accuracies at radius e: E1 best single attack, E1 union, E3, E2."""
    return {
        "E1": run["E1"]["eps"][e]["best_single"]["robust_accuracy"],
        "E1_union": run["E1"]["eps"][e]["worst_case"]["robust_accuracy"],
        "E3": float(np.mean(_e3(run, e))),
        "E2": run["E2"][e]["robust_accuracy"],
    }


def _best_mask(run: Dict[str, Any], e: str) -> List[bool]:
    best = run["E1"]["eps"][e]["best_single"]["name"]
    return run["E1"]["eps"][e]["per_attack"][best]["robust"]


def _best_on(run: Dict[str, Any], e: str, positions: List[int]) -> List[bool]:
    """The robust mask, on the digits at ``positions``, of ``run``'s E1 attack that is strongest on those digits."""
    masks = [_on(run, positions, a["robust"]) for a in run["E1"]["eps"][e]["per_attack"].values()]
    return min(masks, key=sum)


def gaps(results: Dict[str, Any]) -> Dict[str, Any]:
    """Per defended model and radius: E1 (best single) minus E2, McNemar per seed, t interval over seeds."""
    out: Dict[str, Any] = {}
    for name in CLAIMS:
        for e in map(str, EPS):
            runs = [r for r in results.values() if r["name"] == name]
            per = {r["seed"]: mcnemar(_best_mask(r, e), r["E2"][e]["robust"]) for r in runs}
            diffs = [m["difference"] for m in per.values()]
            out.setdefault(name, {})[e] = {"per_seed": per, "over_seeds": seed_summary(diffs) if diffs else None}
    return out


def claims(results: Dict[str, Any]) -> Dict[str, Any]:
    """C4 / C5 per defence, radius and evaluation: defence vs control on the same digits, McNemar per seed."""
    out: Dict[str, Any] = {}
    for name, (control, text) in CLAIMS.items():
        for e in map(str, EPS):
            for ev in ("E1", "E2"):
                per = {}
                for r in (r for r in results.values() if r["name"] == name):
                    c = results.get(f"{control}@{r['seed']}")
                    if c is None:
                        continue
                    mine = _best_mask(r, e) if ev == "E1" else r["E2"][e]["robust"]
                    if ev == "E1":  # the control's strongest single attack on the defence's digits
                        theirs = _best_on(c, e, r["positions"])
                    else:
                        theirs = _on(c, r["positions"], c["E2"][e]["robust"])
                    per[r["seed"]] = mcnemar(mine, theirs)
                diffs = [m["difference"] for m in per.values()]
                row = {"per_seed": per, "over_seeds": seed_summary(diffs) if diffs else None}
                row["verdict"] = claim_verdict(list(per.values()), ALPHA) if per else "not run"
                out.setdefault(name, {"control": control, "claim": text, "eps": {}})["eps"].setdefault(e, {})[ev] = row
    return out


def markdown(results: Dict[str, Any], ablation: Dict[str, Any]) -> str:
    m = machine()
    lines = [
        "# Regulating the neural dynamics on mnist5k: as released (E1), adaptive (E2), black box (E3)",
        "",
        f"Made by `{COMMAND}` ({m['date']}, {m['cpu']}, torch {m['torch']}). Robust accuracy in %, L-infinity. "
        "E1: the best single attack of the released evaluation; E1 union: their per-sample worst case; E3: Square "
        "5,000 queries; E2: the worst case over E1, E3 and the battery (reduced preset for er-*).",
        "",
        "| model | seed | n | clean | eps | E1 | E1 union | E3 | E2 [95 %] | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(results):
        r = results[key]
        for e in map(str, EPS):
            h, ci = headline(r, e), r["E2"][e]["ci95"]
            lines.append(
                f"| {r['name']} | {r['seed']} | {r['n']} | {pct(r['E1']['clean_accuracy'])} | {e} | {pct(h['E1'])} | "
                f"{pct(h['E1_union'])} | {pct(h['E3'])} | {pct(h['E2'])} [{pct(ci[0])}, {pct(ci[1])}] | "
                f"{r['seconds']:.0f} |"
            )
    lines += ["", "## Claims (defence minus control, points; McNemar per seed; t interval over seeds)", ""]
    lines += ["| defence | control | eps | eval | per seed | over seeds | verdict |", "|---|---|---|---|---|---|---|"]
    for name, c in claims(results).items():
        for e, evs in c["eps"].items():
            for ev, row in evs.items():
                per, mean = per_seed_cell(row["per_seed"]) or "-", mean_cell(row["over_seeds"])
                lines.append(f"| {name} | {c['control']} | {e} | {ev} | {per} | {mean} | {row['verdict']} |")
    if ablation:
        lines += ["", "## Ablation: the entropy defence's readout and memory (seed 0, PGD-AT DEQ)", ""]
        lines += [
            "| variant | clean | PGD-10 transfer eps 0.1 | BPDA-APGD eps 0.1 | s per digit |",
            "|---|---|---|---|---|",
        ]
        for v, row in ablation["variants"].items():
            lines.append(
                f"| {v} | {pct(row['clean'])} | {pct(row['transfer'])} | {pct(row['bpda'])} | {row['seconds_per_digit']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def run_ablation(args) -> Dict[str, Any]:
    """The entropy defence's variants on the PGD-AT DEQ (seed 0): clean, PGD-10 transfer, BPDA-APGD, cost."""
    from deqlib.attacks import TransferAttack, entropy_adaptive_attacks, pgd, robust_accuracy

    base = zoo.load(MODELS["er-pgdat"][0], progress=False).eval()
    test, _, er_pos = digits(args.n, args.n_er)
    x, y = test.images[er_pos], test.labels[er_pos]
    variants = {
        "ours (restart, final)": {},
        "carry, final": {"memory": "carry"},
        "restart, released": {"readout": "released"},
        "as released (carry, released)": {"memory": "carry", "readout": "released"},
        "carry, converged": {"memory": "carry", "readout": "converged"},
    }
    out: Dict[str, Any] = {"n": int(len(y)), "variants": {}}
    with quiet_convergence(), torch.no_grad():
        t0 = time.perf_counter()
        base(x)
        out["plain_seconds_per_digit"] = (time.perf_counter() - t0) / len(y)
    for label, kw in variants.items():
        d = EntropyReductionDefense(base, **ER, **kw)
        with quiet_convergence():
            t0 = time.perf_counter()
            clean = float((d.defend(x).argmax(1) == y).float().mean())
            sec = (time.perf_counter() - t0) / len(y)
            tr = robust_accuracy(d, TransferAttack(d, pgd(base, 0.1, alpha=0.025, steps=10)), (x, y))
            bpda = entropy_adaptive_attacks(d, 0.1, preset="reduced", seed=EVAL_SEED)["bpda"]
            bp = robust_accuracy(d, bpda, (x, y), eps=0.1, norm="Linf")
        out["variants"][label] = {
            "clean": clean,
            "transfer": tr["accuracy"],
            "bpda": bp["accuracy"],
            "seconds_per_digit": sec,
            "options": kw,
        }
        print(f"  {label}: clean {clean:.3f} transfer {tr['accuracy']:.3f} bpda {bp['accuracy']:.3f}", flush=True)
    return out


def tables(runs: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    """The rows the chapter shows: each run's robust accuracies, the E1 - E2 gaps and the claims' verdicts."""
    headlines = [
        {"model": r["name"], "seed": r["seed"], "n": r["n"], "eps": e, **headline(r, e)}
        for r in runs.values()
        for e in map(str, EPS)
    ]
    gap_rows = [
        {
            "defence": name,
            "eps": e,
            "per seed: E1 - E2 (p)": per_seed_cell(row["per_seed"]),
            "mean over seeds [95 % t]": mean_cell(row["over_seeds"]),
        }
        for name, by_eps in gaps(runs).items()
        for e, row in by_eps.items()
        if row["per_seed"]
    ]
    claim_rows = [
        {
            "claim": c["claim"].split(":")[0],
            "defence": name,
            "control": c["control"],
            "eps": e,
            "evaluation": ev,
            "seeds": len(row["per_seed"]),
            "defence - control, mean [95 % t]": mean_cell(row["over_seeds"]),
            "verdict": row["verdict"],
        }
        for name, c in claims(runs).items()
        for e, evs in c["eps"].items()
        for ev, row in evs.items()
        if row["per_seed"]
    ]
    return {"headlines": headlines, "gaps": gap_rows, "claims": claim_rows}


def write_summary(out_dir: Path, folder: Path, args) -> None:
    runs = load_runs(folder)
    ablation = runs.pop("ablation", None)
    for run in runs.values():
        run["E2_pool"] = _pool_of(run)
    payload = {
        "command": "python experiments/regulated_dynamics.py --quick" if args.quick else COMMAND,
        "eps": EPS,
        "budget": {
            "n": args.n,
            "n_er": args.n_er,
            "preset": args.preset,
            "preset_er": "reduced",
            "released": args.released,
            "budgets_er": args.budgets_er,
        },
        "machine": machine(),
        "deqlib": deqlib.__version__,
        "runs": runs,
        "ablation": ablation,
        "gaps": gaps(runs),
        "claims": claims(runs),
        "tables": tables(runs),
    }
    save_json(payload, out_dir / "regulated_dynamics.json")
    (out_dir / "regulated_dynamics.md").write_text(markdown(runs, ablation))


def main_arguments(quick: bool = False, progress: bool = False) -> argparse.Namespace:
    """The budgets of :func:`evaluate_one`: digits (all, of the entropy defence, held out), battery presets, the
    released attacks' budgets; ``quick``: tiny ones for a smoke test."""
    args = argparse.Namespace(n=500, n_er=200, n_val=500, preset="full", budgets=None, released={}, budgets_er=None)
    args.progress = progress
    if quick:
        args.n, args.n_er, args.n_val, args.preset = 16, 8, 16, "reduced"
        tiny = {"apgd_steps": 2, "fab_steps": 2, "pgd_steps": 2}
        args.released = {"square_queries": 10, "n_target_classes": 1, **tiny}
        args.budgets = args.budgets_er = {"square_queries": 10, **tiny}
    return args


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", choices=("ablation", "main"), default="main")
    p.add_argument("--quick", action="store_true", help="tiny budgets, written to results_quick/")
    p.add_argument("--only", nargs="*", default=None, help="model names (default: all)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--summary", action="store_true", help="only rewrite the summary from the finished runs")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out-dir", type=Path, default=None, help="results folder (default results/, or results_quick/)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    vars(args).update(vars(main_arguments(args.quick, args.progress)))
    out_dir = args.out_dir or HERE / ("results_quick" if args.quick else "results")
    folder = out_dir / "regulated_dynamics"
    folder.mkdir(parents=True, exist_ok=True)
    if args.stage == "ablation" and not args.summary and claim(folder, "ablation"):
        try:
            save_json(run_ablation(args), folder / "ablation.json")
        finally:
            (folder / "ablation.lock").unlink(missing_ok=True)
    names = args.only or list(MODELS)
    for seed in args.seeds if args.stage == "main" and not args.summary else []:
        for name in names:
            key = f"{name}@{seed}"
            if run_claimed(folder, key, lambda: evaluate_one(name, seed, args)):
                write_summary(out_dir, folder, args)
    write_summary(out_dir, folder, args)


if __name__ == "__main__":
    main()
