"""CIFAR-10/100 from the "python version" pickles in a user-given folder (never downloaded)."""
from __future__ import annotations

import codecs
import importlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import RawData, dataset_error, locate_files, register_dataset


_RAW = "uint8 pixels / 255 in the pickles' channel order (R, G, B), float32 (N, 3, 32, 32)"


@dataclass(frozen=True)
class _Layout:
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    labels: str
    names: str


_LAYOUTS = {
    "cifar10": _Layout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                       "batches.meta", "labels", "label_names"),
    "cifar100": _Layout("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"),
}


def _hint(name: str) -> str:
    lay = _LAYOUTS[name]
    files = ", ".join(lay.train + (lay.test, lay.meta))
    title = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[name]
    return (f"Expected the {title} python version (extracted from its .tar.gz, "
            f"https://www.cs.toronto.edu/~kriz/cifar.html): a folder {lay.folder} holding {files}; "
            f"pass --data-dir (data_dir= in Python) pointing to the folder that holds {lay.folder}, "
            "or to that folder itself.")


class _Refused(pickle.UnpicklingError):
    """The pickle names a global the CIFAR format never uses."""


def _numpy(sub: str, attr: str) -> object:
    """numpy's pickle helpers live in numpy._core since numpy 2 and in numpy.core before."""
    for base in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{base}.{sub}"), attr)
        except (ImportError, AttributeError):
            continue
    raise _Refused(f"numpy has no {sub}.{attr}")


# Everything a CIFAR "python version" pickle may name (ndarrays as Python 2 or 3 write them, bytes as
# protocol-2 Python 3 writes them); any other global is refused before it is imported or called.
_ALLOWED = {
    **{(f"{base}.multiarray", "_reconstruct"): ("multiarray", "_reconstruct") for base in ("numpy.core", "numpy._core")},
    **{(f"{base}.multiarray", "scalar"): ("multiarray", "scalar") for base in ("numpy.core", "numpy._core")},
    **{(f"{base}.numeric", "_frombuffer"): ("numeric", "_frombuffer") for base in ("numpy.core", "numpy._core")},
}
_SAFE = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode,
         **{("builtins", t.__name__): t for t in (list, dict, tuple, set, frozenset, bytes, bytearray, str, int, float)},
         **{("__builtin__", t.__name__): t for t in (list, dict, tuple, set, frozenset, bytearray, str, int, float)}}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler for data only: containers, bytes, numbers and numpy arrays (pickle docs,
    "Restricting Globals"). A pickle that names anything else (os.system...) is refused unexecuted."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _SAFE:
            return _SAFE[(module, name)]
        if (module, name) in _ALLOWED:
            return _numpy(*_ALLOWED[(module, name)])
        raise _Refused(f"it names the global {module}.{name}, which a CIFAR pickle never holds; refused, nothing "
                       "was executed")

    def persistent_load(self, pid: object) -> object:
        raise _Refused("it uses persistent ids, which a CIFAR pickle never holds")


def load_cifar_pickle(data: bytes) -> object:
    """The object in a CIFAR pickle, read with :class:`_CifarUnpickler` (bytes keys kept as bytes)."""
    return _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()


def _unpickle(name: str, path: Path, keys: tuple[str, ...]) -> dict:
    try:
        obj = load_cifar_pickle(path.read_bytes())
    except _Refused as e:
        raise dataset_error(name, f"{path} is not a CIFAR pickle: {e}") from None
    except Exception as e:  # a corrupt pickle can raise almost anything; report it as a bad file
        raise dataset_error(name, f"{path} is not a readable CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise dataset_error(name, f"{path} holds a {type(obj).__name__}, expected a dict with keys {list(keys)}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    missing = [k for k in keys if k not in d]
    if missing:
        raise dataset_error(name, f"{path} lacks the key(s) {missing} (it has {sorted(map(str, d))})")
    return d


def _batch(name: str, path: Path, labels_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(name, path, ("data", labels_key))
    try:
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d[labels_key], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise dataset_error(name, f"{path} has malformed 'data' or '{labels_key}' ({e})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise dataset_error(name, f"{path} has data of shape {data.shape} and {labels.size} labels; expected "
                                  "N x 3072 uint8 pixels and N labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise dataset_error(name, f"{path} has labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def _load(name: str, data_dir: Path) -> RawData:
    lay = _LAYOUTS[name]
    files = locate_files(name, data_dir, [lay.folder], lay.train + (lay.test, lay.meta))
    meta = _unpickle(name, files[lay.meta], (lay.names,))
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[lay.names]]
    parts = [_batch(name, files[f], lay.labels, len(classes)) for f in lay.train]
    x_test, y_test = _batch(name, files[lay.test], lay.labels, len(classes))
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return RawData(x.astype(np.float32) / 255, y, classes, str(files[lay.test].parent),
                   x_test.astype(np.float32) / 255, y_test)


@register_dataset("cifar10", "CIFAR-10: 32x32 colour images, 10 classes, official 50000/10000 train/test "
                  "(read from --data-dir)", needs_data_dir=True, hint=_hint("cifar10"), raw_form=_RAW, channels="RGB",
                  value_range=(0.0, 1.0))
def load_cifar10(data_dir: Path | None, seed: int) -> RawData:
    assert data_dir is not None
    return _load("cifar10", data_dir)


@register_dataset("cifar100", "CIFAR-100: 32x32 colour images, 100 fine classes, official 50000/10000 "
                  "train/test (read from --data-dir)", needs_data_dir=True, hint=_hint("cifar100"), raw_form=_RAW, channels="RGB",
                  value_range=(0.0, 1.0))
def load_cifar100(data_dir: Path | None, seed: int) -> RawData:
    assert data_dir is not None
    return _load("cifar100", data_dir)
