"""f evaluations of the three solvers on the book's standard cell: the fast-mode conv DEQ trained on mnist5k.

Command: ``python experiments/solver_nfev.py`` (about 2 minutes on a 2-core CPU); writes
``experiments/results/solver_nfev.json``.
"""

from __future__ import annotations

from pathlib import Path

import torch

import deqlib
from deqlib.evaluate import save_json
from deqlib.recipes import train_classifier

OUT = Path(__file__).resolve().parent / "results" / "solver_nfev.json"


def main() -> None:
    torch.set_num_threads(1)
    model, _, acc = train_classifier("mnist5k", mode="fast", seed=0, progress=False)
    x, _ = deqlib.data.load("mnist5k", "test").subset(256, seed=0).tensors()
    with torch.no_grad():
        u = model.inject(x)
    rows = []
    for tol in (1e-3, 1e-4):
        for name in ("fixed_point", "anderson", "broyden"):
            with torch.no_grad():
                _, info = deqlib.get_solver(name)(
                    lambda z: model.deq.cell(z, u), torch.zeros_like(u), max_iter=200, tol=tol
                )
            rows.append(
                {
                    "tol": tol,
                    "solver": name,
                    "nfev": info.nfev,
                    "mean_steps": info.steps.float().mean().item(),
                    "converged": int(info.converged.sum()),
                    "n": int(info.converged.numel()),
                }
            )
            print(rows[-1])
    save_json(
        {
            "command": "python experiments/solver_nfev.py",
            "test_accuracy": acc,
            "max_iter": 200,
            "stop_mode": "rel",
            "rows": rows,
        },
        OUT,
    )


if __name__ == "__main__":
    main()
