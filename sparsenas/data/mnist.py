"""MNIST and Fashion-MNIST from IDX files (plain or .gz) in a user-given folder (never downloaded)."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .base import RawData, dataset_error, locate_files, register_dataset

_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_RAW = "IDX uint8 pixels / 255, float32 (N, 1, 28, 28)"
_IMAGES, _LABELS = 0x803, 0x801  # IDX magic: unsigned bytes, 3 resp. 1 dimensions
_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}


def _hint(name: str) -> str:
    folder = _FOLDER[name]
    return (f"Expected the four IDX files {', '.join(_FILES)} (each optionally .gz); pass --data-dir "
            f"(data_dir= in Python) pointing to the folder that holds them, or to a folder holding "
            f"{folder}/raw/ as torchvision lays it out.")


def read_idx(name: str, path: Path, magic: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file: big-endian magic (0x08 type, ndim), ndim big-endian sizes, data."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            buf = f.read()
    except (OSError, EOFError, zlib.error) as e:  # bad or truncated gzip stream, unreadable file
        raise dataset_error(name, f"{path} cannot be read ({type(e).__name__}: {e})") from None
    kind = "images" if magic == _IMAGES else "labels"
    if len(buf) < 4 or int.from_bytes(buf[:4], "big") != magic:
        found = f"{int.from_bytes(buf[:4], 'big'):#010x}" if len(buf) >= 4 else "nothing (file too short)"
        raise dataset_error(name, f"{path} is not an IDX {kind} file: its magic number is {found}, "
                                  f"expected {magic:#010x}")
    ndim = buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise dataset_error(name, f"{path} is truncated: {len(buf)} bytes, shorter than its own header")
    dims = tuple(int(d) for d in np.frombuffer(buf, ">u4", ndim, 4))
    expected = header + int(np.prod(dims))
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "longer than its header says"
        raise dataset_error(name, f"{path} is {what}: {len(buf)} bytes, expected {expected} for shape {dims}")
    return np.frombuffer(buf, np.uint8, offset=header).reshape(dims)


def _pair(name: str, images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(name, images, _IMAGES), read_idx(name, labels, _LABELS)
    if len(x) != len(y):
        raise dataset_error(name, f"{images} has {len(x)} images but {labels} has {len(y)} labels")
    if y.size and y.max() >= len(_CLASSES[name]):
        raise dataset_error(name, f"{labels} has labels outside 0..{len(_CLASSES[name]) - 1}")
    return x[:, None].astype(np.float32) / 255, y.astype(np.int64)


def _load(name: str, data_dir: Path) -> RawData:
    folder = _FOLDER[name]
    f = locate_files(name, data_dir, [f"{folder}/raw", folder, "raw"], _FILES, suffixes=("", ".gz"))
    x, y = _pair(name, f[_FILES[0]], f[_FILES[1]])
    x_test, y_test = _pair(name, f[_FILES[2]], f[_FILES[3]])
    return RawData(x, y, list(_CLASSES[name]), str(f[_FILES[0]].parent), x_test, y_test)


@register_dataset("mnist", "MNIST: 28x28 handwritten digits, 10 classes, official 60000/10000 train/test "
                  "(IDX files read from --data-dir)", needs_data_dir=True, hint=_hint("mnist"), raw_form=_RAW,
                  channels="gray", value_range=(0.0, 1.0))
def load_mnist(data_dir: Path | None, seed: int) -> RawData:
    assert data_dir is not None
    return _load("mnist", data_dir)


@register_dataset("fashion_mnist", "Fashion-MNIST: 28x28 clothing images, 10 classes, official 60000/10000 "
                  "train/test (IDX files read from --data-dir)", needs_data_dir=True, hint=_hint("fashion_mnist"),
                  raw_form=_RAW, channels="gray", value_range=(0.0, 1.0))
def load_fashion_mnist(data_dir: Path | None, seed: int) -> RawData:
    assert data_dir is not None
    return _load("fashion_mnist", data_dir)
