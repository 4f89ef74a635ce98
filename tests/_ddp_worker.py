"""One process of tests/test_distributed.py's torchrun runs (gloo, CPU): train the tiny model data-parallel.

    torchrun --nproc_per_node=2 tests/_ddp_worker.py OUT_DIR EPOCHS [interrupt | bypass]

Writes ``OUT_DIR/rank<r>.pt`` (the weights and the history) and ``OUT_DIR/rank<r>.json`` (what this rank logged, or
the error it raised). ``interrupt``: both processes stop at the first batch of epoch 2 (as a killed run would),
after process 0 checkpointed epoch 1. ``bypass``: a loss whose logits skip DistributedDataParallel
(``model.module``), which the weight check after the epoch must catch.
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ddp_setup import SETTINGS, tiny_data, tiny_model  # noqa: E402

from deqlib.losses import cross_entropy  # noqa: E402
from deqlib.train import distributed, fit  # noqa: E402

STOP_AFTER = [None]  # calls of the loss before an interruption (None: never)


class Interrupted(Exception):
    pass


def loss(model, x, y):
    """deqlib's cross-entropy, interrupted after STOP_AFTER calls (the same name in every run, so it resumes)."""
    if STOP_AFTER[0] is not None:
        if STOP_AFTER[0] == 0:
            raise Interrupted
        STOP_AFTER[0] -= 1
    return cross_entropy(model, x, y)


def bypassing_loss(model, x, y):
    logits = model.module(x)  # not through DDP: its gradients are not averaged
    return F.cross_entropy(logits, y), logits


def main() -> None:
    out, epochs, mode = Path(sys.argv[1]), int(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else "plain")
    torch.set_num_threads(1)
    group = distributed.init_from_env()
    assert group is not None and group.world_size == 2, group
    train, val = tiny_data()
    model, logged, report = tiny_model(), [], {"rank": group.rank}
    options = dict(SETTINGS, epochs=epochs, checkpoint=str(out / "ckpt.pt"), resume=True, log=logged.append)
    options["loss_fn"] = loss
    if mode == "bypass":
        options.update(loss_fn=bypassing_loss, checkpoint=None)
    if mode == "interrupt":
        STOP_AFTER[0] = -(-len(train) // SETTINGS["batch_size"])  # the batches of one epoch
    try:
        history = fit(model, train, val_data=val, **options)
        torch.save({"model": model.state_dict(), "history": history.to_dict()}, out / f"rank{group.rank}.pt")
    except RuntimeError as e:
        report["error"] = str(e)
    except Interrupted:
        report["interrupted"] = True
    report["logged_epochs"] = [r["epoch"] for r in logged]
    (out / f"rank{group.rank}.json").write_text(json.dumps(report))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
