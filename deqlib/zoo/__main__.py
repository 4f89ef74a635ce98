"""``python -m deqlib.zoo list | train NAME | train --all | verify``.

- ``list``: every recipe with its mode, the state of its committed and cached weights (ok / missing / stale /
  damaged), the committed file's size and its training time;
- ``train NAME [NAME ...]`` or ``train --all`` (every fast recipe whose committed weights are not ok): train and write
  the weights and their record into the committed folder (``deqlib/zoo/weights/``; ``--cache``: this machine's cache);
  under ``torchrun --nproc_per_node=N -m deqlib.zoo train ...`` the N processes train data-parallel (on the GPUs
  with NCCL, else on the CPU with gloo) and process 0 writes the files;
- ``verify``: check every committed weights file against its record and the current recipe; exit 1 if one is stale or
  damaged (and, with ``--require-all``, if a fast recipe has no committed weights).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import List, Optional

from ..train import distributed
from . import get, names, status, train
from .store import committed_dir, read_record


def _list() -> int:
    width = max(len(n) for n in names())
    print(f"{'recipe':{width}s} {'mode':5s} {'committed':10s} {'cached':8s} {'size':>9s} {'trained in':>10s}")
    for row in status():
        record = read_record(committed_dir() / f"{row['name']}.pt") if row["committed"] != "missing" else None
        size = f"{row['bytes'] / 1024:.0f} KiB" if row["bytes"] else "-"
        seconds = f"{record['train_seconds']:.0f} s" if record and "train_seconds" in record else "-"
        print(
            f"{row['name']:{width}s} {row['mode']:5s} {row['committed']:10s} {row['cached']:8s} {size:>9s} {seconds:>10s}"
        )
    return 0


def _verify(require_all: bool) -> int:
    bad = 0
    for row in status():
        problem = row["committed"] in ("stale", "damaged")
        missing = row["committed"] == "missing" and row["mode"] == "fast"
        if problem or (missing and require_all):
            bad += 1
        if problem or missing:
            print(f"{row['name']}: committed weights {row['committed']}")
    print(f"verify: {bad} problem(s) in {committed_dir()}")
    return 1 if bad else 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deqlib.zoo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the recipes and where their weights are")
    p_train = sub.add_parser("train", help="train recipes and store their weights")
    p_train.add_argument("names", nargs="*")
    p_train.add_argument("--all", action="store_true", help="every fast recipe without ok committed weights")
    p_train.add_argument("--cache", action="store_true", help="store in this machine's cache, not the committed folder")
    p_train.add_argument("--seed", type=int, default=None, help="another training seed (stored in the cache only)")
    p_train.add_argument("--no-progress", action="store_true")
    p_verify = sub.add_parser("verify", help="check the committed weights against their records and recipes")
    p_verify.add_argument("--require-all", action="store_true", help="a fast recipe without weights is a problem")
    args = parser.parse_args(argv)
    if args.command == "list":
        return _list()
    if args.command == "verify":
        return _verify(args.require_all)
    todo = list(args.names)
    if args.all:
        todo += [
            r["name"] for r in status() if r["mode"] == "fast" and r["committed"] != "ok" and r["name"] not in todo
        ]
    unknown = [n for n in todo if n not in names()]
    if unknown or not todo:
        parser.error(f"unknown recipe(s) {unknown}" if unknown else "name a recipe, or --all")
    command = "python -m deqlib.zoo " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    group = distributed.init_from_env()  # a torchrun launch: train data-parallel
    if group is not None:
        command = f"torchrun --nproc_per_node={group.world_size} -m deqlib.zoo " + command.split(" ", 3)[-1]
    main_process = group is None or group.is_main
    for name in todo:
        if main_process:
            print(f"training {name}", flush=True)
        committed = not args.cache and args.seed in (None, get(name).seed)
        train(name, seed=args.seed, committed=committed, progress=not args.no_progress, command=command)
    return _list() if main_process else 0


if __name__ == "__main__":
    sys.exit(main())
