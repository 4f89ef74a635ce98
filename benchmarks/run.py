"""Run deqlib's benchmarks and write ``benchmarks/results/*.json`` and ``benchmarks/results/summary.md``.

Usage (from the repository root)::

    python -m benchmarks.run                       # every part (about 30-60 min on a 2-core CPU)
    python -m benchmarks.run --quick               # smoke run of every part, into benchmarks/results_quick/
    python -m benchmarks.run --parts solvers,backward
    python -m benchmarks.run --notebooks           # only the notebooks' fast-mode execution times
    python -m benchmarks.run --summary-only        # re-render summary.md from the JSON files

Parts: ``solvers`` (deqlib vs torchdeq, correctness guard, overhead), ``speedups`` (each solver change against the
frozen pre-optimisation solvers; bmm forms; torch.compile), ``backward`` (IFT / phantom / unroll time and memory),
``training`` (fast-mode and PGD-AT throughput with a breakdown), ``warmstart`` (AutoAttack and a PGD-AT epoch with
and without warm starts), ``adversarial`` (a PGD-AT epoch: deqlib vs torchdeq + torchattacks), ``defences`` (chapter 7's defences
against a plain forward), ``notebooks`` (fast-mode execution time).

Each part writes its JSON as soon as it is done, with the machine, the torch version, the thread count, the load
average at its start and end, the date and this command; the summary is re-rendered from every JSON present.
Benchmarks are not tests: nothing in the test suite or CI runs them or depends on their numbers.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from .common import RESULTS, ROOT, load_average, log, machine_info, write_json

PARTS = ("solvers", "speedups", "backward", "training", "warmstart", "adversarial", "defences", "notebooks")


def _part_runner(name: str) -> Callable[..., Dict[str, Any]]:
    if name == "solvers":
        from .bench_solvers import run
    elif name == "speedups":
        from .bench_speedups import run
    elif name == "backward":
        from .bench_backward import run
    elif name == "training":
        from .bench_training import run
    elif name == "warmstart":
        from .bench_warm_start import run
    elif name == "adversarial":
        from .bench_adversarial_training import run
    elif name == "defences":
        from .bench_defences import run
    elif name == "notebooks":
        from .bench_notebooks import run
    else:  # pragma: no cover - argparse checks the names
        raise ValueError(name)
    return run


def wait_for_load(threshold: float, max_wait: float) -> Dict[str, Any]:
    """Wait (at most max_wait seconds) until the 1-minute load average is below threshold."""
    t0 = time.time()
    la = load_average()
    while la is not None and la[0] >= threshold and time.time() - t0 < max_wait:
        time.sleep(15)
        la = load_average()
    return {
        "threshold": threshold,
        "waited_s": round(time.time() - t0, 1),
        "load_average": la,
        "below_threshold": la is not None and la[0] < threshold,
    }


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: small batches, few repeats, into benchmarks/results_quick/"
    )
    parser.add_argument("--parts", default=None, help=f"comma-separated subset of {','.join(PARTS)} (default: all)")
    parser.add_argument("--notebooks", action="store_true", help="run only the notebooks part")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads for the benchmark process (default 1)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="repeats per measurement (median), >= 5 for recorded runs"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="results folder (default: benchmarks/results, or benchmarks/results_quick with --quick)",
    )
    parser.add_argument(
        "--wait-load",
        type=float,
        default=None,
        metavar="LOAD",
        help="before each part, wait until the 1-minute load average is below LOAD (recorded either way)",
    )
    parser.add_argument("--wait-max", type=float, default=900.0, help="longest wait per part for --wait-load, seconds")
    parser.add_argument("--summary-only", action="store_true", help="only re-render summary.md from the JSON files")
    args = parser.parse_args(argv)

    out = Path(args.out) if args.out else (ROOT / "benchmarks" / "results_quick" if args.quick else RESULTS)
    if args.notebooks:
        parts = ["notebooks"]
    elif args.parts:
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        bad = [p for p in parts if p not in PARTS]
        if bad:
            parser.error(f"unknown part(s) {bad}; expected some of {PARTS}")
    else:
        parts = list(PARTS)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads < 1:
        parser.error("--threads must be >= 1")

    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    command = command.strip()
    from .summary import write_summary

    if not args.summary_only:
        torch.set_num_threads(args.threads)
        for part in parts:
            load_wait = wait_for_load(args.wait_load, args.wait_max) if args.wait_load is not None else None
            meta = machine_info(command)
            meta["quick"] = args.quick
            meta["load_wait"] = load_wait
            log(f"== {part} (threads {torch.get_num_threads()}, load {meta['load_average_start']})")
            t0 = time.perf_counter()
            kwargs: Dict[str, Any] = {"quick": args.quick}
            if part in ("solvers", "speedups", "backward"):
                kwargs["repeats"] = args.repeats
            result = _part_runner(part)(**kwargs)
            meta["load_average_end"] = load_average()
            meta["duration_s"] = round(time.perf_counter() - t0, 1)
            write_json(out / f"{part}.json", {"meta": meta, **result})
            write_summary(out)
            log(f"== {part} done in {meta['duration_s']:.0f} s -> {os.path.relpath(out / (part + '.json'), ROOT)}")
    path = write_summary(out)
    log(f"summary: {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
