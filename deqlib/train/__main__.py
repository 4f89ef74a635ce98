"""The command line: ``python -m deqlib.train`` trains the book's standard DEQ classifier and prints its accuracy.

It runs :func:`deqlib.recipes.train_classifier` on the recipe of ``--dataset`` / ``--mode`` (see
:func:`deqlib.recipes.recipe`), printing one line per epoch; ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List, Optional

import torch

from .. import config
from ..checkpoint import save_model
from ..recipes import recipe, train_classifier


def main(argv: Optional[List[str]] = None) -> None:
    """Parse ``argv`` (default: the command line), train, print the epochs and the test accuracy."""
    parser = argparse.ArgumentParser(
        prog="python -m deqlib.train",
        description="Train the book's standard DEQ classifier and print its test accuracy.",
    )
    parser.add_argument("--dataset", default=None, help="digits, mnist5k, mnist or fashion-mnist (default: by mode)")
    parser.add_argument(
        "--mode", choices=config.MODES, default=None, help="fast or full (default: $DEQLIB_MODE, else by device)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="checkpoint path (resumed if it exists)")
    parser.add_argument("--save", default=None, help="save the trained weights to this path")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (1 is best on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    r = recipe(args.dataset, mode=args.mode)
    print(
        f"deqlib.train: {r['mode']} mode, {r['dataset']}, {r['kind']} DEQ {r['model']}, fit {r['fit']}, "
        f"device {config.select_device()}"
    )

    def show(rec: Dict[str, Any]) -> None:
        parts = [f"epoch {rec['epoch']}", f"loss {rec['train_loss']:.4f}"]
        if rec.get("train_acc") is not None:
            parts.append(f"train acc {rec['train_acc']:.4f}")
        if rec.get("solver_steps") is not None:
            parts.append(f"steps {rec['solver_steps']:.1f}")
        if rec.get("backward_steps") is not None:
            parts.append(f"backward steps {rec['backward_steps']:.1f}")
        parts += [f"lr {rec['lr']:.2e}", f"{rec['seconds']:.1f} s"]
        print(", ".join(parts), flush=True)

    t0 = time.perf_counter()
    model, _, acc = train_classifier(
        r["dataset"],
        mode=r["mode"],
        seed=args.seed,
        checkpoint=args.checkpoint,
        progress=not args.no_progress,
        log=show,
    )
    if args.save:
        save_model(args.save, model)
        print(f"weights saved to {args.save}")
    print(f"test accuracy: {acc:.4f} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
