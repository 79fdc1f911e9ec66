"""Datasets: every loader on tiny files in the real on-disk formats, splits, normalisation, errors."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsenas.data import DATASETS, DataSplits, list_datasets, load_dataset
from sparsenas.errors import DatasetError, UnknownName
from sparsenas.task import Task

ALL = {"digits", "mnist1d", "synthetic", "cifar10", "cifar100", "mnist", "fashion_mnist"}


# ---------------------------------------------------------------- writers for the real formats
def write_cifar(root: Path, kind: str = "cifar10", n: int = 20, seed: int = 0) -> Path:
    """CIFAR python-version pickles; channel c has pixels in [100c, 100c + 50] to check the layout."""
    rng = np.random.default_rng(seed)
    folder = root / ("cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    k, lkey = (10, b"labels") if kind == "cifar10" else (100, b"fine_labels")

    def batch(name: str) -> None:
        img = rng.integers(0, 51, (n, 3, 1024)) + 100 * np.arange(3)[None, :, None]
        d = {b"data": img.astype(np.uint8).reshape(n, 3072), lkey: [int(v) for v in rng.integers(0, k, n)],
             b"batch_label": name.encode()}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)

    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if kind == "cifar10" else ["train", "test"]
    for name in names:
        batch(name)
    meta, key = ("batches.meta", b"label_names") if kind == "cifar10" else ("meta", b"fine_label_names")
    with open(folder / meta, "wb") as f:
        pickle.dump({key: [f"class{i}".encode() for i in range(k)]}, f)
    return folder


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx(folder: Path, gz: bool = False, n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28)), 2051),
            "train-labels-idx1-ubyte": (np.arange(n_train) % 10, 2049),
            "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28)), 2051),
            "t10k-labels-idx1-ubyte": (rng.integers(0, 10, n_test), 2049)}
    for name, (arr, magic) in data.items():
        raw = idx_bytes(arr, magic)
        if gz:
            with gzip.open(folder / (name + ".gz"), "wb") as f:
                f.write(raw)
        else:
            (folder / name).write_bytes(raw)
    return {k: v[0] for k, v in data.items()}


def check_splits(d: DataSplits, shape: tuple[int, ...], num_classes: int) -> None:
    assert isinstance(d.task, Task) and d.task.input_shape == shape and d.task.num_classes == num_classes
    assert len(d.classes) == num_classes
    for split in ("train", "val", "test"):
        x, y = getattr(d, split).tensors
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape[1:]) == shape and len(x) == len(y) == d.meta["sizes"][split]
        assert int(y.min()) >= 0 and int(y.max()) < num_classes
    x = d.train.tensors[0]
    dims = [0] + list(range(2, x.ndim))
    assert torch.allclose(x.mean(dim=dims), torch.zeros(shape[0]), atol=1e-4)
    assert torch.allclose(x.std(dim=dims), torch.ones(shape[0]), atol=1e-2)


def raw_pixels(d: DataSplits, split: str) -> torch.Tensor:
    """Undo the normalisation (inputs in [0, 1])."""
    x = getattr(d, split).tensors[0]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * torch.tensor(d.meta["std"]).view(shape) + torch.tensor(d.meta["mean"]).view(shape)


# ---------------------------------------------------------------- registry
def test_list_datasets_has_every_dataset_with_a_description():
    listed = list_datasets()
    assert set(listed) == ALL == set(DATASETS.names())
    assert all(isinstance(v, str) and len(v) > 10 and "\n" not in v for v in listed.values())


def test_unknown_dataset_lists_available():
    with pytest.raises(UnknownName, match="unknown dataset 'imagenet'.*digits.*mnist1d"):
        load_dataset("imagenet")


# ---------------------------------------------------------------- digits
@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits_resize(size):
    d = load_dataset("digits", input_size=size)
    check_splits(d, (1, size, size), 10)
    assert sum(d.meta["sizes"].values()) == 1797
    assert d.meta["sizes"] == {"train": 1079, "val": 359, "test": 359}


def test_digits_default_is_16px_and_8px_is_unresized():
    assert load_dataset("digits").task.input_shape == (1, 16, 16)
    from sklearn.datasets import load_digits

    originals = torch.from_numpy(load_digits().images.reshape(-1, 64) / 16.0).float()
    x = raw_pixels(load_dataset("digits", input_size=8), "test").reshape(-1, 64)
    # every test image is an original image, pixel for pixel
    assert torch.cdist(x[:20], originals).min(dim=1).values.max() < 1e-4


def test_held_out_split_is_seeded_stratified_and_disjoint():
    a, b, c = (load_dataset("digits", input_size=8, seed=s) for s in (0, 0, 1))
    for split in ("train", "val", "test"):
        assert all(torch.equal(p, q) for p, q in zip(getattr(a, split).tensors, getattr(b, split).tensors))
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    # stratified: each class's share of val is within 2 samples of its share overall
    y_all = torch.cat([a.train.tensors[1], a.val.tensors[1], a.test.tensors[1]])
    expected = torch.bincount(y_all, minlength=10) * len(a.val) / len(y_all)
    assert (torch.bincount(a.val.tensors[1], minlength=10) - expected).abs().max() <= 2


def test_fractions_and_limit():
    d = load_dataset("digits", val_fraction=0.1, test_fraction=0.3, limit=100)
    assert d.meta["sizes"] == {"train": 100, "val": 180, "test": 539}
    counts = torch.bincount(d.train.tensors[1], minlength=10)
    assert counts.min() >= 8 and counts.max() <= 12  # limit keeps class balance
    full = load_dataset("digits")
    assert torch.equal(load_dataset("digits", limit=50).test.tensors[1], full.test.tensors[1])
    with pytest.raises(DatasetError, match="val_fraction"):
        load_dataset("digits", val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(DatasetError, match="limit"):
        load_dataset("digits", limit=0)


def test_loader_is_deterministic():
    d = load_dataset("synthetic")
    xb, yb = next(iter(d.loader("train", 32, shuffle=True, seed=3)))
    assert xb.shape == (32, 1, 8, 8) and yb.shape == (32,)
    order = lambda s: torch.cat([y for _, y in d.loader("train", 64, shuffle=True, seed=s)])  # noqa: E731
    assert torch.equal(order(3), order(3)) and not torch.equal(order(3), order(4))
    assert torch.equal(torch.cat([y for _, y in d.loader("test", 16)]), d.test.tensors[1])
    with pytest.raises(ValueError, match="train, val, test"):
        d.loader("dev", 8)


# ---------------------------------------------------------------- synthetic, mnist1d
def test_synthetic_is_small_seeded_and_learnable():
    d = load_dataset("synthetic", seed=0)
    check_splits(d, (1, 8, 8), 4)
    assert sum(d.meta["sizes"].values()) == 400
    assert load_dataset("synthetic", input_size=12).task.input_shape == (1, 12, 12)
    assert not torch.equal(load_dataset("synthetic", seed=1).train.tensors[0], d.train.tensors[0])
    # the three splits are disjoint (noise makes every sample unique)
    flat = {k: getattr(d, k).tensors[0].flatten(1) for k in ("train", "val", "test")}
    assert torch.cdist(flat["test"], flat["train"]).min() > 1e-3
    assert torch.cdist(flat["val"], flat["train"]).min() > 1e-3
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 64, 4))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(5):
        for x, y in d.loader("train", 32, shuffle=True, seed=0):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    x, y = d.val.tensors
    assert (net(x).argmax(1) == y).float().mean() > 0.9


def test_mnist1d_generated_with_official_test_split():
    state = np.random.get_state()
    d = load_dataset("mnist1d", seed=0)
    assert np.array_equal(np.random.get_state()[1], state[1])  # generator must not reseed the caller's RNG
    check_splits(d, (1, 40), 10)
    assert d.meta["sizes"] == {"train": 3200, "val": 800, "test": 1000} and d.meta["test_split"] == "official"
    e = load_dataset("mnist1d", seed=1)  # cached: same data, different train/val split, same test
    assert torch.equal(e.test.tensors[1], d.test.tensors[1])
    assert not torch.equal(e.val.tensors[1], d.val.tensors[1])
    assert load_dataset("mnist1d", input_size=20, limit=100).task.input_shape == (1, 20)


# ---------------------------------------------------------------- CIFAR
@pytest.mark.parametrize("point_at_folder", [False, True])
def test_cifar10(tmp_path, point_at_folder):
    folder = write_cifar(tmp_path)
    d = load_dataset("cifar10", data_dir=folder if point_at_folder else tmp_path)
    check_splits(d, (3, 32, 32), 10)
    assert d.meta["sizes"] == {"train": 80, "val": 20, "test": 20}
    assert d.classes == [f"class{i}" for i in range(10)]
    # channel-major layout: channel c's raw pixels are in [100c, 100c + 50] / 255
    for c, m in enumerate(d.meta["mean"]):
        assert (100 * c) / 255 < m < (100 * c + 50) / 255
    with open(folder / "test_batch", "rb") as f:
        labels = pickle.load(f, encoding="bytes")[b"labels"]
    assert d.test.tensors[1].tolist() == labels
    assert load_dataset("cifar10", data_dir=tmp_path, input_size=16).task.input_shape == (3, 16, 16)


def test_cifar100(tmp_path):
    write_cifar(tmp_path, "cifar100", n=40)
    d = load_dataset("cifar100", data_dir=str(tmp_path))
    check_splits(d, (3, 32, 32), 100)
    assert d.meta["sizes"] == {"train": 32, "val": 8, "test": 40}
    assert d.classes[99] == "class99"


# ---------------------------------------------------------------- MNIST / Fashion-MNIST
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_idx(tmp_path, gz, layout, name):
    sub = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name]
    folder = tmp_path / sub / "raw" if layout == "torchvision" else tmp_path
    arrays = write_idx(folder, gz=gz)
    d = load_dataset(name, data_dir=tmp_path, seed=1)
    check_splits(d, (1, 28, 28), 10)
    assert d.meta["sizes"] == {"train": 40, "val": 10, "test": 20}
    assert d.test.tensors[1].tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][:, None] / 255).float()
    assert torch.allclose(raw_pixels(d, "test"), expected, atol=1e-4)
    assert load_dataset(name, data_dir=tmp_path, input_size=14).task.input_shape == (1, 14, 14)
    if name == "fashion_mnist":
        assert d.classes[-1] == "Ankle boot"


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                          ("mnist", "train-images-idx3-ubyte"),
                                          ("fashion_mnist", "FashionMNIST")])
def test_missing_data_dir(name, folder):
    with pytest.raises(DatasetError) as e:
        load_dataset(name)
    msg = str(e.value)
    assert f"'{name}'" in msg and "--data-dir" in msg and folder in msg and "\n" not in msg


def test_data_dir_does_not_exist(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist.*cifar-10-batches-py") as e:
        load_dataset("cifar10", data_dir=tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)


def test_empty_folder_names_what_was_looked_for(tmp_path):
    with pytest.raises(DatasetError, match=r"none of the expected files.*MNIST/raw.*t10k-labels-idx1-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_file(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"missing data_batch_3 in .*cifar-10-batches-py"):
        load_dataset("cifar10", data_dir=tmp_path)
    write_idx(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="missing t10k-labels-idx1-ubyte"):
        load_dataset("mnist", data_dir=tmp_path / "m")


def test_bad_magic(tmp_path):
    write_idx(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">I", 2051) + labels.read_bytes()[4:])  # images magic on a labels file
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte is not an IDX labels file.*0x00000803"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx(tmp_path, gz):
    write_idx(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    data = path.read_bytes()[:-100]
    if gz:
        path.unlink()
        full = gzip.compress(data)
        (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(full[: len(full) // 2])  # cut gzip stream
        with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.gz cannot be read"):
            load_dataset("mnist", data_dir=tmp_path)
    else:
        path.write_bytes(data)
        with pytest.raises(DatasetError, match=r"is truncated: \d+ bytes, expected \d+ for shape \(20, 28, 28\)"):
            load_dataset("mnist", data_dir=tmp_path)


def test_cifar_missing_keys_and_corrupt_pickle(tmp_path):
    folder = write_cifar(tmp_path)
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(DatasetError, match=r"data_batch_2 lacks the key\(s\) \['labels'\].*--data-dir"):
        load_dataset("cifar10", data_dir=tmp_path)
    (folder / "data_batch_2").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="data_batch_2 is not a readable CIFAR pickle"):
        load_dataset("cifar10", data_dir=tmp_path)
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match="N x 3072"):
        load_dataset("cifar10", data_dir=tmp_path)
