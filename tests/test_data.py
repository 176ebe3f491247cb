"""Tests of aimc.data on small fake files (and the real MNIST file if present)."""

from __future__ import annotations

import builtins
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from aimc.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    MNIST_MEAN,
    MNIST_STD,
    cifar10,
    class_balanced_subset,
    default_data_root,
    digits,
    first_per_class,
    load_dataset,
    mnist,
    random_crop_flip,
)
from aimc.errors import AimcError, ConfigError, DataError, FileFormatError

REAL_MNIST = default_data_root() / "mnist.npz"


# ----------------------------------------------------------------------------- fake files
def _fake_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _write_cifar_npz(
    root: Path, split: str, n_per_class: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    x = _fake_images(10 * n_per_class, seed)
    y = np.tile(np.arange(10, dtype=np.uint8), n_per_class)
    np.savez(root / f"cifar10_{split}.npz", x=x, y=y)
    return x, y


def _write_batch(path: Path, x_hwc: np.ndarray, labels: list[int]) -> None:
    data = np.ascontiguousarray(x_hwc.transpose(0, 3, 1, 2)).reshape(len(labels), 3072)
    batch = {b"batch_label": b"fake", b"labels": labels, b"data": data,
             b"filenames": [b"a.png"] * len(labels)}
    with open(path, "wb") as fh:
        pickle.dump(batch, fh, protocol=3)  # protocol 3+ stores bytes natively, like Python 2 str


def _py2_style_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A protocol-2 pickle as Python 2's cPickle writes a CIFAR batch (BINSTRING, numpy.core path)."""

    def s(b: bytes) -> bytes:  # BINSTRING
        return b"T" + struct.pack("<I", len(b)) + b

    def i(v: int) -> bytes:  # BININT
        return b"J" + struct.pack("<i", v)

    n = data.shape[0]
    arr = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b") + b"\x87R"
           + b"(" + i(1) + i(n) + i(3072) + b"\x86"
           + b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
           + b"(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb"
           + b"\x89" + s(data.tobytes()) + b"tb")
    lab = b"](" + b"".join(i(v) for v in labels) + b"e"
    return b"\x80\x02}(" + s(b"data") + arr + s(b"labels") + lab + b"u."


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    _write_cifar_npz(tmp_path, "train", 3, seed=1)
    _write_cifar_npz(tmp_path, "test", 2, seed=2)
    return tmp_path


@pytest.fixture
def batches_root(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    bdir = tmp_path / "cifar-10-batches-py"
    bdir.mkdir()
    xs, ys = [], []
    for k, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        x = _fake_images(10, seed=10 + k)
        y = [(j + k) % 10 for j in range(10)]
        _write_batch(bdir / name, x, y)
        xs.append(x)
        ys.append(y)
    return tmp_path, np.concatenate(xs[:5]), np.concatenate(ys[:5])


def _write_mnist(root: Path, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }
    np.savez(root / "mnist.npz", **arrays)
    return arrays


# ----------------------------------------------------------------------------- digits
def test_digits_shapes_dtypes_and_normalisation() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    train, test = digits("train"), digits("test")
    x, y = train.tensors
    assert x.shape == (1347, 1, 8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    assert len(test) == 450 and test.tensors[0].shape[1:] == (1, 8, 8)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3
    # independent re-computation: pixel/16 standardised with the train split's statistics
    bunch = load_digits()
    tr, te = train_test_split(np.arange(1797), test_size=0.25, random_state=0, stratify=bunch.target)
    raw = bunch.images.astype(np.float64) / 16.0
    mean, std = raw[tr].mean(), raw[tr].std()
    k = int(np.sort(te)[7])
    assert test.tensors[1][7].item() == bunch.target[k]
    assert test.tensors[0][7, 0].numpy() == pytest.approx((raw[k] - mean) / std, abs=1e-5)
    # a zero pixel (digit background) maps to -mean/std in both splits
    assert x.min().item() == pytest.approx(-mean / std, abs=1e-5)


def test_digits_split_is_stratified_and_seeded() -> None:
    a, b = digits("train", seed=0), digits("train", seed=0)
    assert torch.equal(a.tensors[0], b.tensors[0])
    c = digits("train", seed=1)
    assert not torch.equal(a.tensors[1], c.tensors[1])
    assert len(a) + len(digits("test", seed=0)) == 1797
    counts = torch.bincount(digits("test", seed=0).tensors[1], minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47  # 25 % of ~180 per class
    with pytest.raises(ConfigError):
        digits("train", test_fraction=1.5)
    with pytest.raises(ConfigError):
        digits("valid")


# ----------------------------------------------------------------------------- mnist
def test_mnist_fake_file(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path)
    arrays["x_test"][0, 3, 4] = 255
    arrays["x_test"][0, 3, 5] = 0
    np.savez(tmp_path / "mnist.npz", **arrays)
    ds = mnist("test", root=tmp_path)
    x, y = ds.tensors
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x[0, 0, 3, 4].item() == pytest.approx((1 - MNIST_MEAN) / MNIST_STD, rel=1e-6)
    assert x[0, 0, 3, 5].item() == pytest.approx(-MNIST_MEAN / MNIST_STD, rel=1e-6)
    assert len(mnist("train", root=tmp_path)) == 20
    assert len(mnist("train", root=tmp_path, limit=10)) == 10


def test_mnist_env_var_is_the_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_mnist(tmp_path)
    monkeypatch.setenv("AIMC_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    assert len(mnist("test")) == 10
    assert len(load_dataset("mnist", "train")) == 20


def test_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="AIMC_DATA") as info:
        mnist("train", root=tmp_path)
    assert str(tmp_path / "mnist.npz") in str(info.value)
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8))
    with pytest.raises(FileFormatError, match="x_test"):  # missing key
        mnist("test", root=tmp_path)
    np.savez(tmp_path / "mnist.npz", x_test=np.zeros((2, 28, 27), np.uint8), y_test=np.zeros(2, np.uint8))
    with pytest.raises(FileFormatError, match=r"expected shape \(N, 28, 28\)"):
        mnist("test", root=tmp_path)
    np.savez(tmp_path / "mnist.npz", x_test=np.zeros((2, 28, 28), np.uint8),
             y_test=np.array([0, 10], np.uint8))
    with pytest.raises(FileFormatError, match="labels"):
        mnist("test", root=tmp_path)


@pytest.mark.skipif(not REAL_MNIST.is_file(), reason="real mnist.npz not available")
def test_real_mnist_shapes() -> None:
    test = mnist("test")
    x, y = test.tensors
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ----------------------------------------------------------------------------- cifar10 (npz)
def test_cifar_npz_shapes_and_normalisation(cifar_root: Path) -> None:
    x, y = _write_cifar_npz(cifar_root, "test", 2, seed=3)
    x[0, 1, 2] = (255, 0, 128)  # HWC pixel at row 1, column 2
    np.savez(cifar_root / "cifar10_test.npz", x=x, y=y)
    ds = cifar10("test", root=cifar_root)
    assert len(ds) == 20 and not ds.augment
    img, label = ds[0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert label.dtype == torch.int64 and label.item() == 0
    expected = [(1 - CIFAR10_MEAN[0]) / CIFAR10_STD[0], -CIFAR10_MEAN[1] / CIFAR10_STD[1],
                (128 / 255 - CIFAR10_MEAN[2]) / CIFAR10_STD[2]]
    assert img[:, 1, 2].tolist() == pytest.approx(expected, rel=1e-5)
    raw = cifar10("test", root=cifar_root, normalize=False)[0][0]
    assert raw[:, 1, 2].tolist() == pytest.approx([1.0, 0.0, 128 / 255], rel=1e-6)
    xt, yt = ds.tensors()
    assert xt.shape == (20, 3, 32, 32) and xt.dtype == torch.float32 and yt.dtype == torch.int64
    assert torch.equal(xt, torch.stack([ds[i][0] for i in range(len(ds))]))
    assert cifar10("train", root=cifar_root).augment


def test_cifar_limit_keeps_first_images_of_each_class(cifar_root: Path) -> None:
    full = cifar10("train", root=cifar_root, augment=False)
    sub = cifar10("train", root=cifar_root, augment=False, limit=20)
    assert torch.bincount(sub.labels, minlength=10).tolist() == [2] * 10
    assert torch.equal(sub.images, full.images[:20])  # labels cycle 0..9: first 2 of each class
    assert len(cifar10("train", root=cifar_root, limit=1000)) == 30
    with pytest.raises(ConfigError):
        cifar10("train", root=cifar_root, limit=0)


def _candidates(img_u8: torch.Tensor, pad: int = 4) -> list[torch.Tensor]:
    c, h, w = img_u8.shape
    padded = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=img_u8.dtype)
    padded[:, pad:pad + h, pad:pad + w] = img_u8
    out = []
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            crop = padded[:, oy:oy + h, ox:ox + w]
            out += [crop, crop.flip(-1)]
    return out


def test_cifar_augmentation_is_crop_and_flip_of_padded_image(cifar_root: Path) -> None:
    ds = cifar10("train", root=cifar_root, generator=torch.Generator().manual_seed(0))
    ref = cifar10("train", root=cifar_root, augment=False, normalize=False)
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
    seen = set()
    for i in range(len(ds)):
        img, _ = ds[i]
        assert img.shape == (3, 32, 32) and img.dtype == torch.float32
        cands = [(c.float() / 255 - mean) / std for c in _candidates(ref.images[i])]
        matches = [k for k, c in enumerate(cands) if torch.allclose(img, c, atol=1e-6)]
        assert matches, f"item {i} is not a crop/flip of the padded image"
        seen.add(matches[0])
    assert len(seen) > 5  # the crops really vary
    a = cifar10("train", root=cifar_root, generator=torch.Generator().manual_seed(0))
    b = cifar10("train", root=cifar_root, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(5))
    # without a generator the default torch RNG is used (seeded by torch.manual_seed)
    default = cifar10("train", root=cifar_root)
    torch.manual_seed(3)
    first = [default[i][0] for i in range(5)]
    torch.manual_seed(3)
    assert all(torch.equal(first[i], default[i][0]) for i in range(5))


def test_random_crop_flip_batched() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=g)
    out = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(6):
        assert any(torch.equal(out[i], c) for c in _candidates(x[i], pad=2))
    same = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out, same)
    flipped_or_not = random_crop_flip(x, padding=0, generator=g)
    for i in range(6):
        assert torch.equal(flipped_or_not[i], x[i]) or torch.equal(flipped_or_not[i], x[i].flip(-1))


# ----------------------------------------------------------------------------- cifar10 (pickled batches)
def test_cifar_python_batches(batches_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, x_train, y_train = batches_root
    train = cifar10("train", root=root, augment=False, normalize=False)
    assert len(train) == 50 and train.labels.tolist() == y_train.tolist()
    expected = torch.from_numpy(x_train.transpose(0, 3, 1, 2).copy())
    assert torch.equal(train.images, expected)
    test = cifar10("test", root=root / "cifar-10-batches-py")  # root may also be the folder itself
    assert len(test) == 10 and test[0][0].shape == (3, 32, 32)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileFormatError, match="data_batch_3"):
        cifar10("train", root=root)


def test_cifar_python2_style_batch(tmp_path: Path) -> None:
    x = _fake_images(4, seed=7)
    data = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(4, 3072)
    (tmp_path / "test_batch").write_bytes(_py2_style_batch(data, [3, 1, 4, 1]))
    ds = cifar10("test", root=tmp_path, normalize=False)
    assert ds.labels.tolist() == [3, 1, 4, 1]
    assert torch.equal(ds.images, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))


class _Evil:
    def __init__(self, func, args):  # noqa: ANN001
        self.func, self.args = func, args

    def __reduce__(self):  # noqa: ANN204
        return self.func, self.args


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec"])
def test_restricted_unpickler_refuses_malicious_pickle(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    if kind == "os.system":
        payload = _Evil(os.system, (f"touch '{marker}'",))
    else:
        payload = _Evil(builtins.exec, (f"open({str(marker)!r}, 'w').close()",))
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"extra": payload}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=3))
    with pytest.raises(FileFormatError) as info:
        cifar10("test", root=tmp_path)
    msg = str(info.value)
    assert "test_batch" in msg and ("system" in msg or "exec" in msg)
    assert not marker.exists()


def test_cifar_corrupt_batches(tmp_path: Path) -> None:
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=3)
    (tmp_path / "test_batch").write_bytes(good[: len(good) // 2])
    with pytest.raises(FileFormatError, match="test_batch"):
        cifar10("test", root=tmp_path)
    short_rows = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(short_rows, protocol=3))
    with pytest.raises(FileFormatError, match="3072"):
        cifar10("test", root=tmp_path)
    bad_labels = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(bad_labels, protocol=3))
    with pytest.raises(FileFormatError, match="labels"):
        cifar10("test", root=tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps([1, 2], protocol=3))
    with pytest.raises(FileFormatError, match="dict"):
        cifar10("test", root=tmp_path)


# ----------------------------------------------------------------------------- cifar10 errors
def test_cifar_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError) as info:
        cifar10("test", root=tmp_path)
    msg = str(info.value)
    assert "cifar10_test.npz" in msg and "test_batch" in msg and "AIMC_DATA" in msg and "root" in msg


def test_cifar_truncated_and_corrupt_npz(cifar_root: Path) -> None:
    path = cifar_root / "cifar10_test.npz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(FileFormatError, match="cifar10_test.npz"):
        cifar10("test", root=cifar_root)
    path.write_bytes(b"not a zip file at all" * 10)
    with pytest.raises(FileFormatError, match="cifar10_test.npz"):
        cifar10("test", root=cifar_root)
    np.save(path.with_suffix(".npy"), np.zeros(3))
    path.write_bytes(path.with_suffix(".npy").read_bytes())  # a bare .npy under the npz name
    with pytest.raises(FileFormatError, match="npz"):
        cifar10("test", root=cifar_root)


@pytest.mark.parametrize(
    ("x", "y", "pattern"),
    [
        (np.zeros((4, 32, 32), np.uint8), np.zeros(4, np.uint8), r"expected shape \(N, 32, 32, 3\)"),
        (np.zeros((4, 3, 32, 32), np.uint8), np.zeros(4, np.uint8), r"found|expected shape"),
        (np.zeros((4, 32, 32, 3), np.float32), np.zeros(4, np.uint8), "dtype uint8"),
        (np.zeros((4, 32, 32, 3), np.uint8), np.zeros(3, np.uint8), r"shape \(4,\)"),
        (np.zeros((4, 32, 32, 3), np.uint8), np.full(4, 10, np.uint8), r"\[0, 9\]"),
        (np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.uint8), "no images"),
    ],
)
def test_cifar_wrong_shapes(tmp_path: Path, x: np.ndarray, y: np.ndarray, pattern: str) -> None:
    np.savez(tmp_path / "cifar10_test.npz", x=x, y=y)
    with pytest.raises(FileFormatError, match=pattern):
        cifar10("test", root=tmp_path)


def test_cifar_wrong_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "cifar10_test.npz", images=np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(FileFormatError, match=r"expected keys \['x', 'y'\]"):
        cifar10("test", root=tmp_path)


def test_unknown_split_and_name(cifar_root: Path) -> None:
    with pytest.raises(ConfigError, match="split"):
        cifar10("val", root=cifar_root)
    with pytest.raises(ConfigError, match="split"):
        mnist("validation", root=cifar_root)
    with pytest.raises(ConfigError, match="cifar10") as info:
        load_dataset("imagenet", "train")
    assert "digits" in str(info.value) and "mnist" in str(info.value)
    assert isinstance(info.value, AimcError)
    assert len(load_dataset("cifar10", "test", root=cifar_root)) == 20
    assert len(load_dataset("digits", "test")) == 450


# ----------------------------------------------------------------------------- subsets
def test_class_balanced_subset() -> None:
    labels = np.repeat(np.arange(5), [10, 20, 30, 40, 3])
    idx = class_balanced_subset(labels, 15, seed=0)
    assert idx.dtype == np.int64 and len(idx) == 15 and len(set(idx.tolist())) == 15
    assert np.bincount(labels[idx], minlength=5).tolist() == [3, 3, 3, 3, 3]
    assert np.array_equal(idx, class_balanced_subset(torch.from_numpy(labels), 15, seed=0))
    assert not np.array_equal(idx, class_balanced_subset(labels, 15, seed=1))
    counts = np.bincount(labels[class_balanced_subset(labels, 17, seed=0)], minlength=5)
    assert sorted(counts.tolist()) == [3, 3, 3, 4, 4]  # remainder: one each to two classes
    # class 4 has only 3 samples: the others make up the difference, evenly
    counts = np.bincount(labels[class_balanced_subset(labels, 43, seed=2)], minlength=5)
    assert counts.sum() == 43 and counts[4] == 3 and counts[:4].max() - counts[:4].min() <= 1
    assert len(class_balanced_subset(labels, 1000, seed=0)) == len(labels)
    with pytest.raises(ConfigError):
        class_balanced_subset(labels, 0, seed=0)
    with pytest.raises(DataError):
        class_balanced_subset(np.zeros((2, 2), np.int64), 1, seed=0)


def test_first_per_class() -> None:
    labels = np.array([0, 1, 0, 1, 2, 2, 0, 1, 2])
    assert first_per_class(labels, 3).tolist() == [0, 1, 4]
    assert first_per_class(labels, 4).tolist() == [0, 1, 2, 4]
