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

Full mode (``--dataset mnist``, ``svhn`` or ``cifar10``, on a GPU): the same rows on the zoo's full conv recipes
(trained on first use; ``torchrun --nproc_per_node=N -m deqlib.zoo train NAME`` trains one on several GPUs first),
every row evaluated here, 1,000 test images, radii 0.1 / 0.2 / 0.3 on MNIST and 8/255, 16/255 on SVHN and CIFAR-10;
the LyaDEQ readings have fast-mode recipes only and are left out. Entropy reduction is judged by the battery with
its adaptive attacks, random intermediate states at the depth chosen on held-out test images.

Command (workers may run at once; each (row, seed) evaluated here is one file in ``results/head_to_head/``, or
``results/head_to_head_<dataset>/``)::

    python experiments/head_to_head.py
    python experiments/head_to_head.py --summary   # only rewrite results/head_to_head.{json,md}
    python experiments/head_to_head.py --dataset cifar10 --device cuda   # full mode
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from _head_to_head_report import markdown, summarise
from _workers import load_runs, run_claimed
from tqdm.auto import tqdm

import deqlib
from deqlib import attacks, evaluate, zoo
from deqlib.defenses import AveragedStateClassifier, EarlyStateClassifier, EntropyReductionDefense
from deqlib.evaluate import save_json
from deqlib.evaluate.released import robust_under_all
from deqlib.solvers import quiet_convergence

HERE = Path(__file__).resolve().parent
EVAL_SEED = 0
SEEDS = (0, 1, 2)
COMMAND = "python experiments/head_to_head.py"


@dataclass(frozen=True)
class Row:
    """One line of the table: the mnist5k zoo ``recipe``, how it is defended and attacked (``kind``: ``"battery"``,
    ``"early"`` / ``"averaged"`` readouts, ``"entropy"`` reduction on its DEQ, ``"random_depth"`` at the depth chosen
    on held-out digits), and, for fast mode, the chapter that recorded it (``"regulated_dynamics:<run name>"`` or
    ``"lyadeq_readings"``) or None (evaluated here)."""

    label: str
    family: str
    recipe: str
    kind: str = "battery"
    recorded: Optional[str] = None

    def recipe_for(self, dataset: str) -> str:
        """The zoo recipe of this row on ``dataset`` (the full conv recipes off mnist5k)."""
        return self.recipe if dataset == "mnist5k" else self.recipe.replace("mnist5k-mlp-", f"{dataset}-conv-")


def _rd(name: str) -> str:
    return f"regulated_dynamics:{name}"


_LR = "lyadeq_readings"
ROWS: Dict[str, Row] = {
    "deq-standard": Row("DEQ, standard training", "DEQ", "mnist5k-mlp-standard", recorded=_rd("deq-standard")),
    "deq-pgdat": Row("DEQ, PGD-AT", "DEQ", "mnist5k-mlp-pgdat", recorded=_rd("deq-pgdat")),
    "deq-trades": Row("DEQ, TRADES", "DEQ", "mnist5k-mlp-trades", recorded=_rd("deq-trades")),
    "early-pgdat": Row("early-state readout, PGD-AT DEQ", "readout", "mnist5k-mlp-pgdat", "early"),
    "averaged-pgdat": Row("averaged-state readout, PGD-AT DEQ", "readout", "mnist5k-mlp-pgdat", "averaged"),
    "r1-standard": Row("LyaDEQ R1, standard", "LyaDEQ", "mnist5k-mlp-r1-lyadeq-standard", recorded=_LR),
    "r1-pgdat": Row("LyaDEQ R1, PGD-AT", "LyaDEQ", "mnist5k-mlp-r1-lyadeq-pgdat", recorded=_LR),
    "r3-exact-standard": Row("LyaDEQ R3 exact, standard", "LyaDEQ", "mnist5k-mlp-r3-exact-standard", recorded=_LR),
    "r3-exact-pgdat": Row("LyaDEQ R3 exact, PGD-AT", "LyaDEQ", "mnist5k-mlp-r3-exact-pgdat", recorded=_LR),
    "r3-detached-standard": Row(
        "LyaDEQ R3 detached, standard", "LyaDEQ", "mnist5k-mlp-r3-detached-standard", recorded=_LR
    ),
    "r3-detached-pgdat": Row("LyaDEQ R3 detached, PGD-AT", "LyaDEQ", "mnist5k-mlp-r3-detached-pgdat", recorded=_LR),
    "er-standard": Row(
        "entropy reduction, standard DEQ", "Yang'23", "mnist5k-mlp-standard", "entropy", _rd("er-standard")
    ),
    "er-pgdat": Row("entropy reduction, PGD-AT DEQ", "Yang'23", "mnist5k-mlp-pgdat", "entropy", _rd("er-pgdat")),
    "ris-pgdat": Row(
        "random intermediate states, PGD-AT", "Yang'23", "mnist5k-mlp-randdepth-pgdat", "random_depth", _rd("ris-pgdat")
    ),
    "ris-trades": Row(
        "random intermediate states, TRADES",
        "Yang'23",
        "mnist5k-mlp-randdepth-trades",
        "random_depth",
        _rd("ris-trades"),
    ),
    "er-ris-pgdat": Row(
        "both: entropy reduction on the random-states DEQ", "Yang'23", "mnist5k-mlp-randdepth-pgdat", "entropy"
    ),
    "r3-ris-pgdat": Row("LyaDEQ R3 on the random-states DEQ", "LyaDEQ + Yang'23", "mnist5k-mlp-r3-exact-ris-pgdat"),
    "explicit-standard": Row("explicit 4-layer net, standard", "explicit", "mnist5k-mlp-explicit-standard"),
    "explicit-pgdat": Row("explicit 4-layer net, PGD-AT", "explicit", "mnist5k-mlp-explicit-pgdat"),
    "explicit-trades": Row("explicit 4-layer net, TRADES", "explicit", "mnist5k-mlp-explicit-trades"),
}
#: C6: each regulated defence against the AT DEQ and the explicit net trained with the same loss.
C6 = {
    "er-pgdat": ("deq-pgdat", "explicit-pgdat"),
    "ris-pgdat": ("deq-pgdat", "explicit-pgdat"),
    "ris-trades": ("deq-trades", "explicit-trades"),
    "er-ris-pgdat": ("deq-pgdat", "explicit-pgdat"),
}


#: The radii per data set: the papers' MNIST radii (0.3 where affordable: the full MNIST run), 8/255 and twice it on
#: SVHN and CIFAR-10.
EPS_BY_DATASET = {
    "mnist5k": (0.1, 0.2),
    "mnist": (0.1, 0.2, 0.3),
    "svhn": (8 / 255, 16 / 255),
    "cifar10": (8 / 255, 16 / 255),
}


def digits(args):
    """The evaluated test images (a stratified n: chapters 6 and 7's 500 on mnist5k) and the held-out rest."""
    from deqlib import data

    return data.load(args.dataset, "test").subset_and_rest(args.n, seed=EVAL_SEED)


def _load(recipe: str, seed: int, args):
    return zoo.load(recipe, seed=None if seed == 0 else seed, progress=False, device=args.device).eval()


def _battery(model, x, y, args) -> Dict[str, Any]:
    with quiet_convergence():
        return evaluate.strongest_attack(
            model, x, y, args.eps, preset=args.preset, budgets=args.budgets, seed=EVAL_SEED
        )


def _masks(report: Dict[str, Any]) -> Dict[str, Any]:
    """The per-sample robust masks and first-breaking attacks of a battery report."""
    return {str(e): {"robust": r["robust"], "broken_by": r["broken_by"]} for e, r in report["eps"].items()}


def evaluate_battery(row: Row, seed: int, args, model=None) -> Dict[str, Any]:
    """The battery (with the model's own adaptive attacks) on the evaluated digits."""
    model = model if model is not None else _load(row.recipe_for(args.dataset), seed, args)
    test, _ = digits(args)
    report = _battery(model, test.images, test.labels, args)
    return {"clean_correct": report["clean_correct"], "eps": _masks(report), "battery": report}


def evaluate_readout(row: Row, seed: int, args) -> Dict[str, Any]:
    """The battery on the read state (phantom surrogate), PGD on its unrolled surrogate, PGD from the final state."""
    from attacks_mnist5k import AVERAGED, early_index

    base = _load(row.recipe_for(args.dataset), seed, args)
    if row.kind == "early":
        i = early_index(base, dataset=args.dataset)
        make, extra = (lambda g: EarlyStateClassifier(base, i, grad=g)), {"early_index": i}
    else:
        make, extra = (lambda g: AveragedStateClassifier(base, AVERAGED, grad=g)), {"averaged_indices": list(AVERAGED)}
    test, _ = digits(args)
    x, y = test.images, test.labels
    phantom, unroll = make("phantom").eval(), make("unroll").eval()
    report = _battery(phantom, x, y, args)
    out = _masks(report)
    with quiet_convergence():
        for e in args.eps:
            more = {
                "pgd_unroll": (unroll, attacks.pgd(unroll, e, steps=args.pgd_steps)),
                "transfer_final_state": (
                    phantom,
                    attacks.TransferAttack(phantom, attacks.pgd(base, e, steps=args.pgd_steps)),
                ),
            }
            for name, (judge, atk) in more.items():
                robust = attacks.robust_accuracy(judge, atk, (x, y), seed=EVAL_SEED, eps=e, norm="Linf")["robust"]
                m = out[str(e)]
                broken = [b or (None if r else name) for b, r in zip(m["broken_by"], robust)]
                out[str(e)] = {"robust": robust_under_all(m["robust"], robust), "broken_by": broken}
    return {"clean_correct": report["clean_correct"], "eps": out, "battery": report, **extra}


def _entropy_defence(row: Row, seed: int, args):
    """Input entropy reduction as released on the DEQ inside the row's model (a random-depth model's DEQ
    classifier), its ball the data set's adversarial-training radius and its step a quarter of it (chapter 7)."""
    wrapped = _load(row.recipe_for(args.dataset), seed, args)
    at = zoo.get(f"{args.dataset}-{'mlp' if args.dataset == 'mnist5k' else 'conv'}-pgdat").loss
    return EntropyReductionDefense.as_released(getattr(wrapped, "model", wrapped), eps=at["eps"], eta=at["eps"] / 4)


def evaluate_entropy(row: Row, seed: int, args) -> Dict[str, Any]:
    """mnist5k: chapter 7's E1 / E2 / E3 on its 200 digits (comparable with its recorded rows); full mode: the
    battery, whose adaptive attacks are the defence's own (BPDA, full differentiation, transfer, entropy-aware)."""
    model = _entropy_defence(row, seed, args)
    if args.dataset != "mnist5k":
        return evaluate_battery(row, seed, args, model=model)
    import regulated_dynamics as rd

    run = rd.evaluate_one(row.label, seed, args.rd, built=(model, "entropy"))
    eps = {e: {"robust": run["E2"][e]["robust"], "broken_by": None} for e in map(str, args.eps)}
    return {"clean_correct": run["E1"]["clean_correct"], "eps": eps, "positions": run["positions"], "chapter7": run}


def evaluate_random_depth(row: Row, seed: int, args) -> Dict[str, Any]:
    """Random intermediate states at the depth chosen on held-out images (PGD-10 at the largest radius), then the
    battery."""
    from deqlib.defenses import select_eval_depth

    model = _load(row.recipe_for(args.dataset), seed, args)
    _, rest = digits(args)
    with quiet_convergence():
        dev = next(model.parameters()).device
        held = rest.images[: args.n].to(dev), rest.labels[: args.n].to(dev)
        chosen = select_eval_depth(model, *held, max(args.eps))
    model.eval_depth = chosen["depth"]
    return {**evaluate_battery(row, seed, args, model=model), "depth_heldout": chosen}


EVALUATORS = {
    "battery": evaluate_battery,
    "early": evaluate_readout,
    "averaged": evaluate_readout,
    "entropy": evaluate_entropy,
    "random_depth": evaluate_random_depth,
}


def evaluate_row(name: str, seed: int, args) -> Dict[str, Any]:
    """One (row, seed) evaluated here; its result file's content."""
    row, start = ROWS[name], time.perf_counter()
    out = EVALUATORS[row.kind](row, seed, args)
    out.setdefault("positions", list(range(args.n)))
    out.update(row=name, seed=seed, n=len(out["positions"]), seconds=round(time.perf_counter() - start, 1))
    return out


def evaluated_here(dataset: str) -> List[str]:
    """The rows this driver evaluates on ``dataset``: fast mode those no chapter recorded, full mode every row whose
    recipe the zoo has (chapter 6's LyaDEQ readings are fast-mode recipes only)."""
    if dataset == "mnist5k":
        return [n for n, r in ROWS.items() if r.recorded is None]
    return [n for n, r in ROWS.items() if r.recipe_for(dataset) in zoo.names()]


def recorded(row: Row, seed: int, folder: Path, eps: Sequence[float]) -> Optional[Dict[str, Any]]:
    """A row's (seed's) masks from the chapter that recorded it, in this driver's format; None if not there."""
    if row.recorded.startswith("regulated_dynamics:"):
        path = folder / "regulated_dynamics" / f"{row.recorded.split(':', 1)[1]}@{seed}.json"
        if not path.exists():
            return None
        run = load_runs(path.parent)[path.stem]
        masks = {e: {"robust": run["E2"][e]["robust"], "broken_by": None} for e in map(str, eps)}
        return {"clean_correct": run["E1"]["clean_correct"], "eps": masks, "positions": run["positions"]}
    path = folder / "lyadeq_readings" / f"{row.recipe}@{seed}@500.json"
    if not path.exists():
        return None
    report = load_runs(path.parent)[path.stem]["report"]
    return {"clean_correct": report["clean_correct"], "eps": _masks(report), "positions": list(range(report["n"]))}


def collect(folder: Path, dataset: str = "mnist5k") -> Dict[str, Dict[int, Dict[str, Any]]]:
    """Every row's finished seeds: row -> seed -> {clean_correct, eps: {e: robust, broken_by}, positions}."""
    mine = folder / _results_name(dataset)
    here = load_runs(mine) if mine.exists() else {}
    out: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for name, row in ROWS.items():
        for seed in SEEDS:
            if dataset == "mnist5k" and row.recorded:
                got = recorded(row, seed, folder, EPS_BY_DATASET[dataset])
            else:
                got = here.get(f"{name}@{seed}")
            if got is not None:
                out.setdefault(name, {})[seed] = got
    return out


def _results_name(dataset: str) -> str:
    return "head_to_head" if dataset == "mnist5k" else f"head_to_head_{dataset}"


def _arguments(args) -> None:
    """The budgets: fast (500 digits), full (--n, default 1,000 images), or --quick (tiny, to results_quick/)."""
    import regulated_dynamics as rd

    args.eps = EPS_BY_DATASET[args.dataset]
    args.n = args.n or (500 if args.dataset == "mnist5k" else 1000)
    args.preset, args.budgets, args.pgd_steps = "full", None, 100
    args.rd = rd.main_arguments(quick=args.quick)
    if args.quick:
        args.n, args.preset, args.pgd_steps = 16, "reduced", 2
        args.budgets = {"square_queries": 10, "apgd_steps": 2, "fab_steps": 2, "pgd_steps": 2}


def write_summary(out_dir: Path, dataset: str) -> Dict[str, Any]:
    runs = collect(out_dir, dataset)
    eps = EPS_BY_DATASET[dataset]
    rows = {n: r for n, r in ROWS.items() if dataset == "mnist5k" or n in evaluated_here(dataset)}
    summary = summarise(runs, rows, {d: c for d, c in C6.items() if d in rows}, eps)
    command = COMMAND + ("" if dataset == "mnist5k" else f" --dataset {dataset}")
    meta = {
        "command": command,
        "dataset": dataset,
        "eps": list(eps),
        "seeds": list(SEEDS),
        "deqlib": deqlib.__version__,
    }
    name = _results_name(dataset)
    save_json({**meta, "rows": {k: vars(v) for k, v in rows.items()}, "summary": summary}, out_dir / f"{name}.json")
    (out_dir / f"{name}.md").write_text(markdown(summary, rows, command, eps))
    return summary


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=tuple(EPS_BY_DATASET), default="mnist5k", help="mnist5k: fast mode; else full")
    p.add_argument("--n", type=int, default=None, help="evaluated test images (default 500 fast, 1,000 full)")
    p.add_argument("--device", default=None, help="where the models run (default: the zoo's, the CPU)")
    p.add_argument("--quick", action="store_true", help="tiny budgets, written to results_quick/")
    p.add_argument("--only", nargs="*", default=None, help="row names (default: every row evaluated here)")
    p.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    p.add_argument("--summary", action="store_true", help="only rewrite the summary from the finished runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out-dir", type=Path, default=None, help="results folder (default results/, or results_quick/)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    _arguments(args)
    out_dir = args.out_dir or HERE / ("results_quick" if args.quick else "results")
    folder = out_dir / _results_name(args.dataset)
    folder.mkdir(parents=True, exist_ok=True)
    names = [n for n in (args.only or ROWS) if n in evaluated_here(args.dataset)]
    queue = [] if args.summary else [(seed, name) for seed in args.seeds for name in names]
    bar = tqdm(queue, desc="head to head (row, seed)", disable=args.no_progress or not queue)
    for seed, name in bar:
        bar.set_postfix_str(f"{name}@{seed}")
        if run_claimed(folder, f"{name}@{seed}", lambda: evaluate_row(name, seed, args)):
            write_summary(out_dir, args.dataset)
    write_summary(out_dir, args.dataset)


if __name__ == "__main__":
    main()
