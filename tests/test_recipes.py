"""deqlib.recipes (the book's standard classifier recipes) and the command line ``python -m deqlib.train``."""

import os
import subprocess
import sys

import pytest
import torch

from deqlib.recipes import recipe, train_classifier
from deqlib.train import History
from deqlib.train import __main__ as cli


def test_recipe_contents_and_bad_names():
    r = recipe("mnist5k", mode="fast")
    assert r["dataset"] == "mnist5k" and r["kind"] == "conv" and r["fit"]["epochs"] == 5
    r["fit"]["epochs"] = 99  # a fresh copy
    assert recipe("mnist5k", mode="fast")["fit"]["epochs"] == 5
    assert recipe("Fashion_MNIST", mode="full")["dataset"] == "fashion-mnist"
    with pytest.raises(ValueError, match="no recipe"):
        recipe("imagenet", mode="fast")
    with pytest.raises(TypeError, match="dataset_name"):
        recipe(5, mode="fast")


def test_train_classifier_checks_its_arguments_before_loading_data(monkeypatch):
    from deqlib import recipes

    def no_data(*args, **kwargs):
        raise AssertionError("the data were loaded before the arguments were checked")

    monkeypatch.setattr(recipes.data, "load", no_data)
    for kwargs, exc, match in [
        ({"checkpoint": 5}, TypeError, "train_classifier: checkpoint must be a file path"),
        ({"checkpoint": ""}, ValueError, "train_classifier: checkpoint must be a file path, got an empty string"),
        ({"progress": "no"}, TypeError, "train_classifier: progress must be True or False"),
        ({"log": 3}, TypeError, "train_classifier: log must be callable"),
        ({"device": "tpu0"}, ValueError, "train_classifier: device 'tpu0' is not a device name"),
        ({"seed": -1}, ValueError, "train_classifier: seed"),
    ]:
        with pytest.raises(exc, match=match):
            train_classifier("digits", mode="fast", **kwargs)


def test_command_line_help_runs_as_a_module():
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run(
        [sys.executable, "-m", "deqlib.train", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "python -m deqlib.train" in out.stdout and "--dataset" in out.stdout


def test_command_line_prints_epochs_and_saves(tmp_path, monkeypatch, capsys):
    calls = {}

    def fake_train_classifier(dataset, *, mode, seed, checkpoint, progress, log):
        calls.update(dataset=dataset, mode=mode, seed=seed, checkpoint=checkpoint, progress=progress)
        rec = {"epoch": 1, "train_loss": 0.5, "train_acc": 0.9, "solver_steps": 7.0, "backward_steps": None}
        log({**rec, "lr": 1e-3, "seconds": 0.1})
        return torch.nn.Linear(2, 2), History(), 0.875

    monkeypatch.setattr(cli, "train_classifier", fake_train_classifier)
    cli.main(
        ["--dataset", "digits", "--mode", "fast", "--seed", "3", "--no-progress", "--save", str(tmp_path / "w.pt")]
    )
    out = capsys.readouterr().out
    assert calls == {"dataset": "digits", "mode": "fast", "seed": 3, "checkpoint": None, "progress": False}
    (line,) = [line for line in out.splitlines() if line.startswith("epoch 1")]
    assert line.startswith("epoch 1, loss 0.5000, train acc 0.9000, steps 7.0, lr 1.00e-03") and "backward" not in line
    assert "test accuracy: 0.8750" in out and (tmp_path / "w.pt").exists()


# ---------------------------------------------------------------------------------------------------- accuracy


@pytest.mark.slow
def test_fast_mode_deq_reaches_95_percent_on_mnist5k():
    model, history, acc = train_classifier("mnist5k", mode="fast", seed=0, progress=False)
    print(f"mnist5k fast-mode DEQ: test accuracy {acc:.4f}; history {history.to_dict()}")
    assert history.num_epochs == recipe("mnist5k", mode="fast")["fit"]["epochs"]
    assert all(s > 0 for s in history["solver_steps"])
    assert acc >= 0.95
