"""The origin-centred LyaDEQ collapses the equilibria: ``fixed_point_spread`` for several Euler steps h and rates α.

Untrained LyaDEQ MLP classifiers (width 32, Lyapunov ICNN hidden (32,), seed 0, ``center="origin"``), plain
fixed-point iteration for 20 / h steps, on the first 64 training digits: the mean pairwise distance of the equilibria
relative to the nominal model's (the projection removed), their mean norm, and the fraction converged.

Command: ``python experiments/lyadeq_collapse.py`` (under 10 seconds on a 2-core CPU); writes
``experiments/results/lyadeq_collapse.json``. Discussed in ``experiments/results/lyadeq_reconstruction.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from deqlib.data import load
from deqlib.defenses import fixed_point_spread, lyadeq_classifier

OUT = Path(__file__).resolve().parent / "results" / "lyadeq_collapse.json"
SETTINGS = dict(width=32, lyapunov_hidden=(32,), center="origin", solver="fixed_point")


def main() -> None:
    torch.set_num_threads(1)
    digits = load("digits", "train")
    x = digits.images[:64]
    rows = []
    for alpha in (1.0, 0.1):
        for h in (1.0, 0.5, 0.2, 0.1):
            torch.manual_seed(0)
            model = lyadeq_classifier(digits, alpha=alpha, h=h, max_iter=round(20 / h), **SETTINGS)
            rows.append({"alpha": alpha, "h": h, "steps": round(20 / h), **fixed_point_spread(model, x)})
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()})
    record = {
        "command": "python experiments/lyadeq_collapse.py",
        "n_inputs": len(x),
        "seed": 0,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in SETTINGS.items()},
        "rows": rows,
    }
    OUT.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
