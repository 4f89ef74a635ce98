"""deqlib.checkpoint (issue 16): paths checked first, values checked at save time, a rotating backup that resume
falls back to, stale temporary files removed, corrupt files diagnosed as corrupt (never an unsafe-load advice).
The atomic-write and exact-resume basics are in test_train.py."""

import collections
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import deqlib
from deqlib import cells, data
from deqlib._io import remove_stale_temps
from deqlib.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    backup_path,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    save_model,
)
from deqlib.evaluate import save_json
from deqlib.losses import PGDAT
from deqlib.train import History, fit

pytestmark = pytest.mark.filterwarnings("ignore::deqlib.solvers.SolverConvergenceWarning")  # the tiny models

QUICK = dict(lr=3e-3, batch_size=32, scheduler="cosine", seed=3, progress=False, device="cpu")
UNSAFE = "weights_only=False"


@pytest.fixture(scope="module")
def train():
    return data.load("digits", "train").subset(96, seed=0)


def tiny(ds, seed=0):
    torch.manual_seed(seed)
    return cells.classifier_for(ds, "mlp", width=8, max_iter=6, tol=1e-2, backward_max_iter=4)


def temps(folder):
    return sorted(p for p in os.listdir(folder) if p.endswith(".tmp"))


def all_messages(exc):
    """The message of an exception and of every exception chained to it (what a traceback shows)."""
    out = []
    while exc is not None:
        out.append(str(exc))
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return " | ".join(out)


# ---------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda d: 5, TypeError, r"save_checkpoint: path must be a file path .*got int"),
        (lambda d: b"x.pt", TypeError, "got bytes"),
        (lambda d: "", ValueError, "empty"),
        (lambda d: d, ValueError, "is a folder"),
        (lambda d: (d / "f").write_text("x") and d / "f" / "sub" / "c.pt", ValueError, "'.*f' is a file, not a folder"),
    ],
)
def test_save_checkpoint_checks_the_path_first(tmp_path, make, exc, match):
    with pytest.raises(exc, match=match):
        save_checkpoint(make(tmp_path), {"epoch": 1})
    assert temps(tmp_path) == []


def test_every_path_argument_is_checked(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(TypeError, match="load_checkpoint: path"):
        load_checkpoint(5)
    with pytest.raises(TypeError, match="save_model: path"):
        save_model(5, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="save_model: cannot write"):
        save_model(blocker / "m.pt", torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="save_json: path"):
        save_json({"a": 1}, 5)
    with pytest.raises(ValueError, match="save_json: cannot write path .* is a file, not a folder"):
        save_json({"a": 1}, blocker / "r.json")
    with pytest.raises(TypeError, match="load_model_state: strict must be True or False"):
        load_model_state(tmp_path / "nope.pt", torch.nn.Linear(2, 2), strict="yes")


def test_fit_checks_the_checkpoint_path_before_the_first_epoch(tmp_path, train):
    calls = []

    def loss(model, x, y):
        calls.append(1)
        return torch.nn.functional.cross_entropy(model(x), y)

    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    for path, exc, match in [
        (5, TypeError, "fit: checkpoint must be a file path"),
        ("", ValueError, "fit: checkpoint must be a file path, got an empty string"),
        (blocker / "run.pt", ValueError, r"fit: cannot write checkpoint .*blocker' is a file, not a folder"),
        (blocker / "a" / "b" / "run.pt", ValueError, r"blocker' is a file, not a folder"),
        (tmp_path, ValueError, "fit: checkpoint .* is a folder"),
    ]:
        with pytest.raises(exc, match=match):
            fit(tiny(train), train, checkpoint=path, loss_fn=loss, epochs=1, **QUICK)
    assert calls == []  # refused before a single training batch
    # a good path's missing folders are created before the first epoch
    fit(tiny(train), train, checkpoint=tmp_path / "new" / "run.pt", loss_fn=loss, epochs=1, **QUICK)
    assert (tmp_path / "new" / "run.pt").is_file()


# ---------------------------------------------------------------------------------------------- save-time checks


class Thing:
    pass


@pytest.mark.parametrize(
    "state, match",
    [
        ({"loss": PGDAT(eps=0.1, alpha=0.05, steps=1)}, r"state\['loss'\] is a deqlib.losses.PGDAT"),
        ({"acc": np.float64(0.5)}, r"state\['acc'\] is a numpy.float64; store a Python number"),
        ({"w": np.zeros(3)}, r"state\['w'\] is a numpy.ndarray"),
        ({"history": History({"epoch": [1]})}, r"state\['history'\] is a .*History \(a dict subclass\)"),
        ({"nested": {"runs": [1, 2, {"x": Thing()}]}}, r"state\['nested'\]\['runs'\]\[2\]\['x'\] is a .*Thing"),
        ({"by_obj": {Thing(): 1}}, r"a key of state\['by_obj'\] is a .*Thing"),
        ({"dd": collections.defaultdict(list)}, r"state\['dd'\] is a collections.defaultdict"),
        ({"r": range(3)}, r"state\['r'\] is a range"),
        ({"f": print}, r"state\['f'\] is a builtin_function_or_method"),
    ],
)
def test_save_refuses_what_weights_only_cannot_load(tmp_path, state, match):
    path = tmp_path / "c.pt"
    with pytest.raises(TypeError, match=match) as info:
        save_checkpoint(path, state)
    assert "weights_only=True" in str(info.value) and UNSAFE not in str(info.value)
    assert os.listdir(tmp_path) == []  # nothing written


def test_save_accepts_everything_weights_only_loads(tmp_path):
    state = {
        "t": torch.arange(3.0),
        "p": torch.nn.Parameter(torch.ones(2)),
        "od": collections.OrderedDict(a=1),
        "set": {1, 2},
        "size": torch.Size([2, 3]),
        "dtype": torch.float16,
        "device": torch.device("cpu"),
        "layout": torch.strided,
        "c": 1 + 2j,
        "b": b"raw",
        "nested": [(1, 2.5, "s", None, True)],
        "model": torch.nn.Linear(2, 2).state_dict(),
        "optim": torch.optim.Adam(torch.nn.Linear(2, 2).parameters()).state_dict(),
    }
    cyclic = [1]
    cyclic.append(cyclic)
    save_checkpoint(tmp_path / "c.pt", {**state, "cyclic": cyclic})
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["od"] == {"a": 1} and back["size"] == torch.Size([2, 3]) and back["c"] == 1 + 2j
    assert back["cyclic"][1] is back["cyclic"]


# ---------------------------------------------------------------------------------------------- diagnosis


def test_corrupt_files_are_called_corrupt_and_no_unsafe_advice(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(np.random.RandomState(0).bytes(4096))  # random bytes
    with pytest.raises(CheckpointError, match="is corrupt or truncated: neither a zip archive") as info:
        load_checkpoint(path)
    assert UNSAFE not in all_messages(info.value) and "weights only" not in all_messages(info.value).lower()
    path.write_bytes(b"\x80" + np.random.RandomState(1).bytes(100))  # looks like a legacy pickle, is not
    with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
        load_checkpoint(path)
    assert UNSAFE not in all_messages(info.value)


def test_a_flipped_bit_is_caught_by_the_checksum(tmp_path):
    """torch.load itself loads such a file without a word, with a wrong weight."""
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.randn(1000)})
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_checkpoint(path)


class Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def test_unsafe_objects_are_refused_without_advising_an_unsafe_load(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"objects other than tensors .*getcwd.*refuses") as info:
        load_checkpoint(path)
    assert UNSAFE not in all_messages(info.value)


def test_map_location_is_checked_before_loading(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.ones(2)})
    with pytest.raises(ValueError, match="map_location 'gpu' is not a device name"):
        load_checkpoint(path, map_location="gpu")
    with pytest.raises(TypeError, match="map_location must be"):
        load_checkpoint(path, map_location=3.5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_checkpoint(path, map_location="cuda")
    assert torch.equal(load_checkpoint(path, map_location=torch.device("cpu"))["w"], torch.ones(2))


# ---------------------------------------------------------------------------------------------- rotating backup


def test_each_save_keeps_the_previous_checkpoint_as_backup(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, {"epoch": 1})
    assert not os.path.exists(backup_path(path))  # nothing to keep yet
    for epoch in (2, 3):
        save_checkpoint(path, {"epoch": epoch})
        assert load_checkpoint(path)["epoch"] == epoch and load_checkpoint(backup_path(path))["epoch"] == epoch - 1
    assert sorted(os.listdir(tmp_path)) == ["run.pt", "run.pt.bak"]
    save_checkpoint(path, {"epoch": 4}, backup=False)
    assert load_checkpoint(backup_path(path))["epoch"] == 2
    with pytest.raises(TypeError, match="backup must be True or False"):
        save_checkpoint(path, {"epoch": 5}, backup="yes")


def test_a_damaged_file_never_replaces_a_good_backup(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(100)})
    save_checkpoint(path, {"epoch": 2, "w": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:300])  # damaged from outside
    save_checkpoint(path, {"epoch": 3, "w": torch.ones(100)})
    assert load_checkpoint(path)["epoch"] == 3 and load_checkpoint(backup_path(path))["epoch"] == 1


def test_load_falls_back_to_the_backup_with_a_warning(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, {"epoch": 1})
    save_checkpoint(path, {"epoch": 2})
    path.write_bytes(path.read_bytes()[:200])  # a partial copy
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)  # only with use_backup
    with pytest.warns(CheckpointWarning, match=r"corrupt or truncated.*loaded its backup .*run.pt.bak"):
        assert load_checkpoint(path, use_backup=True) == {"epoch": 1}
    os.remove(path)  # gone altogether
    with pytest.warns(CheckpointWarning, match=r"no checkpoint at .*loaded its backup"):
        assert load_checkpoint(path, use_backup=True) == {"epoch": 1}
    path.write_bytes(b"junk")
    with open(backup_path(path), "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(CheckpointError, match="its backup is unusable too"):
        load_checkpoint(path, use_backup=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "never.pt", use_backup=True)


def _run(train, path, epochs, **kw):
    model = tiny(train)
    return model, fit(model, train, checkpoint=path, epochs=epochs, **{**QUICK, **kw})


def test_fit_resumes_from_the_backup_to_identical_weights(tmp_path, train):
    ref, ref_h = _run(train, tmp_path / "ref.pt", 3)
    path = tmp_path / "run.pt"
    _run(train, path, 3)
    assert load_checkpoint(backup_path(path))["epoch"] == 2
    _run(train, path, 3)  # finished: nothing trained, nothing saved
    path.write_bytes(path.read_bytes()[:1000])  # the final checkpoint damaged from outside
    with pytest.warns(CheckpointWarning, match="loaded its backup"):
        model, h = _run(train, path, 3)  # epoch 3 trained again from the backup
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert {k: v for k, v in h.items() if k != "seconds"} == {k: v for k, v in ref_h.items() if k != "seconds"}
    assert load_checkpoint(path)["epoch"] == 3 and load_checkpoint(backup_path(path))["epoch"] == 2


def test_a_fresh_run_keeps_no_backup_of_another_run(tmp_path, train):
    path = tmp_path / "run.pt"
    _run(train, path, 2, seed=1)
    assert load_checkpoint(backup_path(path))["seed"] == 1
    _run(train, path, 1, seed=2, resume=False)
    assert load_checkpoint(path)["seed"] == 2 and not os.path.exists(backup_path(path))


# ---------------------------------------------------------------------------------------------- stale temporary files


def test_stale_temporary_files_are_removed_at_the_next_save_and_resume(tmp_path, train):
    path = tmp_path / "run.pt"
    mine = [".run.pt.abcd1234.tmp", ".run.pt.bak.zz_99xyz.tmp"]
    others = [".run.pt.x.abcd1234.tmp", ".other.pt.abcd1234.tmp", "run.pt.tmp", ".run.pt.tooshort.tmp.txt"]
    for name in mine + others:
        (tmp_path / name).write_bytes(b"partial")
    save_checkpoint(path, {"epoch": 1})
    assert sorted(os.listdir(tmp_path)) == sorted(["run.pt", mine[1]] + others)  # the backup's at the next resume
    for name in mine:
        (tmp_path / name).write_bytes(b"partial")
    fit(tiny(train), train, checkpoint=tmp_path / "fit.pt", epochs=1, **QUICK)
    (tmp_path / ".fit.pt.abcd1234.tmp").write_bytes(b"partial")
    (tmp_path / ".fit.pt.bak.abcd1234.tmp").write_bytes(b"partial")
    fit(tiny(train), train, checkpoint=tmp_path / "fit.pt", epochs=1, **QUICK)  # a resume of a finished run
    assert not any(n.startswith(".fit.pt") for n in os.listdir(tmp_path))
    assert remove_stale_temps(path) == [".run.pt.abcd1234.tmp"]
    assert all((tmp_path / n).exists() for n in others)


_KILLED_SAVE = r"""
import os, signal, sys, torch
from deqlib.checkpoint import save_checkpoint
path = sys.argv[1]
save_checkpoint(path, {"epoch": 1, "w": torch.ones(1000)})
real = torch.save
def dying(obj, f, *a, **k):
    f.write(b"PK\x03\x04 half a zip")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying
save_checkpoint(path, {"epoch": 2, "w": torch.zeros(1000)})
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_kill_during_a_save_leaves_the_old_file_and_a_temp_that_the_next_save_removes(tmp_path):
    path = tmp_path / "run.pt"
    root = os.path.dirname(os.path.dirname(os.path.abspath(deqlib.__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(path)], env=env, timeout=120, capture_output=True)
    assert done.returncode == -9, done.stderr
    left = temps(tmp_path)
    assert len(left) == 1 and left[0].startswith(".run.pt.")  # what a kill leaves behind
    assert load_checkpoint(path)["epoch"] == 1  # the previous checkpoint, intact
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_checkpoint(path, {"epoch": 2})
    assert temps(tmp_path) == [] and load_checkpoint(path)["epoch"] == 2


def test_a_temporary_file_of_a_live_writer_is_never_removed(tmp_path):
    """A reader (load with use_backup, fit's resume) or a second save must not delete a write in progress: only the
    temporary files of writers that no longer run are stale."""
    path = tmp_path / "run.pt"
    alive = tmp_path / f".run.pt.{os.getpid()}.abcd1234.tmp"  # this process: alive
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".run.pt.{int(child.stdout)}.abcd1234.tmp"  # a finished (reaped) process
    for f in (alive, dead):
        f.write_bytes(b"partial")
    assert remove_stale_temps(path) == [dead.name]
    assert alive.exists()


def test_a_reader_during_a_save_does_not_break_the_save(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    save_checkpoint(path, {"epoch": 2})
    real_save = torch.save

    def save_with_a_reader(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        assert load_checkpoint(path, use_backup=True)["epoch"] == 2  # another process reads meanwhile
        assert len(temps(tmp_path)) == 1  # ... and leaves the temporary file of this save alone

    monkeypatch.setattr(torch, "save", save_with_a_reader)
    save_checkpoint(path, {"epoch": 3})
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["epoch"] == 3 and temps(tmp_path) == []
