"""deqlib.train and deqlib.checkpoint: atomic checkpoints, exact resume, history, settings, solver statistics,
bad inputs, accuracy. The recipes and the command line are in test_recipes.py."""

import json
import math
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from deqlib import cells, data
from deqlib.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    save_model,
)
from deqlib.solvers import SolverConvergenceWarning, quiet_convergence
from deqlib.train import FitSettings, History, evaluate_accuracy, fit

SMALL = dict(epochs=3, lr=3e-3, batch_size=128, scheduler="cosine", seed=7, progress=False, device="cpu")


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train").subset(512, seed=0), data.load("digits", "test")


def small_model(ds, seed=0):
    torch.manual_seed(seed)
    return cells.classifier_for(ds, "mlp", width=32, solver="anderson", max_iter=15, tol=1e-3)


def leftovers(folder):
    return sorted(p for p in os.listdir(folder) if p.endswith(".tmp"))


# ---------------------------------------------------------------------------------------------------- checkpoint


def test_save_load_roundtrip(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    state = {"epoch": 2, "w": torch.arange(4.0), "history": {"loss": [1.0, 0.5]}, "name": "x", "none": None}
    save_checkpoint(path, state)
    back = load_checkpoint(path)
    assert back["epoch"] == 2 and back["history"] == {"loss": [1.0, 0.5]} and back["none"] is None
    assert torch.equal(back["w"], state["w"])
    assert leftovers(path.parent) == []


def test_failed_save_keeps_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    before = path.read_bytes()
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")  # a partial write ...
        raise OSError("disk full")  # ... then a failure

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_interrupt_during_save_leaves_no_file(tmp_path, monkeypatch):
    def interrupted(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "new.pt", {"epoch": 1})
    assert os.listdir(tmp_path) == []


def test_truncated_and_garbage_files_give_clear_errors(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"w": torch.randn(100, 100), "epoch": 3})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


class Payload:
    """An arbitrary class: torch.load(weights_only=True) must refuse to rebuild it."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_weights_only_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_model_state(path, torch.nn.Linear(2, 2))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_save_model_and_load_model_state(tmp_path, digits):
    train, test = digits
    model = small_model(train, seed=1)
    save_model(tmp_path / "m.pt", model)
    other = small_model(train, seed=2)
    assert not torch.equal(other.head.weight, model.head.weight)
    assert load_model_state(tmp_path / "m.pt", other) is other
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model_state(tmp_path / "m.pt", torch.nn.Linear(3, 3))
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------- fit


def test_history_contents_and_checkpoint(tmp_path, digits, capsys):
    train, test = digits
    model = small_model(train)
    path = tmp_path / "run.pt"
    records = []
    h = fit(model, train, val_data=test, checkpoint=path, log=records.append, **SMALL)
    assert capsys.readouterr() == ("", "")  # progress=False prints nothing
    assert isinstance(h, History) and h["epoch"] == [1, 2, 3] and h.num_epochs == 3
    for key in ("train_loss", "train_acc", "val_acc", "solver_steps", "backward_steps", "lr", "seconds"):
        assert len(h[key]) == 3, key
        assert all(isinstance(v, float) and math.isfinite(v) for v in h[key]), key
    assert all(s > 0 for s in h["solver_steps"]) and all(s > 0 for s in h["backward_steps"])
    assert h.train_loss[-1] < h.train_loss[0]
    assert all(0 <= a <= 1 for a in h["train_acc"] + h["val_acc"])
    assert h["val_acc"][-1] > 0.5
    assert h["lr"][-1] < h["lr"][0]  # cosine schedule
    assert [r["epoch"] for r in records] == [1, 2, 3] and records[-1] == h.last()
    assert json.loads(json.dumps(h)) == h.to_dict()
    # the checkpoint: weights_only-loadable plain types
    ck = load_checkpoint(path)
    assert ck["epoch"] == 3 and ck["seed"] == 7 and ck["history"] == h.to_dict()
    assert ck["settings"]["batch_size"] == 128 and ck["settings"]["optimizer"] == "adam"
    assert type(ck["history"]) is dict
    for k, v in model.state_dict().items():
        assert torch.equal(ck["model"][k], v), k
    assert evaluate_accuracy(model, test) == pytest.approx(h["val_acc"][-1])
    # evaluate_accuracy restores the mode and also takes (X, y)
    model.train()
    X, y = test.tensors()
    assert evaluate_accuracy(model, (X, y), batch_size=50) == pytest.approx(h["val_acc"][-1])
    assert model.training
    # a finished checkpoint: fit returns its history at once and loads its weights
    fresh = small_model(train, seed=3)
    h2 = fit(fresh, train, val_data=test, checkpoint=path, **SMALL)
    assert h2 == h
    assert torch.equal(fresh.head.weight, model.head.weight)


def test_progress_bar_shows_loss_acc_steps(digits, capsys):
    train, _ = digits
    fit(small_model(train), train, **{**SMALL, "epochs": 1, "progress": True})
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "acc=" in err and "steps=" in err


def test_loss_without_logits_and_model_without_deq(digits):
    train, _ = digits
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    calls = []

    def loss_only(model, x, y):  # calls the model twice, as an attack would
        calls.append(1)
        model(x)
        return F.cross_entropy(model(x), y)

    h = fit(plain, train, loss_fn=loss_only, **{**SMALL, "epochs": 1})
    assert h["train_acc"] == [None] and h["solver_steps"] == [None] and h["backward_steps"] == [None]
    assert h["solver_nonconverged"] == [None] and h["backward_nonconverged"] == [None]
    assert len(calls) == math.ceil(len(train) / SMALL["batch_size"])
    assert json.loads(json.dumps(h)) == h.to_dict()


def test_phantom_gradient_records_no_backward_steps(digits):
    train, _ = digits
    model = small_model(train)
    model.deq.grad = "phantom"
    h = fit(model, train, **{**SMALL, "epochs": 1})
    assert h["solver_steps"][0] > 0 and h["backward_steps"] == [None]
    assert h["solver_nonconverged"][0] is not None and h["backward_nonconverged"] == [None]


def _fit_run(train, test, path, **kw):
    model = small_model(train, seed=0)
    h = fit(model, train, val_data=test, checkpoint=path, **{**SMALL, **kw})
    return model, h


def test_resume_after_interrupt_gives_identical_weights(tmp_path, digits):
    train, test = digits
    n_batches = math.ceil(len(train) / SMALL["batch_size"])
    counter = {"n": 0, "armed": True}

    def interrupting_loss(model, x, y):  # the same loss in both runs (a resume compares the loss); armed once
        counter["n"] += 1
        if counter["armed"] and counter["n"] == n_batches + 2:  # the middle of epoch 2
            raise KeyboardInterrupt
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    same = dict(optimizer="adamw", scheduler="onecycle", weight_decay=1e-2, loss_fn=interrupting_loss)
    ref_model, ref_h = _fit_run(train, test, tmp_path / "ref.pt", **{**same, "loss_fn": None})
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        _fit_run(train, test, path, **same)
    assert load_checkpoint(path)["epoch"] == 1
    assert leftovers(tmp_path) == []
    counter["armed"] = False
    model, h = _fit_run(train, test, path, **same)

    ref_state, state = ref_model.state_dict(), model.state_dict()
    assert ref_state.keys() == state.keys()
    for k in ref_state:
        assert torch.equal(ref_state[k], state[k]), k
    assert h.keys() == ref_h.keys()
    for key in h:
        if key != "seconds":
            assert h[key] == ref_h[key], key
    assert load_checkpoint(path)["epoch"] == 3


def test_resume_refuses_incompatible_settings(tmp_path, digits):
    train, _ = digits
    path = tmp_path / "run.pt"
    fit(small_model(train), train, checkpoint=path, **{**SMALL, "epochs": 1})
    with pytest.raises(ValueError, match=r"seed: checkpoint 7, now 8"):
        fit(small_model(train), train, checkpoint=path, **{**SMALL, "seed": 8})
    with pytest.raises(ValueError, match=r"batch_size: checkpoint 128, now 64"):
        fit(small_model(train), train, checkpoint=path, **{**SMALL, "batch_size": 64})
    with pytest.raises(ValueError, match=r"lr.*optimizer|optimizer"):
        fit(small_model(train), train, checkpoint=path, **{**SMALL, "optimizer": "sgd"})
    with pytest.raises(ValueError, match=r"n_train"):
        fit(small_model(train), train.subset(256), checkpoint=path, **SMALL)
    with pytest.raises(ValueError, match="does not fit"):
        fit(cells.classifier_for(train, "mlp", width=16), train, checkpoint=path, **{**SMALL, "epochs": 1})
    with pytest.raises(ValueError, match=r"epochs: checkpoint 1, now 3"):  # the cosine schedule depends on epochs
        fit(small_model(train), train, checkpoint=path, **SMALL)
    # resume=False starts over and overwrites
    h = fit(small_model(train), train, checkpoint=path, resume=False, **{**SMALL, "epochs": 1, "seed": 8})
    assert h["epoch"] == [1] and load_checkpoint(path)["seed"] == 8


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"epochs": 2.5}, TypeError, "epochs"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr": -1e-3}, ValueError, "lr"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"optimizer": "adagrad"}, ValueError, r"adam.*adamw.*sgd"),
        ({"scheduler": "linear"}, ValueError, r"cosine.*onecycle"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay"),
        ({"grad_clip": 0.0}, ValueError, "grad_clip"),
        ({"seed": -1}, ValueError, "seed"),
        ({"learning_rate": 1e-3}, TypeError, "learning_rate"),
        ({"loss_fn": 3}, TypeError, "loss_fn"),
    ],
)
def test_bad_inputs(digits, kwargs, exc, match):
    train, _ = digits
    args = {**SMALL, "epochs": 1, **kwargs}
    with pytest.raises(exc, match=match):
        fit(small_model(train), train, **args)


def test_bad_data_and_bad_loss_output(digits):
    train, _ = digits
    with pytest.raises(TypeError, match="train_data"):
        fit(small_model(train), [1, 2, 3], **SMALL)
    with pytest.raises(TypeError, match="scalar"):
        fit(small_model(train), train, loss_fn=lambda m, x, y: m(x), **SMALL)


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path, digits):
    train, _ = digits
    path = tmp_path / "run.pt"
    n_batches = math.ceil(len(train) / SMALL["batch_size"])
    counter = {"n": 0}
    saved = []

    def nan_in_epoch_2(model, x, y):
        counter["n"] += 1
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if counter["n"] == n_batches + 3:  # third batch of epoch 2
            loss = loss * float("nan")
        return loss, logits

    with pytest.raises(FloatingPointError, match=r"epoch 2, batch 3 of %d" % n_batches):
        fit(
            small_model(train),
            train,
            checkpoint=path,
            loss_fn=nan_in_epoch_2,
            log=lambda rec: saved.append(path.read_bytes()),
            **SMALL,
        )
    assert len(saved) == 1 and path.read_bytes() == saved[0]  # the checkpoint of epoch 1, untouched
    assert load_checkpoint(path)["epoch"] == 1 and leftovers(tmp_path) == []

    with pytest.raises(FloatingPointError, match="inf"):
        fit(small_model(train), train, loss_fn=lambda m, x, y: F.cross_entropy(m(x), y) * float("inf"), **SMALL)


def test_user_dataloader_is_used_as_is(digits):
    train, _ = digits
    loader = torch.utils.data.DataLoader(train, batch_size=100, shuffle=True)
    seen = []

    def loss(model, x, y):
        seen.append(x.shape[0])
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    fit(small_model(train), loader, loss_fn=loss, **{**SMALL, "epochs": 1})
    assert seen == [100] * 5 + [12]


# ---------------------------------------------------------------------------------------------------- settings


def test_settings_object_is_the_same_call_as_keywords(digits):
    train, _ = digits
    h_kw = fit(small_model(train), train, **{**SMALL, "epochs": 1})
    settings = FitSettings(**{**SMALL, "epochs": 1})
    h_obj = fit(small_model(train), train, settings=settings)
    h_mix = fit(small_model(train), train, settings=FitSettings(**{**SMALL, "epochs": 1, "lr": 1.0}), lr=SMALL["lr"])
    for key in ("train_loss", "train_acc", "solver_steps", "backward_steps", "lr"):
        assert h_kw[key] == h_obj[key] == h_mix[key], key


def test_settings_validation_policy():
    assert FitSettings(epochs=1, optimizer="SGD", scheduler="OneCycle").optimizer == "sgd"
    assert FitSettings(epochs=1, scheduler=None).resume_keys()[-1] == "own_loader"
    assert FitSettings(epochs=1).resume_keys()[-1] == "epochs"  # the cosine schedule depends on epochs
    for kwargs, exc, match in [
        ({"epochs": "3"}, TypeError, "fit: epochs must be an int"),
        ({"epochs": True}, TypeError, "epochs"),
        ({"lr": "1e-3"}, TypeError, "lr"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"optimizer": 3}, TypeError, "optimizer"),
        ({"scheduler": "linear"}, ValueError, "scheduler"),
        ({"grad_clip": -1.0}, ValueError, "grad_clip"),
        ({"seed": 2**32}, ValueError, "seed"),
        ({"resume": "yes"}, TypeError, "resume"),
        ({"progress": 1}, TypeError, "progress"),
        ({"log": "print"}, TypeError, "log"),
        ({"checkpoint": 3}, TypeError, "checkpoint"),
        ({"device": 0}, TypeError, "device"),
    ]:
        with pytest.raises(exc, match=match):
            FitSettings(**{"epochs": 1, **kwargs})
    with pytest.raises(TypeError, match="missing the required setting epochs"):
        fit(torch.nn.Linear(2, 2), (torch.zeros(2, 2), torch.zeros(2, dtype=torch.long)), lr=1e-3)
    with pytest.raises(TypeError, match="settings must be a FitSettings"):
        fit(torch.nn.Linear(2, 2), (torch.zeros(2, 2), torch.zeros(2, dtype=torch.long)), settings={"epochs": 1})


# ---------------------------------------------------------------------------------------------------- solver statistics


class Recorder:
    """A solve listener of the test's own: every solve's per-sample steps, by tag."""

    def __init__(self):
        self.solves = {"forward": [], "backward": []}

    def __call__(self, tag, info):
        self.solves[tag].append(info.steps.clone())

    def mean(self, tag):
        steps = torch.cat(self.solves[tag])
        return float(steps.float().sum()) / steps.numel()


def test_solver_steps_count_every_solve_of_the_epoch(digits):
    """A loss that calls the model twice per batch (an attack's input gradient on a 2-step budget, then the
    training forward on the full budget): solver_steps is the mean over ALL the forward solves, backward_steps over
    all the adjoint solves (the attack's and the training step's), not those of the last call only."""
    train, _ = digits
    model = small_model(train)
    deq = model.deq
    last_forward_means = []

    def two_budgets(model, x, y):
        deq.max_iter = 2
        try:
            x_adv = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        finally:
            deq.max_iter = 15
        logits = model(x)
        last_forward_means.append(float(deq.last_info.steps.float().mean()))  # what was counted before
        return F.cross_entropy(logits, y), logits

    recorder = Recorder()
    handle = deq.add_solve_listener(recorder)
    try:
        h = fit(model, train, loss_fn=two_budgets, **{**SMALL, "epochs": 1})
    finally:
        handle.remove()
    n_batches = math.ceil(len(train) / SMALL["batch_size"])
    assert len(recorder.solves["forward"]) == 2 * n_batches and len(recorder.solves["backward"]) == 2 * n_batches
    assert h["solver_steps"][0] == pytest.approx(recorder.mean("forward"), rel=1e-12)
    assert h["backward_steps"][0] == pytest.approx(recorder.mean("backward"), rel=1e-12)
    # the old count (the last forward solve of each batch) is clearly different: the 2-step solves pull it down
    old = sum(last_forward_means) / len(last_forward_means)
    assert old > 2.5 and h["solver_steps"][0] < old - 0.5
    assert not deq._solve_listeners  # fit removed its listener


def test_solver_steps_exclude_validation_and_listener_removed_on_error(digits):
    train, test = digits
    model = small_model(train)
    recorder = Recorder()
    handle = model.deq.add_solve_listener(recorder)
    try:
        h = fit(model, train, val_data=test, **{**SMALL, "epochs": 1})
    finally:
        handle.remove()
    n_batches = math.ceil(len(train) / SMALL["batch_size"])
    train_solves = torch.cat(recorder.solves["forward"][:n_batches])
    assert len(recorder.solves["forward"]) > n_batches  # the validation pass solved too ...
    assert h["solver_steps"][0] == pytest.approx(float(train_solves.float().mean()), rel=1e-12)  # ... not counted

    def broken(model, x, y):
        model(x)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fit(model, train, loss_fn=broken, **{**SMALL, "epochs": 1})
    assert not model.deq._solve_listeners


def test_history_records_the_non_converged_fraction_and_warns_once_per_epoch(digits):
    """Issue 9, finding 1: a loss whose attack solves run on a 2-step budget. The History's solver_nonconverged /
    backward_nonconverged are the shares of ALL the epoch's forward / adjoint samples that did not converge (checked
    against a listener of the test's own); the per-solve warnings are replaced by one warning per epoch."""
    train, test = digits
    model = small_model(train)
    deq = model.deq

    def two_budgets(model, x, y):
        deq.max_iter, deq.backward_options["max_iter"] = 2, 2
        try:
            x_adv = x.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        finally:
            deq.max_iter, deq.backward_options["max_iter"] = 15, 30
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    seen = {"forward": [], "backward": []}
    handle = deq.add_solve_listener(lambda tag, info: seen[tag].append(info.converged.clone()))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            h = fit(model, train, val_data=test, loss_fn=two_budgets, **{**SMALL, "epochs": 2})
    finally:
        handle.remove()
    n_train = 2 * math.ceil(len(train) / SMALL["batch_size"])  # solves per epoch and kind (two per batch)
    n_val = math.ceil(len(test) / 256)  # the validation's forward solves come after them and are not counted
    assert len(seen["forward"]) == 2 * (n_train + n_val) and len(seen["backward"]) == 2 * n_train
    for epoch in range(2):
        start = epoch * (n_train + n_val)
        fwd = torch.cat(seen["forward"][start : start + n_train])
        bwd = torch.cat(seen["backward"][epoch * n_train : (epoch + 1) * n_train])
        assert h["solver_nonconverged"][epoch] == pytest.approx(float((~fwd).float().mean()), rel=1e-12)
        assert h["backward_nonconverged"][epoch] == pytest.approx(float((~bwd).float().mean()), rel=1e-12)
        assert 0.4 < h["solver_nonconverged"][epoch] < 1.0  # the 2-step solves fail, most full ones do not
    messages = [str(w.message) for w in caught if issubclass(w.category, SolverConvergenceWarning)]
    assert len(messages) == 2 and messages[0].startswith("fit: epoch 1/2: ") and "solver_nonconverged" in messages[1]
    assert not any(m.startswith("DEQ ") for m in messages)  # no per-solve warning
    assert json.loads(json.dumps(h)) == h.to_dict()


def test_evaluate_accuracy_warns_once_not_per_batch(digits):
    _, test = digits
    model = small_model(test)
    model.deq.max_iter = 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate_accuracy(model, test, batch_size=64)
    messages = [str(w.message) for w in caught if issubclass(w.category, SolverConvergenceWarning)]
    assert len(messages) == 1 and messages[0].startswith("evaluate_accuracy: ")
    assert f"/{len(test)} samples" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with quiet_convergence():
            evaluate_accuracy(model, test, batch_size=64)  # an enclosing quiet block silences it


# ---------------------------------------------------------------------------------------------------- issue 16


def _xy(ds, fill=None, dtype=None):
    X, y = ds.tensors()
    if fill is not None:
        y[::2] = fill
    return X, (y.to(dtype) if dtype is not None else y)


def _relabelled(ds, label):
    """An ImageDataset (num_classes = 10) whose labels were changed after it was built."""
    out = ds.subset(len(ds))
    out.labels[::2] = label
    return out


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda ds: _xy(ds, dtype=torch.float32), TypeError, r"labels of train_data must be integer .*float32"),
        (lambda ds: _xy(ds, dtype=torch.bool), TypeError, "labels of train_data must be integer"),
        (lambda ds: _xy(ds, -100), ValueError, r">= 0, got values down to -100 \(-100 is torch's ignore index"),
        (lambda ds: _xy(ds, -3), ValueError, "down to -3"),
        (lambda ds: _xy(ds, 19), ValueError, r"loss failed on the labels of batch 1 \(values in \[0, 19\]\)"),
        (lambda ds: _relabelled(ds, 19), ValueError, r"labels of train_data must be class indices in \[0, 10\).*19"),
        (lambda ds: (ds.tensors()[0][:8], ds.tensors()[1][:5]), ValueError, "has 8 images but 5 labels"),
        (lambda ds: (ds.tensors()[0], ds.tensors()[1][:, None]), ValueError, r"must have shape \(512,\)"),
    ],
)
def test_fit_refuses_bad_labels_before_training(digits, make, exc, match):
    train, _ = digits
    calls = []

    def loss(model, x, y):
        calls.append(1)
        return F.cross_entropy(model(x), y)

    with pytest.raises(exc, match=match):
        fit(small_model(train), make(train), loss_fn=loss, **{**SMALL, "epochs": 1})
    if "loss failed" not in match:
        assert calls == []  # found in the data set, before the first batch


def test_fit_checks_labels_per_batch_and_against_the_logits(digits):
    train, test = digits
    X, y = _xy(train, 12)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=64)
    with pytest.raises(ValueError, match=r"\[0, 10\).*12"):
        fit(small_model(train), loader, **{**SMALL, "epochs": 1})

    def raw_loss(model, x, y):  # torch's own cross-entropy: an IndexError for a label beyond the logits
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    with pytest.raises(ValueError, match=r"fit: the loss failed on the labels of batch 1 \(values in \[0, 12\]\)"):
        fit(small_model(train), (X, y), loss_fn=raw_loss, **{**SMALL, "epochs": 1})
    with pytest.raises(ValueError, match=r"labels of val_data must be class indices in \[0, 10\)"):
        fit(small_model(train), train, val_data=_xy(test, 10), **{**SMALL, "epochs": 1})
    with pytest.raises(ValueError, match="val_data = \\(X, y\\) has 8 images but 5 labels"):
        fit(small_model(train), train, val_data=(X[:8], y[:5]), **{**SMALL, "epochs": 1})


@pytest.mark.parametrize(
    "shape, match",
    [(lambda z: z[:, 0], r"got \(128,\)"), (lambda z: z[:3], r"got \(3, 10\)"), (lambda z: "x", "got str")],
)
def test_fit_refuses_logits_of_the_wrong_shape(digits, shape, match):
    train, _ = digits

    def loss(model, x, y):
        logits = model(x)
        return F.cross_entropy(logits, y), shape(logits)

    with pytest.raises((TypeError, ValueError), match=r"fit: loss_fn .*logits of shape \(N, num_classes\).*" + match):
        fit(small_model(train), train, loss_fn=loss, **{**SMALL, "epochs": 1})


def test_fit_refuses_a_model_without_parameters_and_unknown_devices(digits):
    train, _ = digits
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(torch.nn.Flatten(), train, **{**SMALL, "epochs": 1})
    with pytest.raises(ValueError, match="fit: device 'tpu0' is not a device name"):
        fit(small_model(train), train, **{**SMALL, "epochs": 1, "device": "tpu0"})


def test_resume_refuses_a_checkpoint_with_more_epochs(tmp_path, digits):
    """Issue 16: fit(epochs=1) on a 3-epoch checkpoint used to return the 3-epoch weights without a word."""
    train, _ = digits
    path = tmp_path / "run.pt"
    fit(small_model(train), train, checkpoint=path, **{**SMALL, "scheduler": None})
    with pytest.raises(ValueError, match=r"holds 3 epochs, more than epochs=1.*pass epochs=3"):
        fit(small_model(train), train, checkpoint=path, **{**SMALL, "scheduler": None, "epochs": 1})
    h = fit(small_model(train), train, checkpoint=path, **{**SMALL, "scheduler": None, "epochs": 4})
    assert h["epoch"] == [1, 2, 3, 4]  # more epochs: continued (no schedule depends on them)


def test_resume_refuses_another_loss(tmp_path, digits):
    """Issue 16: the loss was stored but not compared. It is compared by name and parameters."""
    from deqlib.losses import PGDAT

    train, _ = digits
    at = dict(alpha=0.05, steps=1)
    path = tmp_path / "run.pt"
    fit(small_model(train), train, checkpoint=path, **{**SMALL, "epochs": 1})
    with pytest.raises(ValueError, match=r"loss_fn: checkpoint 'cross_entropy', now \"PGDAT\(eps=0.1"):
        fit(small_model(train), train, checkpoint=path, loss_fn=PGDAT(eps=0.1, **at), **{**SMALL, "epochs": 1})
    path2 = tmp_path / "at.pt"
    fit(small_model(train), train, checkpoint=path2, loss_fn=PGDAT(eps=0.1, **at), **{**SMALL, "epochs": 1})
    with pytest.raises(ValueError, match=r"loss_fn: checkpoint \"PGDAT\(eps=0.1.*now \"PGDAT\(eps=0.2"):
        fit(small_model(train), train, checkpoint=path2, loss_fn=PGDAT(eps=0.2, **at), **{**SMALL, "epochs": 1})
    h = fit(small_model(train), train, checkpoint=path2, loss_fn=PGDAT(eps=0.1, **at), **{**SMALL, "epochs": 1})
    assert h["epoch"] == [1]  # an equal loss (another instance) resumes


def test_resume_of_a_checkpoint_written_before_the_loss_description(tmp_path, digits):
    """Checkpoints of earlier versions store the loss's name only ("loss_fn"): compared by name."""
    train, _ = digits
    path = tmp_path / "old.pt"
    fit(small_model(train), train, checkpoint=path, **{**SMALL, "epochs": 1})
    state = load_checkpoint(path)
    del state["settings"]["loss"]
    save_checkpoint(path, state)
    assert fit(small_model(train), train, checkpoint=path, **{**SMALL, "epochs": 1})["epoch"] == [1]
    with pytest.raises(ValueError, match="loss_fn: checkpoint 'cross_entropy', now '.*<locals>.other'"):

        def other(model, x, y):
            return F.cross_entropy(model(x), y)

        fit(small_model(train), train, checkpoint=path, loss_fn=other, **{**SMALL, "epochs": 1})


def test_describe_loss_is_stable_and_names_parameters():
    import functools

    from deqlib.losses import PGDAT, cross_entropy
    from deqlib.train.settings import describe_loss

    class Plain:
        def __init__(self, beta):
            self.beta, self.cache = beta, [1, 2]

        def __call__(self, model, x, y):
            return cross_entropy(model, x, y)

    assert describe_loss(cross_entropy) == "cross_entropy"
    assert describe_loss(PGDAT(eps=0.1, alpha=0.05, steps=2)) == describe_loss(PGDAT(eps=0.1, alpha=0.05, steps=2))
    assert describe_loss(Plain(2.0)).endswith("Plain(beta=2.0)") and "0x" not in describe_loss(Plain(2.0))
    assert describe_loss(functools.partial(cross_entropy)) == "functools.partial(cross_entropy, )"
    assert "beta=6.0" in describe_loss(functools.partial(PGDAT(eps=0.1, alpha=0.05, steps=2), beta=6.0))


def test_evaluate_accuracy_refuses_bad_labels_models_and_outputs(digits):
    _, test = digits
    model = small_model(test)
    X, y = test.tensors()
    for data_, exc, match in [
        (_xy(test, dtype=torch.float32), TypeError, "labels of data must be integer"),
        (_xy(test, 10), ValueError, r"class indices in \[0, 10\).*\[0, 10\]"),
        (_xy(test, -100), ValueError, "-100 is torch's ignore index"),
        ((X[:8], y[:5]), ValueError, "has 8 images but 5 labels"),
    ]:
        with pytest.raises(exc, match=match):
            evaluate_accuracy(model, data_)
    with pytest.raises(TypeError, match="evaluate_accuracy: model must be a torch.nn.Module"):
        evaluate_accuracy(object(), test)
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1), torch.nn.Flatten(0))
    with pytest.raises(ValueError, match=r"evaluate_accuracy: the model must return logits .*got \(256,\)"):
        evaluate_accuracy(flat, test)
    with pytest.raises(ValueError, match="evaluate_accuracy: device 'tpu0'"):
        evaluate_accuracy(model, test, device="tpu0")


def test_history_refuses_what_is_not_a_history():
    with pytest.raises(TypeError, match="History.from_dict: data must be a dict"):
        History.from_dict(5)
    with pytest.raises(TypeError, match="metric 'epoch' must be a list"):
        History.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match=r"one entry per epoch, got lengths \{'epoch': 2, 'lr': 1\}"):
        History.from_dict({"epoch": [1, 2], "lr": [1.0]})
    with pytest.raises(TypeError, match="History.append: record must be a dict"):
        History().append(5)
    assert History.from_dict({"epoch": (1, 2), "lr": [0.1, 0.2]}).lr == [0.1, 0.2]
