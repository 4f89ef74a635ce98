"""The adaptive evaluation of the input-entropy-reduction defence, before and after issue 9 (findings 3 and 4).

Command: ``python experiments/entropy_adaptive.py`` (``--quick`` for a smoke test with tiny budgets, written to
``experiments/results_quick/``); writes ``experiments/results/entropy_adaptive.json``. About 10 minutes on this
2-core CPU (the ``seconds`` entries of the results say).

Setting (the issue's): the digits MLP DEQ of the tests (width 32, Anderson, 3 epochs of Adam 1e-2, seed 0), the
defence at the paper's settings (T_f 2, R 10, 4 rounds, ε_def 0.1, η 0.025), 120 test digits (stratified subset,
seed 0), L∞ attack ε 0.1.

* ``before``: PGD-20 (α 0.01, random start, torch seed 0) with the two gradients the library handed out before:
  the old BPDA (the purification as the identity on every pixel, the solver steps chained, ``forward_differentiable``
  of commit f73a7ff, re-implemented here) and the old ``forward`` (the undefended gradient attached
  straight-through: a transfer attack).
* ``after``: the four attacks the defence declares (``defense.adaptive_attacks``), APGD with the "reduced" (20
  steps, 2 restarts) and "full" (100 steps, 5 restarts) presets; per attack the robust accuracy, per sample which
  attack broke it, and their per-sample worst case with a Wilson 95 % interval.
* ``ablations`` (reduced budget): the BPDA Jacobian (exact, identity, zero on the ball's faces too), the loop
  gradient with and without the smooth sign, the entropy-aware loss with λ = 0, 0.5, 1, 2 ungated and gated,
  the transfer attack driven by the defended loss.
* ``cost``: seconds and graph memory (bytes of the tensors autograd saves) of one gradient of each kind on the
  120 digits, against the defence's forward without gradient.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deqlib import data
from deqlib.attacks.adaptive import DefenseGradient, ObjectiveAPGD, entropy_adaptive_attacks, entropy_aware_loss
from deqlib.cells import classifier_for
from deqlib.defenses import EntropyReductionDefense
from deqlib.diagnostics import convergence_report
from deqlib.evaluate import save_json
from deqlib.evaluate.statistics import wilson_interval
from deqlib.losses import entropy
from deqlib.solvers import damped_steps, quiet_convergence
from deqlib.threat import project, random_start

HERE = Path(__file__).resolve().parent
EPS = 0.1
DEFENSE = dict(T_f=2, R=10, rounds=4, eps=0.1, eta=0.025)


def train_digits_mlp(epochs: int = 3) -> nn.Module:
    """The tests' digits MLP DEQ (tests/_digits_deq.py: trained_mlp), trained the same way."""
    train = data.load("digits")
    X, y = train.tensors()
    torch.manual_seed(0)
    model = classifier_for(train, "mlp", width=32)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def straight(value: Tensor, surrogate: Tensor) -> Tensor:
    return value + (surrogate - surrogate.detach())


class Surrogate(nn.Module):
    """The defence's values with a gradient built from its trace: the old ones and the ablations."""

    def __init__(self, defense: EntropyReductionDefense, kind: str) -> None:
        super().__init__()
        self.defense, self.kind = defense, kind

    def forward(self, x: Tensor) -> Tensor:
        d, model = self.defense, self.defense.model
        if not (torch.is_grad_enabled() and x.requires_grad):
            return d.defend(x)
        tr = d.trace(x)
        step = x - x.detach()
        if self.kind == "old_forward":  # the undefended gradient at x
            return straight(tr.logits, model(x))
        if self.kind == "bpda_identity":  # the model at x_T, the purification as the identity
            return straight(tr.logits, model(tr.inputs[-1] + step))
        if self.kind == "bpda_zero_on_ball_faces":  # the model at x_T, zero on every clipped pixel
            face = ((tr.inputs[-1] - x.detach()).abs() >= d.eps - 1e-6).to(x.dtype)
            return straight(tr.logits, model(tr.inputs[-1] + tr.input_jacobian * (1 - face) * step))
        if self.kind == "old_bpda":  # forward_differentiable at f73a7ff
            cell, z = model.deq.cell, torch.zeros_like(tr.states[0])
            through = [x_r + step for x_r in tr.inputs]
            for r in range(d.rounds):
                u = model.inject(through[r])
                z = straight(tr.states[r], damped_steps(lambda s, u=u: cell(s, u), z, d.T_f))
            return straight(tr.logits, model.logits_from_state(cell(z, model.inject(through[-1]))))
        raise ValueError(self.kind)


def robust_mask(defense: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return defense.defend(x_adv).argmax(1) == y


def run_attack(name: str, attack: Callable[[Tensor, Tensor], Tensor], defense, x, y, clean) -> Dict:
    t0 = time.time()
    with convergence_report(defense) as report, quiet_convergence():
        x_adv = attack(x, y)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1, name
    robust = robust_mask(defense, x_adv, y) & clean
    row = {"robust_accuracy": robust.float().mean().item(), "robust": robust.tolist(), "seconds": time.time() - t0}
    row["convergence"] = report.as_dict()
    print(f"  {name:28s} {100 * row['robust_accuracy']:5.1f} %  ({row['seconds']:.0f} s)", flush=True)
    return row


def worst_case(rows: Dict[str, Dict], clean: Tensor) -> Dict:
    robust = clean.clone()
    broken_by: List = [None] * len(clean)
    for name, row in rows.items():
        mask = torch.tensor(row["robust"])
        for i in torch.nonzero(robust & ~mask).flatten().tolist():
            broken_by[i] = name
        robust &= mask
    k, n = int(robust.sum()), len(robust)
    return {
        "robust_accuracy": k / n,
        "ci95": wilson_interval(k, n),
        "robust": robust.tolist(),
        "broken_by": broken_by,
        "first_breaker_counts": {name: broken_by.count(name) for name in rows},
        "only_this_attack_breaks": {
            name: int(
                (
                    torch.stack([torch.tensor(r["robust"]) for o, r in rows.items() if o != name]).all(0)
                    & ~torch.tensor(row["robust"])
                    & clean
                ).sum()
            )
            for name, row in rows.items()
        },
    }


def pgd(view: nn.Module, x: Tensor, y: Tensor, steps: int, alpha: float = 0.01) -> Tensor:
    """L∞ PGD on CE(view(x)) from a uniform random start (AdaptiveEntropyAttack's loop, on any module)."""
    adv = random_start(x, EPS, "Linf")
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(view(adv), y), adv)
        adv = project(adv.detach() + alpha * grad.sign(), x, EPS, "Linf")
    return adv.detach()


def pgd_before(defense, x, y, clean, steps: int) -> Dict:
    rows = {}
    views = {
        "old_bpda": Surrogate(defense, "old_bpda"),
        "old_forward_transfer": Surrogate(defense, "old_forward"),
        "new_bpda_same_pgd": DefenseGradient(defense, "bpda"),
    }
    for name, view in views.items():
        torch.manual_seed(0)
        rows[name] = run_attack(name, lambda xx, yy, view=view: pgd(view, xx, yy, steps), defense, x, y, clean)
    old = {k: rows[k] for k in ("old_bpda", "old_forward_transfer")}
    return {
        "attack": f"PGD-{steps}, alpha 0.01, random start, torch seed 0",
        "per_attack": rows,
        "worst_case_old_pair": worst_case(old, clean),
    }


def after(defense, x, y, clean, preset: str, steps=None, n_restarts=None) -> Dict:
    attacks = entropy_adaptive_attacks(defense, EPS, preset=preset, seed=0, steps=steps, n_restarts=n_restarts)
    a = next(iter(attacks.values()))
    rows = {name: run_attack(name, atk, defense, x, y, clean) for name, atk in attacks.items()}
    return {
        "preset": preset,
        "apgd_steps": a.steps,
        "apgd_restarts": a.n_restarts,
        "per_attack": rows,
        "worst_case": worst_case(rows, clean),
    }


def ablations(defense, x, y, clean, steps: int, restarts: int) -> Dict:
    apgd = dict(eps=EPS, steps=steps, n_restarts=restarts, seed=0)
    from torchattacks import APGD

    def idle(lam: float, gated: bool):
        def objective(xx, yy):
            readouts = defense.trace(xx, graph="loop", idle=True).round_logits
            losses = [
                entropy_aware_loss(r, yy, lam) if gated else F.cross_entropy(r, yy, reduction="none") - lam * entropy(r)
                for r in readouts
            ]
            return torch.stack(losses).mean(0)

        return objective

    value = DefenseGradient(defense, "none")  # the values; any use of their gradient would raise
    attacks = {
        "bpda_exact_jacobian": APGD(DefenseGradient(defense, "bpda"), **apgd),
        "bpda_identity": APGD(Surrogate(defense, "bpda_identity"), **apgd),
        "bpda_zero_on_ball_faces": APGD(Surrogate(defense, "bpda_zero_on_ball_faces"), **apgd),
        "old_bpda_apgd": APGD(Surrogate(defense, "old_bpda"), **apgd),
        "loop": APGD(DefenseGradient(defense, "loop"), **apgd),
        "loop_smooth": APGD(DefenseGradient(defense, "loop_smooth"), **apgd),
        "transfer_defended_loss": APGD(DefenseGradient(defense, "transfer"), **apgd),
    }
    for lam in (0.0, 0.5, 1.0, 2.0):
        attacks[f"entropy_ungated_lambda_{lam:g}"] = ObjectiveAPGD(value, idle(lam, False), **apgd)
    for lam in (0.5, 2.0):  # λ = 1 gated is the declared entropy_aware attack
        attacks[f"entropy_gated_lambda_{lam:g}"] = ObjectiveAPGD(value, idle(lam, True), **apgd)
    rows = {name: run_attack(name, atk, defense, x, y, clean) for name, atk in attacks.items()}
    return {"apgd_steps": steps, "apgd_restarts": restarts, "per_attack": rows}


def cost(defense, x, y) -> Dict:
    """Seconds (median of 3) and graph memory of one defended forward + backward, per gradient."""

    def saved_bytes(fn):
        seen = {}

        def pack(t):
            seen[(t.data_ptr(), t.numel(), t.dtype)] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sum(seen.values())

    out = {}
    with quiet_convergence():
        for gradient in ("none_no_grad", "bpda", "transfer", "loop", "loop_smooth"):

            def step(gradient=gradient):
                if gradient == "none_no_grad":
                    return defense.defend(x)
                xr = x.clone().requires_grad_()
                loss = F.cross_entropy(defense.forward_with(xr, gradient), y)
                return torch.autograd.grad(loss, xr)

            times = []
            for _ in range(3):
                t0 = time.time()
                step()
                times.append(time.time() - t0)
            out[gradient] = {"seconds": sorted(times)[1], "graph_bytes": saved_bytes(step)}
    return out


def pixel_stats(defense, x) -> Dict:
    with torch.no_grad():
        defense.defend(x)
    x_T, jac = defense.last_inputs, defense.last_input_jacobian
    face = (x_T - x).abs() >= defense.eps - 1e-6
    return {
        "box_clipped_fraction": (jac == 0).float().mean().item(),
        "on_ball_face_fraction": (face & (jac == 1)).float().mean().item(),
        "mean_abs_move": (x_T - x).abs().mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets; writes to results_quick/")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    n, pgd_steps = (12, 3) if args.quick else (120, 20)
    model = train_digits_mlp()
    x, y = data.load("digits", "test").subset(n, seed=0).tensors()
    defense = EntropyReductionDefense(model, **DEFENSE)
    with torch.no_grad():
        clean = defense(x).argmax(1) == y
        undefended = (model(x).argmax(1) == y).float().mean().item()
    print(f"clean accuracy: defended {100 * clean.float().mean():.1f} %, undefended {100 * undefended:.1f} %")
    result = {
        "command": "python experiments/entropy_adaptive.py" + (" --quick" if args.quick else ""),
        "setting": {
            "model": "digits MLP DEQ, width 32, anderson, 3 epochs (tests/_digits_deq.py)",
            "n": n,
            "defense": DEFENSE,
            "attack_eps": EPS,
            "norm": "Linf",
        },
        "clean_accuracy": clean.float().mean().item(),
        "clean_ci95": wilson_interval(int(clean.sum()), n),
        "undefended_clean_accuracy": undefended,
        "pixels": pixel_stats(defense, x),
    }
    print("before (PGD on the gradients handed out at f73a7ff):")
    result["before"] = pgd_before(defense, x, y, clean, pgd_steps)
    result["after"] = {}
    for preset in ("reduced", "full"):
        print(f"after, preset {preset}:")
        quick = dict(steps=2, n_restarts=1) if args.quick else {}
        result["after"][preset] = after(defense, x, y, clean, preset, **quick)
    print("ablations:")
    result["ablations"] = ablations(defense, x, y, clean, *((2, 1) if args.quick else (20, 2)))
    everything = {**result["after"]["reduced"]["per_attack"], **result["ablations"]["per_attack"]}
    result["ablations"]["worst_case_with_the_declared_reduced"] = worst_case(everything, clean)
    result["cost"] = cost(defense, x, y)
    result["seconds"] = time.time() - t0
    out = HERE / ("results_quick" if args.quick else "results") / "entropy_adaptive.json"
    save_json(result, out)
    print(f"wrote {out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
