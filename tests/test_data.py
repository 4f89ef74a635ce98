"""Tests of deqlib.data: the embedded splits, and the torchvision path on small files written here.

No test touches the network: an autouse fixture replaces torchvision's download primitives (and
urllib's urlopen) by functions that raise URLError, so a download attempt fails at once.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from deqlib import data

# ----------------------------------------------------------------------------------------------------
# Network guard
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every download path in torchvision raise URLError; returns the URLs that were tried."""
    import torchvision.datasets.utils as tvu

    tried: list[str] = []

    def refuse(url, *args, **kwargs):
        tried.append(str(getattr(url, "full_url", url)))
        raise urllib.error.URLError("no network")

    # download_url() first resolves redirects (_get_redirect_url), then fetches (_urlretrieve); both are
    # looked up in torchvision.datasets.utils at call time, so MNIST, CIFAR10 and SVHN all hit these.
    monkeypatch.setattr(tvu, "_get_redirect_url", refuse)
    monkeypatch.setattr(tvu, "_urlretrieve", refuse)
    monkeypatch.setattr(tvu, "_is_remote_location_available", lambda: False)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)  # belt and braces
    return tried


def _exists_only(fpath, md5=None) -> bool:
    # Our small files cannot match the real md5 sums, so the md5 part of the check is skipped.
    return os.path.isfile(fpath)


@pytest.fixture
def skip_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace ONLY torchvision's md5 integrity check (CIFAR-10, SVHN) by an existence check."""
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.svhn as tv_svhn

    monkeypatch.setattr(tv_cifar, "check_integrity", _exists_only)
    monkeypatch.setattr(tv_svhn, "check_integrity", _exists_only)


# ----------------------------------------------------------------------------------------------------
# Embedded data sets
# ----------------------------------------------------------------------------------------------------

SIZES = {"digits": (1437, 360, (1, 8, 8)), "mnist5k": (4000, 1000, (1, 28, 28))}


def _row_hashes(X: torch.Tensor) -> list[bytes]:
    X = X.reshape(X.shape[0], -1).contiguous().numpy()
    return [hashlib.sha1(row.tobytes()).digest() for row in X]


@pytest.mark.parametrize("name", data.EMBEDDED)
def test_embedded_shapes_dtypes_sizes(name: str) -> None:
    n_train, n_test, shape = SIZES[name]
    for split, n in (("train", n_train), ("test", n_test)):
        ds = data.load(name, split)
        assert isinstance(ds, data.ImageDataset)
        assert len(ds) == n
        assert ds.name == name and ds.split == split
        assert ds.images.shape == (n, *shape) and ds.images.dtype == torch.float32
        assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
        assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
        assert float(ds.images.max()) == 1.0  # 16/16 and 255/255 both occur
        assert ds.image_shape == shape
        assert ds.num_classes == 10 and ds.classes == [str(d) for d in range(10)]
        assert set(ds.labels.tolist()) == set(range(10))
        X, y = ds.tensors()
        assert X.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(X, ds.images) and torch.equal(y, ds.labels)
        X.zero_()  # tensors() returns a copy
        assert float(ds.images.max()) == 1.0
        assert repr(ds) == f"ImageDataset({name!r}, split={split!r}, n={n}, shape={'x'.join(map(str, shape))})"


@pytest.mark.parametrize("name", data.EMBEDDED)
def test_embedded_split_is_a_stratified_partition(name: str) -> None:
    source_X, source_y = data.embedded.source(name)
    train, test = data.load(name, "train"), data.load(name, "test")
    # Disjoint, and together exactly the source (the source's images are all distinct).
    h_train, h_test = _row_hashes(train.images), _row_hashes(test.images)
    h_source = _row_hashes(torch.from_numpy(source_X.copy()))
    assert len(set(h_source)) == len(h_source)
    assert not set(h_train) & set(h_test)
    assert set(h_train) | set(h_test) == set(h_source)
    assert len(set(h_train)) == len(train) and len(set(h_test)) == len(test)
    # The same in index terms, against the full source arrays.
    i_train, i_test = data.embedded.split_indices(name)
    assert not set(i_train.tolist()) & set(i_test.tolist())
    assert sorted(i_train.tolist() + i_test.tolist()) == list(range(len(source_y)))
    assert np.array_equal(train.images.numpy(), source_X[i_train])
    assert np.array_equal(test.labels.numpy(), source_y[i_test])
    # Stratified: per-class test counts within one of proportional.
    total = np.bincount(source_y, minlength=10)
    expected = total * len(test) / total.sum()
    got = np.bincount(test.labels.numpy(), minlength=10)
    assert np.all(np.abs(got - expected) <= 1), (got, expected)
    # Not sorted by class (a shuffled order).
    assert (np.diff(test.labels.numpy()) != 0).sum() > len(test) // 3


# Pinned first test indices: the split must never change, on any machine or NumPy version.
PINNED_TEST_HEAD = {
    "digits": [43, 1094, 561, 803, 1501, 1143, 115, 554],
    "mnist5k": [3400, 1865, 153, 4127, 4096, 1868, 469, 100],
}


@pytest.mark.parametrize("name", data.EMBEDDED)
def test_embedded_split_is_fixed(name: str) -> None:
    a_train, a_test = data.load(name, "train"), data.load(name, "test")
    # Recompute from scratch under a different global RNG state.
    data.embedded.split_indices.cache_clear()
    data.embedded.stats.cache_clear()
    np.random.seed(12345)
    torch.manual_seed(12345)
    b_train, b_test = data.load(name, "train"), data.load(name, "test")
    assert torch.equal(a_train.images, b_train.images) and torch.equal(a_train.labels, b_train.labels)
    assert torch.equal(a_test.images, b_test.images) and torch.equal(a_test.labels, b_test.labels)
    assert data.embedded.split_indices(name)[1][:8].tolist() == PINNED_TEST_HEAD[name]


@pytest.mark.parametrize("name", data.EMBEDDED)
def test_embedded_mean_std(name: str) -> None:
    train, test = data.load(name, "train"), data.load(name, "test")
    assert train.mean == test.mean and train.std == test.std
    assert isinstance(train.mean, tuple) and len(train.mean) == 1 and isinstance(train.mean[0], float)
    X = train.images.double()
    assert train.mean[0] == pytest.approx(float(X.mean()), abs=1e-6)
    assert train.std[0] == pytest.approx(float(X.std(unbiased=False)), abs=1e-6)
    if name == "mnist5k":  # real MNIST digits: close to MNIST's standard statistics
        assert train.mean[0] == pytest.approx(0.1307, abs=0.01)
        assert train.std[0] == pytest.approx(0.3081, abs=0.01)


def test_embedded_loads_are_independent_copies() -> None:
    a = data.load("digits", "test")
    a.images.zero_()
    b = data.load("digits", "test")
    assert float(b.images.max()) == 1.0


@pytest.mark.parametrize("name", data.EMBEDDED)
def test_getitem_types(name: str) -> None:
    ds = data.load(name, "test")
    x, y = ds[3]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == ds.image_shape
    assert type(y) is int and y == int(ds.labels[3])
    assert torch.equal(x, ds.images[3])
    x_last, _ = ds[-1]
    assert torch.equal(x_last, ds.images[len(ds) - 1])
    loader = torch.utils.data.DataLoader(ds, batch_size=16)
    xb, yb = next(iter(loader))
    assert xb.shape == (16, *ds.image_shape) and yb.dtype == torch.int64


def test_subset_is_stratified_seeded_deterministic() -> None:
    test = data.load("digits", "test")
    sub = test.subset(100, seed=0)
    assert isinstance(sub, data.ImageDataset) and len(sub) == 100
    assert (sub.name, sub.split, sub.mean, sub.std, sub.classes) == (
        test.name,
        test.split,
        test.mean,
        test.std,
        test.classes,
    )
    # Stratified: within one of proportional, per class.
    full = np.bincount(test.labels.numpy(), minlength=10)
    got = np.bincount(sub.labels.numpy(), minlength=10)
    assert got.sum() == 100
    assert np.all(np.abs(got - full * 100 / full.sum()) <= 1), got
    # Its samples come from the parent, with their labels.
    parent = dict(zip(_row_hashes(test.images), test.labels.tolist()))
    for h, label in zip(_row_hashes(sub.images), sub.labels.tolist()):
        assert parent[h] == label
    assert len(set(_row_hashes(sub.images))) == 100
    # Seeded and deterministic, whatever the global RNG state.
    np.random.seed(7)
    torch.manual_seed(7)
    again = test.subset(100, seed=0)
    assert torch.equal(again.images, sub.images) and torch.equal(again.labels, sub.labels)
    other = test.subset(100, seed=1)
    assert not torch.equal(other.images, sub.images)
    # Edge cases.
    assert torch.equal(test.subset(len(test)).labels.sort().values, test.labels.sort().values)
    for bad in (0, len(test) + 1, -5):
        with pytest.raises(ValueError, match="n must be"):
            test.subset(bad)
    for bad in (2.5, True):  # a wrong type is a TypeError (deqlib's one validation policy)
        with pytest.raises(TypeError, match="n must be"):
            test.subset(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        test.subset(10, seed=-1)


def test_subset_of_mnist5k_500_per_test_split() -> None:
    sub = data.load("mnist5k", "test").subset(500, seed=3)
    assert np.bincount(sub.labels.numpy(), minlength=10).tolist() == [50] * 10


def test_image_dataset_validates_inputs() -> None:
    kw = dict(name="x", split="train", num_classes=2, mean=(0.5,), std=(0.5,), classes=["a", "b"])
    ok = data.ImageDataset(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 1]), **kw)
    assert ok.image_shape == (1, 2, 2) and ok.labels.dtype == torch.int64
    with pytest.raises(ValueError, match="4-d"):
        data.ImageDataset(torch.zeros(3, 2, 2), torch.tensor([0, 1, 1]), **kw)
    with pytest.raises(TypeError, match="float32"):
        data.ImageDataset(torch.zeros(3, 1, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 1]), **kw)
    with pytest.raises(ValueError, match="labels must have shape"):
        data.ImageDataset(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1]), **kw)
    with pytest.raises(ValueError, match="mean and std"):
        data.ImageDataset(torch.zeros(3, 3, 2, 2), torch.tensor([0, 1, 1]), **kw)


def _tiny(images=None, labels=None, **over):
    kw = dict(name="x", split="train", num_classes=2, mean=(0.5,), std=(0.5,), classes=["a", "b"])
    kw.update(over)
    images = torch.rand(3, 1, 2, 2) if images is None else images
    return data.ImageDataset(images, torch.tensor([0, 1, 1]) if labels is None else labels, **kw)


@pytest.mark.parametrize("labels", [[0, 1, 2], [0, 1, 19], [0, -1, 1], [-100, 1, 1]])
def test_image_dataset_refuses_labels_outside_the_classes(labels) -> None:
    """Issue 16: labels >= num_classes and negative labels (-100, torch's ignore index, too) were accepted."""
    with pytest.raises(ValueError, match=r"ImageDataset: labels must be class indices in \[0, 2\)"):
        _tiny(labels=torch.tensor(labels))
    assert _tiny(labels=torch.tensor([0, 1, 1])).num_classes == 2


def test_image_dataset_refuses_float_images_on_0_255() -> None:
    """Issue 16: float images on 0..255 were accepted although pixels are in [0, 1] everywhere else."""
    with pytest.raises(
        ValueError, match=r"float32 images must have pixels in \[0, 1\], got \[.*\] \(0..255 values\? divide by 255"
    ):
        _tiny(torch.rand(3, 1, 2, 2) * 255)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\], got \[-0.5"):
        _tiny(torch.full((3, 1, 2, 2), -0.5))
    with pytest.raises(ValueError, match="images contains NaN or Inf"):
        _tiny(torch.full((3, 1, 2, 2), float("nan")))
    uint8 = _tiny((torch.rand(3, 1, 2, 2) * 255).to(torch.uint8))  # 0..255 as uint8 is the stored form
    assert uint8.tensors()[0].max() <= 1.0


def test_image_dataset_refuses_other_bad_fields() -> None:
    with pytest.raises(ValueError, match="num_classes must be an int >= 2, got 0"):
        _tiny(num_classes=0, classes=[])
    with pytest.raises(TypeError, match="num_classes must be an int, got str"):
        _tiny(num_classes="2")
    with pytest.raises(ValueError, match=r"std must be > 0 in every channel, got \(0.0,\)"):
        _tiny(std=(0.0,))
    with pytest.raises(TypeError, match="mean must be a sequence of numbers"):
        _tiny(mean="0.5")
    with pytest.raises(TypeError, match="labels must be integer class indices"):
        _tiny(labels=["a", "b", "b"])
    with pytest.raises(TypeError, match="name must be a str, got int 5"):
        _tiny(name=5)
    with pytest.raises(ValueError, match="ImageDataset.tensors: device 'gpu0' is not a device name"):
        _tiny().tensors(device="gpu0")


def test_load_checks_root_and_download() -> None:
    with pytest.raises(TypeError, match=r"data.load: root must be a path \(a str or an os.PathLike\), got int 5"):
        data.load("mnist", root=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data.load: download must be True or False, got str 'no'"):
        data.load("digits", download="no")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------
# Names, splits, root
# ----------------------------------------------------------------------------------------------------


def test_available_and_names() -> None:
    assert data.available() == ("digits", "mnist5k", "mnist", "fashion-mnist", "svhn", "cifar10")
    assert data.load("DIGITS", "test").name == "digits"
    assert data.load(" Digits ", "TEST").split == "test"


def test_unknown_name_lists_available() -> None:
    with pytest.raises(ValueError) as info:
        data.load("imagenet")
    msg = str(info.value)
    assert "'imagenet'" in msg and "\n" not in msg
    for name in data.available():
        assert name in msg
    with pytest.raises(TypeError):
        data.load(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("split", ["val", "validation", "", None])
def test_unknown_split(split) -> None:
    error = TypeError if split is None else ValueError  # a wrong type is a TypeError
    with pytest.raises(error, match="unknown split" if split is not None else "split must be one of"):
        data.load("digits", split)
    with pytest.raises(error, match="unknown split" if split is not None else "split must be one of"):
        data.load("mnist", split, root="/nonexistent", download=False)


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    assert data.default_root() == Path.home() / ".cache" / "deqlib" / "data"
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "here"))
    assert data.default_root() == tmp_path / "here"
    with pytest.raises(data.DataUnavailableError) as info:
        data.load("mnist", download=False)
    assert str(tmp_path / "here") in str(info.value)


# ----------------------------------------------------------------------------------------------------
# Torchvision data sets, from small files in torchvision's own on-disk formats
# ----------------------------------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX ("SN3 Pascal Vincent") file: big-endian magic 0x0000 <type 0x08 = uint8> <ndim>, dims, bytes."""
    assert array.dtype == np.uint8
    header = struct.pack(">I", (0x08 << 8) | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes(order="C"))


def _write_mnist_like(root: Path, folder: str, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    written = {}
    for split, prefix, n in (("train", "train", 7), ("test", "t10k", 5)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[split] = (images, labels)
    return written


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_idx_files(tmp_path: Path, name: str, folder: str, no_network: list[str]) -> None:
    written = _write_mnist_like(tmp_path, folder, np.random.default_rng(0))
    for split in ("train", "test"):
        images, labels = written[split]
        ds = data.load(name, split, root=tmp_path, download=False)
        assert ds.name == name and ds.split == split and len(ds) == len(labels)
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(labels), 1, 28, 28)
        assert np.array_equal(ds.images[:, 0].numpy(), images)
        assert np.array_equal(ds.labels.numpy(), labels.astype(np.int64)) and ds.labels.dtype == torch.int64
        x, y = ds[2]
        assert x.dtype == torch.float32 and x.shape == (1, 28, 28) and type(y) is int and y == labels[2]
        assert torch.allclose(x, torch.from_numpy(images[2]).float()[None] / 255)
        X, Y = ds.tensors()
        assert X.dtype == torch.float32 and float(X.max()) <= 1.0 and torch.equal(Y, ds.labels)
        assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10 and len(ds.classes) == 10
    # download=True with the files present reads them and downloads nothing; aliases work.
    alias = "fashion_mnist" if name == "fashion-mnist" else "MNIST"
    ds = data.load(alias, "test", root=tmp_path, download=True)
    assert ds.name == name and np.array_equal(ds.labels.numpy(), written["test"][1])
    expected = ((0.1307,), (0.3081,)) if name == "mnist" else ((0.2860,), (0.3530,))
    assert (ds.mean, ds.std) == expected
    if name == "fashion-mnist":
        assert ds.classes[0] == "T-shirt/top" and data.load("FashionMNIST", root=tmp_path).name == name
    else:
        assert ds.classes == [str(d) for d in range(10)]
    assert no_network == []  # the files were there: no download was attempted


def _cifar_batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[int]]:
    # Each row: 1024 red, then 1024 green, then 1024 blue bytes, row-major 32x32.
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), rng.integers(0, 10, size=n).tolist()


def test_cifar10_pickles(tmp_path: Path, skip_md5: None, no_network: list[str]) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": 3, "num_vis": 3072}, f)
    train_rows, train_labels = [], []
    for k in range(1, 6):
        rows, labels = _cifar_batch(rng, 3)
        with open(folder / f"data_batch_{k}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {k} of 5", "data": rows, "labels": labels}, f)
        train_rows.append(rows)
        train_labels += labels
    test_rows, test_labels = _cifar_batch(rng, 4)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "data": test_rows, "labels": test_labels}, f)

    for split, rows, labels in (("train", np.vstack(train_rows), train_labels), ("test", test_rows, test_labels)):
        ds = data.load("cifar10", split, root=tmp_path, download=False)
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(labels), 3, 32, 32)
        assert ds.images.is_contiguous()
        assert np.array_equal(ds.images.numpy(), rows.reshape(-1, 3, 32, 32))
        # Channel 0 of image 0 is the first 1024 bytes of its row.
        assert np.array_equal(ds.images[0, 0].reshape(-1).numpy(), rows[0, :1024])
        assert ds.labels.tolist() == labels and ds.labels.dtype == torch.int64
        assert ds.classes == names and ds.image_shape == (3, 32, 32)
        assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2470, 0.2435, 0.2616)
        x, y = ds[1]
        assert torch.allclose(x, torch.from_numpy(rows[1].reshape(3, 32, 32)).float() / 255) and y == labels[1]
    assert no_network == []


def test_svhn_mat_files(tmp_path: Path, skip_md5: None, no_network: list[str]) -> None:
    import scipy.io

    rng = np.random.default_rng(2)
    written = {}
    for split, n in (("train", 6), ("test", 4)):
        X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # (H, W, C, N) as in the real files
        digits = np.array([0, 1, 9, 0, 5, 3][:n], dtype=np.uint8)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)  # SVHN writes digit 0 as 10
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": X, "y": y})
        written[split] = (X, digits)
    for split, (X, digits) in written.items():
        ds = data.load("svhn", split, root=tmp_path, download=False)
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (X.shape[3], 3, 32, 32)
        assert ds.images.is_contiguous()
        assert np.array_equal(ds.images.numpy(), X.transpose(3, 2, 0, 1))  # [n, c, h, w] = X[h, w, c, n]
        assert ds.images[1, 2, 5, 7].item() == X[5, 7, 2, 1]
        assert ds.labels.tolist() == digits.tolist() and ds.labels.dtype == torch.int64
        assert ds.mean == (0.4377, 0.4438, 0.4728) and ds.std == (0.1980, 0.2010, 0.1970)
        assert ds.classes == [str(d) for d in range(10)]
    assert no_network == []


# ----------------------------------------------------------------------------------------------------
# Missing data
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", data.TORCHVISION)
def test_download_failure_is_one_line(tmp_path: Path, name: str, no_network: list[str]) -> None:
    root = tmp_path / "empty"
    with pytest.raises(data.DataUnavailableError) as info:
        data.load(name, "test", root=root, download=True)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"could not download {name!r} into {root}" in msg
    # MNIST's download wraps the URLError of each mirror into one multi-line RuntimeError.
    assert "no network" in msg and ("URLError" in msg or "urlopen error" in msg)
    assert "deqlib.data.load('mnist5k')" in msg and "deqlib.data.load('digits')" in msg
    assert isinstance(info.value, RuntimeError) and info.value.__cause__ is not None
    assert no_network, "a download should have been attempted (and refused)"


@pytest.mark.parametrize("name", data.TORCHVISION)
def test_download_false_on_empty_root(tmp_path: Path, name: str, no_network: list[str]) -> None:
    root = tmp_path / "empty"
    with pytest.raises(data.DataUnavailableError) as info:
        data.load(name, root=root, download=False)
    msg = str(info.value)
    assert "\n" not in msg and name in msg and str(root) in msg and "download=False" in msg
    assert "'mnist5k'" in msg and "'digits'" in msg
    assert no_network == [] and not root.exists()  # nothing attempted, nothing created
