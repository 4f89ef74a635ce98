"""deqlib.zoo: recipes and their hash, load order, refusals (damaged, stale, training not allowed), resume, CLI."""

from __future__ import annotations

import functools
import json
from dataclasses import replace

import pytest
import torch

from deqlib import zoo
from deqlib.defenses import RandomDepthClassifier
from deqlib.zoo import __main__ as cli
from deqlib.zoo import recipes
from deqlib.zoo.store import sha256_of

TINY = recipes.ZooRecipe(
    "digits-mlp-tiny",
    "digits",
    "fast",
    "mlp",
    {"width": 8, "solver": "anderson", "max_iter": 20, "tol": 1e-3},
    {"name": "ce"},
    {"epochs": 1, "lr": 1e-2, "batch_size": 256},
    description="a test recipe",
)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("DEQLIB_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DEQLIB_ZOO_WEIGHTS", str(tmp_path / "committed"))
    monkeypatch.setitem(recipes.RECIPES, TINY.name, TINY)
    calls = []
    real_fit = zoo._fit
    monkeypatch.setattr(zoo, "_fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    return tmp_path, calls


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_hash_follows_every_field_that_decides_the_weights_and_not_the_description():
    h = recipes.recipe_hash(TINY)
    assert recipes.recipe_hash(replace(TINY, description="other words")) == h
    for changed in (
        replace(TINY, fit={**TINY.fit, "epochs": 2}),
        replace(TINY, seed=1),
        replace(TINY, model={**TINY.model, "width": 9}),
        replace(TINY, loss={"name": "pgd_at", "eps": 0.1, "alpha": 0.02, "steps": 3}),
        replace(TINY, wrapper={"name": "random_depth", "max_depth": 4, "phantom_steps": 2, "phantom_tau": 0.5}),
    ):
        assert recipes.recipe_hash(changed) != h


def test_recipes_are_validated_and_the_registry_has_fast_and_full_ones():
    with pytest.raises(ValueError, match="missing"):
        replace(TINY, loss={"name": "pgd_at", "eps": 0.1})
    with pytest.raises(ValueError, match="mode"):
        replace(TINY, mode="medium")
    with pytest.raises(ValueError, match="missing"):
        replace(TINY, wrapper={"name": "random_depth", "max_depth": 4})
    with pytest.raises(ValueError, match="wrapper name"):
        replace(TINY, wrapper={"name": "lyapunov"})
    with pytest.raises(ValueError, match="no recipe"):
        zoo.get("no-such-model")
    assert {"mnist5k-mlp-standard", "mnist5k-mlp-pgdat", "mnist5k-mlp-trades"} <= set(zoo.names("fast"))
    assert {"cifar10-conv-pgdat", "svhn-conv-trades", "mnist-conv-standard"} <= set(zoo.names("full"))


def test_load_trains_once_then_reads_the_cache(tiny):
    _, calls = tiny
    first = zoo.load(TINY.name, progress=False)
    second = zoo.load(TINY.name, progress=False)
    assert len(calls) == 1 and _same_weights(first, second) and not second.training
    row = zoo.status(TINY.name)[0]
    assert row["cached"] == "ok" and row["committed"] == "missing"


def test_committed_weights_load_without_training_and_are_checked(tiny):
    tmp, calls = tiny
    trained = zoo.train(TINY.name, committed=True, progress=False)
    record = json.loads((tmp / "committed" / f"{TINY.name}.json").read_text())
    assert record["recipe_hash"] == recipes.recipe_hash(TINY) and record["history"]["train_loss"]
    assert record["sha256"] == sha256_of(tmp / "committed" / f"{TINY.name}.pt") and record["command"]
    assert _same_weights(zoo.load(TINY.name, allow_training=False), trained) and len(calls) == 1
    path = tmp / "committed" / f"{TINY.name}.pt"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.ZooError, match="does not match its record"):
        zoo.load(TINY.name)


def test_another_seed_never_loads_the_committed_weights_and_lives_in_the_cache(tiny):
    tmp, calls = tiny
    committed = zoo.train(TINY.name, committed=True, progress=False)
    with pytest.raises(zoo.ZooError, match="--seed 1 --cache"):
        zoo.load(TINY.name, seed=1, allow_training=False)
    other = zoo.load(TINY.name, seed=1, progress=False)
    assert len(calls) == 2 and not _same_weights(other, committed)
    assert _same_weights(zoo.load(TINY.name, seed=1, allow_training=False), other)
    assert _same_weights(zoo.load(TINY.name, seed=0, allow_training=False), committed)
    assert [p.name for p in (tmp / "committed").glob("*.pt")] == [f"{TINY.name}.pt"]
    with pytest.raises(zoo.ZooError, match="only the recipe's own seed"):
        zoo.train(TINY.name, seed=1, committed=True, progress=False)
    with pytest.raises(ValueError, match="seed"):
        zoo.load(TINY.name, seed=-1)


def test_a_wrapped_recipe_trains_and_loads_inside_its_defence(tiny, monkeypatch):
    wrapped = replace(TINY, wrapper={"name": "random_depth", "max_depth": 3, "phantom_steps": 2, "phantom_tau": 0.5})
    monkeypatch.setitem(recipes.RECIPES, TINY.name, wrapped)
    trained = zoo.train(TINY.name, progress=False)
    loaded = zoo.load(TINY.name, allow_training=False)
    assert isinstance(loaded, RandomDepthClassifier) and (loaded.max_depth, loaded.phantom_steps) == (3, 2)
    assert _same_weights(loaded, trained)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded(x), loaded(x)) and loaded.last_depth == 3  # eval: the fixed depth


def test_a_changed_recipe_never_loads_old_weights(tiny, monkeypatch):
    _, calls = tiny
    zoo.train(TINY.name, committed=True, progress=False)
    monkeypatch.setitem(recipes.RECIPES, TINY.name, replace(TINY, fit={**TINY.fit, "lr": 2e-2}))
    assert zoo.status(TINY.name)[0]["committed"] == "stale"
    with pytest.warns(UserWarning, match="another version"), pytest.raises(zoo.ZooError, match="train them"):
        zoo.load(TINY.name, allow_training=False)
    assert cli.main(["verify"]) == 1
    with pytest.warns(UserWarning, match="another version"):
        zoo.load(TINY.name, progress=False)  # trains the new recipe into the cache
    assert len(calls) == 2


def test_interrupted_training_resumes_from_its_checkpoint(tiny, monkeypatch):
    tmp, _ = tiny
    monkeypatch.setitem(recipes.RECIPES, TINY.name, replace(TINY, fit={**TINY.fit, "epochs": 2}))
    reference = zoo.train(TINY.name, committed=True, progress=False)
    (tmp / "committed" / f"{TINY.name}.pt").unlink()
    real_loss, calls = zoo.build_loss, []

    def interrupting_loss(recipe):
        inner = real_loss(recipe)

        @functools.wraps(inner)  # the same loss as far as fit's resume check can tell
        def loss(model, x, y):
            calls.append(1)
            if len(calls) == 8:  # the 2nd batch of epoch 2 (6 batches per epoch)
                raise KeyboardInterrupt
            return inner(model, x, y)

        return loss

    monkeypatch.setattr(zoo, "build_loss", interrupting_loss)
    with pytest.raises(KeyboardInterrupt):
        zoo.train(TINY.name, committed=True, progress=False)
    assert (tmp / "committed" / f"{TINY.name}.ckpt").is_file(), "the finished epoch must be checkpointed"
    monkeypatch.setattr(zoo, "build_loss", real_loss)
    resumed = zoo.train(TINY.name, committed=True, progress=False)
    assert _same_weights(resumed, reference)
    assert not (tmp / "committed" / f"{TINY.name}.ckpt").exists()


def test_cli_lists_and_verifies(tiny, capsys):
    assert cli.main(["verify"]) == 0
    assert cli.main(["verify", "--require-all"]) == 1  # the fast recipes have no weights in this empty folder
    zoo.train(TINY.name, committed=True, progress=False)
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert TINY.name in out and "ok" in out and "KiB" in out


def test_every_fast_recipe_loads_from_its_committed_weights_without_training(monkeypatch):
    monkeypatch.delenv("DEQLIB_ZOO_WEIGHTS", raising=False)
    monkeypatch.setattr(zoo, "_fit", lambda *a, **k: pytest.fail("a committed model was retrained"))
    rows = [r for r in zoo.status() if r["mode"] == "fast"]
    assert rows and all(r["committed"] == "ok" for r in rows), rows
    for row in rows:
        model = zoo.load(row["name"], allow_training=False)
        assert not model.training
        assert row["bytes"] < 1_000_000  # fast-mode models stay small enough to commit


def test_building_a_model_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = zoo.build(TINY)
    assert torch.equal(torch.rand(3), expected)
    assert _same_weights(a, zoo.build(TINY)), "the initial weights come from the recipe's seed"
