"""A probe of the training and checkpoint half of the public API with bad inputs, as a new user gets them wrong.

Each case is one bad call of ``fit``, ``FitSettings``, ``History``, ``evaluate_accuracy``, the checkpoint functions,
the recipes or ``save_json``, and what a clear answer is: an error of the expected class (TypeError / ValueError, or
the library's own CheckpointError, FileNotFoundError for a missing file) whose message names the problem, or a
warning with a safe result. A case is

- *clear* when it gets that answer,
- *unclear* when it raises something else (a raw torch / Python error: IndexError, AttributeError, AssertionError,
  RuntimeError, "too many values to unpack", ...) or a message that does not name the problem (or advises an unsafe
  ``torch.load(weights_only=False)``),
- *silent* when it returns without a word.

``python tests/test_probe_training.py`` prints the table and the counts; the test expects every case to be clear.
Against the code before issue 16's fixes (commit c29f64c) the 68 cases were 19 clear, 33 unclear and 16 silent;
after them, all 68 are clear.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Tuple, Type

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from deqlib import cells, data
from deqlib.checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint, save_model
from deqlib.evaluate import save_json
from deqlib.losses import PGDAT, cross_entropy
from deqlib.recipes import recipe, train_classifier
from deqlib.solvers import SolverConvergenceWarning
from deqlib.train import FitSettings, History, evaluate_accuracy, fit

try:  # the warning class of the checkpoint fallback (issue 16); absent before the fixes
    from deqlib.checkpoint import CheckpointWarning
except ImportError:  # pragma: no cover - only when probing the code as it was
    CheckpointWarning = UserWarning  # type: ignore[misc, assignment]

QUICK = dict(epochs=1, lr=3e-3, batch_size=32, scheduler=None, seed=0, progress=False, device="cpu")
RAW = (IndexError, AttributeError, AssertionError, KeyError, ZeroDivisionError, RuntimeError, OSError)
UNSAFE_ADVICE = "weights_only=False"


@dataclass
class Ctx:
    """What the cases share: a folder to write in, a small data set and a model factory."""

    folder: Path
    train: Any = field(default=None)

    def model(self, seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        return cells.classifier_for(self.train, "mlp", width=8, max_iter=6, tol=1e-2, backward_max_iter=4)

    def xy(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.train.tensors()

    def path(self, name: str) -> Path:
        return self.folder / name

    def finished(self, name: str, epochs: int = 1, **kw: Any) -> Path:
        """A checkpoint written by fit, ``epochs`` epochs done."""
        p = self.path(name)
        fit(self.model(), self.train, checkpoint=p, **{**QUICK, "epochs": epochs, **kw})
        return p


@dataclass
class Case:
    name: str
    call: Callable[[Ctx], Any]
    exc: Tuple[Type[BaseException], ...] = (TypeError, ValueError)
    match: str = ""
    warn: Optional[Type[Warning]] = None  # a warning case: this warning, ``match`` in its message, a safe result
    safe: Optional[Callable[[Any, Ctx], bool]] = None


def _labels(ctx: Ctx, fill: Any = None, dtype: Optional[torch.dtype] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    X, y = ctx.xy()
    y = y.clone()
    if fill is not None:
        y[::2] = fill
    return X, (y.to(dtype) if dtype is not None else y)


def _counting_loss() -> Tuple[Callable, dict]:
    calls = {"n": 0}

    def loss(model, x, y):
        calls["n"] += 1
        return cross_entropy(model, x, y)

    return loss, calls


def _before_first_epoch(ctx: Ctx, checkpoint: Any) -> None:
    """fit with a bad checkpoint path; the case is clear only if it fails before training a single batch."""
    loss, calls = _counting_loss()
    try:
        fit(ctx.model(), ctx.train, checkpoint=checkpoint, loss_fn=loss, **QUICK)
    finally:
        if calls["n"]:
            raise AssertionError(f"the checkpoint path was refused only after {calls['n']} training batch(es)")


def _parent_is_file(ctx: Ctx) -> Path:
    blocker = ctx.path("blocker")
    blocker.write_text("a file, not a folder")
    return blocker / "run.pt"


def _corrupt(ctx: Ctx, name: str) -> Path:
    p = ctx.path(name)
    p.write_bytes(np.random.RandomState(0).bytes(4096))
    return p


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def _evil(ctx: Ctx) -> Path:
    p = ctx.path("evil.pt")
    torch.save({"epoch": 1, "payload": _Evil()}, p)
    return p


def _damaged_with_backup(ctx: Ctx) -> History:
    p = ctx.finished("damaged.pt", epochs=2)  # the 2nd save keeps the 1st as the backup
    p.write_bytes(p.read_bytes()[:1000])  # a partial copy
    return fit(ctx.model(), ctx.train, checkpoint=p, **{**QUICK, "epochs": 2})


class _FlatOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(64, 1)

    def forward(self, x):
        return self.lin(x.flatten(1))[:, 0]  # (N,): not logits


def _fit_loss_logits(shape_fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    def loss(model, x, y):
        logits = model(x)
        return F.cross_entropy(logits, y), shape_fn(logits)

    return loss


def _cases() -> list:  # noqa: C901 - one table
    c = []
    add = c.append
    # ------------------------------------------------------------------ fit: labels and data
    add(Case("fit float labels", lambda k: fit(k.model(), _labels(k, dtype=torch.float32), **QUICK), match="label"))
    add(Case("fit labels >= num_classes", lambda k: fit(k.model(), _labels(k, 19), **QUICK), match="19"))
    add(Case("fit labels at -100", lambda k: fit(k.model(), _labels(k, -100), **QUICK), match="-100"))
    add(Case("fit labels negative", lambda k: fit(k.model(), _labels(k, -1), **QUICK), match="-1"))
    add(Case("fit bool labels", lambda k: fit(k.model(), _labels(k, dtype=torch.bool), **QUICK), match="label"))
    add(
        Case(
            "fit labels of shape (N, 1)",
            lambda k: fit(k.model(), (k.xy()[0], k.xy()[1][:, None]), **QUICK),
            match=r"label.*shape|shape.*label",
        )
    )
    add(
        Case(
            "fit 8 images and 5 labels",
            lambda k: fit(k.model(), (k.xy()[0][:8], k.xy()[1][:5]), **QUICK),
            match=r"8.*5|5.*8",
        )
    )
    add(
        Case(
            "fit DataLoader with labels >= num_classes",
            lambda k: fit(k.model(), DataLoader(TensorDataset(*_labels(k, 12)), batch_size=16), **QUICK),
            match="12",
        )
    )
    add(
        Case(
            "fit val_data 8 images 5 labels",
            lambda k: fit(k.model(), k.train, val_data=(k.xy()[0][:8], k.xy()[1][:5]), **QUICK),
            match="val_data",
        )
    )
    add(
        Case(
            "fit val_data labels >= num_classes",
            lambda k: fit(k.model(), k.train, val_data=_labels(k, 10), **QUICK),
            match="10",
        )
    )
    add(
        Case(
            "fit train_data a triple of tensors",
            lambda k: fit(k.model(), (*k.xy(), k.xy()[1]), **QUICK),
            match="train_data",
        )
    )
    add(Case("fit train_data a numpy pair", lambda k: fit(k.model(), tuple(t.numpy() for t in k.xy()), **QUICK),
             match="train_data"))  # fmt: skip
    add(
        Case(
            "fit empty train_data",
            lambda k: fit(k.model(), (k.xy()[0][:0], k.xy()[1][:0]), **QUICK),
            match="empty",
        )
    )
    add(Case("fit model is not a module", lambda k: fit(object(), k.train, **QUICK), match="model"))
    add(Case("fit model without parameters", lambda k: fit(torch.nn.Flatten(), k.train, **QUICK),
             match="parameters"))  # fmt: skip
    add(Case("fit model returns flat output", lambda k: fit(_FlatOut(), k.train, **QUICK), match="logits"))
    add(
        Case(
            "fit loss_fn returns 1-D logits",
            lambda k: fit(k.model(), k.train, loss_fn=_fit_loss_logits(lambda z: z[:, 0]), **QUICK),
            match="logits",
        )
    )
    add(
        Case(
            "fit loss_fn returns logits of another batch",
            lambda k: fit(k.model(), k.train, loss_fn=_fit_loss_logits(lambda z: z[:3]), **QUICK),
            match="logits",
        )
    )
    add(
        Case(
            "fit loss_fn returns a float",
            lambda k: fit(k.model(), k.train, loss_fn=lambda m, x, y: 1.0, **QUICK),
            match="scalar",
        )
    )
    # ------------------------------------------------------------------ fit: settings
    add(Case("fit epochs=0", lambda k: fit(k.model(), k.train, **{**QUICK, "epochs": 0}), match="epochs"))
    add(Case("fit lr='1e-3'", lambda k: fit(k.model(), k.train, **{**QUICK, "lr": "1e-3"}), match="lr"))
    add(Case("fit batch_size=True", lambda k: fit(k.model(), k.train, **{**QUICK, "batch_size": True}),
             match="batch_size"))  # fmt: skip
    add(Case("fit device='tpu0'", lambda k: fit(k.model(), k.train, **{**QUICK, "device": "tpu0"}), match="device"))
    add(Case("fit unknown option", lambda k: fit(k.model(), k.train, learning_rate=1e-3, **QUICK),
             match="learning_rate"))  # fmt: skip
    add(Case("FitSettings checkpoint=''", lambda k: FitSettings(epochs=1, checkpoint=""), match="checkpoint"))
    add(Case("FitSettings checkpoint=b'x'", lambda k: FitSettings(epochs=1, checkpoint=b"x.pt"), match="checkpoint"))
    # ------------------------------------------------------------------ fit: checkpoint paths, before the first epoch
    add(Case("fit checkpoint=5", lambda k: _before_first_epoch(k, 5), match="checkpoint"))
    add(
        Case(
            "fit checkpoint whose parent is a file",
            lambda k: _before_first_epoch(k, _parent_is_file(k)),
            match=r"checkpoint.*(not a folder|is a file)",
        )
    )
    add(
        Case(
            "fit checkpoint is a folder",
            lambda k: _before_first_epoch(k, k.folder),
            match=r"checkpoint.*folder",
        )
    )
    # ------------------------------------------------------------------ fit: resuming
    add(
        Case(
            "fit epochs=1 on a 3-epoch checkpoint",
            lambda k: fit(k.model(), k.train, checkpoint=k.finished("three.pt", 3), **QUICK),
            match=r"3 epoch",
        )
    )
    add(
        Case(
            "fit resumes a checkpoint of another loss_fn",
            lambda k: fit(
                k.model(), k.train, checkpoint=k.finished("ce.pt"), loss_fn=PGDAT(eps=0.1, alpha=0.05, steps=1), **QUICK
            ),
            match="loss_fn",
        )
    )
    add(
        Case(
            "fit resumes PGDAT(eps=0.1) with PGDAT(eps=0.2)",
            lambda k: fit(
                k.model(),
                k.train,
                checkpoint=k.finished("at.pt", loss_fn=PGDAT(eps=0.1, alpha=0.05, steps=1)),
                loss_fn=PGDAT(eps=0.2, alpha=0.05, steps=1),
                **QUICK,
            ),
            match=r"loss_fn.*eps",
        )
    )
    add(
        Case(
            "fit resumes a corrupt checkpoint",
            lambda k: fit(k.model(), k.train, checkpoint=_corrupt(k, "bad.pt"), **QUICK),
            exc=(CheckpointError,),
            match="corrupt",
        )
    )
    add(
        Case(
            "fit resumes a damaged checkpoint that has a backup",
            _damaged_with_backup,
            warn=CheckpointWarning,
            match="backup",
            safe=lambda h, k: h["epoch"] == [1, 2],
        )
    )
    add(
        Case(
            "fit resumes a checkpoint not written by fit",
            lambda k: (save_checkpoint(k.path("plain.pt"), {"a": 1}), fit(k.model(), k.train,
                       checkpoint=k.path("plain.pt"), **QUICK)),
            match="not a checkpoint written by fit",
        )
    )  # fmt: skip
    add(
        Case(
            "fit resumes a checkpoint of another architecture",
            lambda k: fit(cells.classifier_for(k.train, "mlp", width=4), k.train, checkpoint=k.finished("arch.pt"),
                          **QUICK),
            match="does not fit",
        )
    )  # fmt: skip
    # ------------------------------------------------------------------ History
    add(Case("History.from_dict(5)", lambda k: History.from_dict(5), match="History"))
    add(Case("History.from_dict({'epoch': 3})", lambda k: History.from_dict({"epoch": 3}), match="epoch"))
    add(Case("History.from_dict ragged", lambda k: History.from_dict({"epoch": [1, 2], "lr": [1.0]}), match="lr"))
    add(Case("History.append(5)", lambda k: History().append(5), match="record"))
    # ------------------------------------------------------------------ evaluate_accuracy
    add(Case("evaluate_accuracy model=object()", lambda k: evaluate_accuracy(object(), k.train), match="model"))
    add(Case("evaluate_accuracy float labels", lambda k: evaluate_accuracy(k.model(), _labels(k, dtype=torch.float32)),
             match="label"))  # fmt: skip
    add(Case("evaluate_accuracy labels >= num_classes", lambda k: evaluate_accuracy(k.model(), _labels(k, 10)),
             match="10"))  # fmt: skip
    add(Case("evaluate_accuracy labels at -100", lambda k: evaluate_accuracy(k.model(), _labels(k, -100)),
             match="-100"))  # fmt: skip
    add(Case("evaluate_accuracy 8 images 5 labels",
             lambda k: evaluate_accuracy(k.model(), (k.xy()[0][:8], k.xy()[1][:5])), match=r"8.*5|5.*8"))  # fmt: skip
    add(Case("evaluate_accuracy flat output", lambda k: evaluate_accuracy(_FlatOut(), k.train), match="logits"))
    add(Case("evaluate_accuracy device='tpu0'", lambda k: evaluate_accuracy(k.model(), k.train, device="tpu0"),
             match="device"))  # fmt: skip
    # ------------------------------------------------------------------ checkpoint functions
    add(Case("save_checkpoint(5, ...)", lambda k: save_checkpoint(5, {"a": 1}), match="path"))
    add(Case("save_checkpoint('', ...)", lambda k: save_checkpoint("", {"a": 1}), match="path"))
    add(Case("save_checkpoint parent is a file", lambda k: save_checkpoint(_parent_is_file(k), {"a": 1}),
             match=r"not a folder|is a file"))  # fmt: skip
    add(Case("save_checkpoint into a folder's name", lambda k: save_checkpoint(k.folder, {"a": 1}), match="folder"))
    add(Case("save_checkpoint a loss object", lambda k: save_checkpoint(k.path("o.pt"), {"loss": PGDAT(eps=0.1,
             alpha=0.05, steps=1)}), match=r"\['loss'\].*PGDAT"))  # fmt: skip
    add(Case("save_checkpoint a numpy float", lambda k: save_checkpoint(k.path("n.pt"), {"acc": np.float64(0.5)}),
             match=r"\['acc'\].*float64"))  # fmt: skip
    add(Case("save_checkpoint a History", lambda k: save_checkpoint(k.path("h.pt"), {"h": History()}),
             match=r"\['h'\].*History"))  # fmt: skip
    add(Case("save_checkpoint a list", lambda k: save_checkpoint(k.path("l.pt"), [1, 2]), match="state"))
    add(Case("load_checkpoint(5)", lambda k: load_checkpoint(5), match="path"))
    add(Case("load_checkpoint random bytes", lambda k: load_checkpoint(_corrupt(k, "rand.pt")), exc=(CheckpointError,),
             match="corrupt"))  # fmt: skip
    add(Case("load_checkpoint unsafe objects", lambda k: load_checkpoint(_evil(k)), exc=(CheckpointError,),
             match="refuse"))  # fmt: skip
    add(Case("load_checkpoint map_location='gpu'", lambda k: load_checkpoint(k.finished("m.pt"), map_location="gpu"),
             match="map_location"))  # fmt: skip
    add(Case("save_model(5, model)", lambda k: save_model(5, k.model()), match="path"))
    add(Case("load_model_state strict='yes'", lambda k: load_model_state(k.finished("s.pt"), k.model(), strict="yes"),
             match="strict"))  # fmt: skip
    add(Case("load_model_state random bytes", lambda k: load_model_state(_corrupt(k, "r2.pt"), k.model()),
             exc=(CheckpointError,), match="corrupt"))  # fmt: skip
    # ------------------------------------------------------------------ recipes and save_json
    add(Case("recipe mode='medium'", lambda k: recipe("mnist5k", mode="medium"), match="mode"))
    add(Case("train_classifier checkpoint=5", lambda k: train_classifier("digits", checkpoint=5), match="checkpoint"))
    add(Case("train_classifier progress='no'", lambda k: train_classifier("digits", progress="no"), match="progress"))
    add(Case("train_classifier log=3", lambda k: train_classifier("digits", log=3), match="log"))
    add(Case("save_json path=5", lambda k: save_json({"a": 1}, 5), match="path"))
    add(Case("save_json parent is a file", lambda k: save_json({"a": 1}, _parent_is_file(k)),
             match=r"not a folder|is a file"))  # fmt: skip
    return c


CASES = _cases()


def verdict(case: Case, ctx: Ctx) -> Tuple[str, str]:
    """``("clear" | "unclear" | "silent", what happened)`` for one case."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = case.call(ctx)
        except AssertionError as e:  # the probe's own checks (e.g. refused only after training) and raw asserts
            return "unclear", f"AssertionError: {e}"
        except BaseException as e:  # noqa: BLE001 - classify everything
            return _judge_error(case, e)
    ours = [w for w in caught if case.warn is not None and issubclass(w.category, case.warn)]
    if case.warn is not None and any(re.search(case.match, str(w.message)) for w in ours):
        ok = case.safe is None or case.safe(result, ctx)
        return ("clear" if ok else "unclear"), f"warned: {ours[0].message}"[:200]
    other = [w for w in caught if not issubclass(w.category, SolverConvergenceWarning)]  # the tiny model's
    if other:
        return "unclear", f"returned after a warning: {other[0].category.__name__}: {other[0].message}"[:200]
    return "silent", "returned without a word"


def _judge_error(case: Case, e: BaseException) -> Tuple[str, str]:
    text = f"{type(e).__name__}: {e}"
    short = " ".join(text.split())[:200]
    if isinstance(e, (KeyboardInterrupt, SystemExit)):
        raise e
    if case.warn is not None:
        return "unclear", "raised instead of warning: " + short
    raw = isinstance(e, RAW) and not isinstance(e, case.exc)
    if raw or not isinstance(e, case.exc) or "too many values to unpack" in str(e):
        return "unclear", short
    if UNSAFE_ADVICE in str(e) or not re.search(case.match, str(e), flags=re.S):
        return "unclear", "message does not name the problem: " + short
    return "clear", short


def _context(folder: Path) -> Ctx:
    return Ctx(folder=folder, train=data.load("digits", "train").subset(64, seed=0))


@pytest.mark.filterwarnings("ignore::deqlib.solvers.SolverConvergenceWarning")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_probe_case(case, tmp_path):
    outcome, what = verdict(case, _context(tmp_path))
    assert outcome == "clear", f"{case.name}: {outcome}: {what}"


def test_probe_has_no_duplicate_cases():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 50


def main() -> int:
    counts = {"clear": 0, "unclear": 0, "silent": 0}
    for case in CASES:
        with tempfile.TemporaryDirectory() as folder:
            outcome, what = verdict(case, _context(Path(folder)))
        counts[outcome] += 1
        print(f"{outcome:8s} {case.name:55s} {what}")
    print(f"\n{len(CASES)} cases: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0 if counts["clear"] == len(CASES) else 1


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
