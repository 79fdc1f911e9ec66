"""The dataset registry, the raw-array contract of dataset modules, and :func:`load_dataset`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..errors import DatasetError
from ..registry import GROUPS, Registry
from ..task import Task
from .splits import channel_stats, normalise, resize, split_indices


@dataclass
class RawData:
    """What a dataset module returns: float32 inputs (N, C, *spatial) in their natural scale and
    int64 labels; ``x_test``/``y_test`` only for datasets with an official test split."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    source: str
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


Loader = Callable[[Path | None, int], RawData]  # (data_dir, seed) -> RawData


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    load: Loader
    default_size: int | None = None  # spatial size when input_size is not given; None = native
    needs_data_dir: bool = False
    hint: str = ""  # which files are expected and how to point at them


def _adopt(obj: object, key: str, where: str) -> DatasetSpec:
    """A plug-in dataset (entry point in ``sparsenas.datasets`` or ``--dataset module:attr``): a
    :class:`DatasetSpec`, a loader decorated with :func:`register_dataset`, or a plain loader
    ``(data_dir, seed) -> RawData`` (registered under ``key``, its docstring as description)."""
    if isinstance(obj, DatasetSpec):
        return obj
    if callable(obj) and not isinstance(obj, type):
        registered = next((s for s in DATASETS._items.values() if s.load is obj), None)
        doc = (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
        return registered or DatasetSpec(key, doc or f"dataset from {key}", obj)
    raise DatasetError(f"dataset {where} is a {type(obj).__name__}; expected a loader function (data_dir, seed) -> "
                       "RawData, decorated with sparsenas.data.register_dataset or not, or a DatasetSpec")


DATASETS: Registry[DatasetSpec] = Registry("dataset", "sparsenas.data", group=GROUPS["dataset"], adopt=_adopt,
                                           alias=lambda spec: spec.name)


def register_dataset(name: str, description: str, *, default_size: int | None = None,
                     needs_data_dir: bool = False, hint: str = "") -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        DATASETS.register(name)(DatasetSpec(name, description, fn, default_size, needs_data_dir, hint))
        return fn

    return deco


def dataset_error(name: str, problem: str) -> DatasetError:
    """A one-paragraph error naming the dataset, the problem (with its path) and the fix."""
    hint = DATASETS.get(name).hint
    return DatasetError(f"dataset '{name}': {problem}. {hint}".strip())


def locate_files(name: str, data_dir: Path, subdirs: Sequence[str], expected: Sequence[str],
                 suffixes: Sequence[str] = ("",)) -> dict[str, Path]:
    """Find ``expected`` files in ``data_dir/<subdir>`` (first that has any) or ``data_dir`` itself."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise dataset_error(name, f"the data folder {root} does not exist or is not a folder")

    def find(folder: Path, stem: str) -> Path | None:
        return next((folder / (stem + s) for s in suffixes if (folder / (stem + s)).is_file()), None)

    for folder in [root / s for s in subdirs] + [root]:
        found = {stem: find(folder, stem) for stem in expected}
        if any(found.values()):
            break
    else:
        looked = ", ".join(str(root / s) for s in subdirs)
        raise dataset_error(name, f"none of the expected files were found in {root}"
                                  + (f" (also looked in {looked})" if looked else ""))
    missing = [stem for stem, p in found.items() if p is None]
    if missing:
        raise dataset_error(name, f"missing {', '.join(missing)} in {folder}")
    return found  # type: ignore[return-value]


SPLITS = ("train", "val", "test")


@dataclass
class DataSplits:
    """Normalised train/val/test ``TensorDataset``s (X float32, y int64) and the task they define."""

    task: Task
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    classes: list[str]
    meta: dict = field(default_factory=dict)

    def loader(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; available: {', '.join(SPLITS)}")
        return DataLoader(getattr(self, split), batch_size=batch_size, shuffle=shuffle, num_workers=0,
                          generator=torch.Generator().manual_seed(seed))


def _tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    # y may be a read-only cached array, so it is copied; x is always a fresh array from normalise().
    return TensorDataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                         torch.tensor(y, dtype=torch.int64))


def load_dataset(name: str, *, data_dir: str | Path | None = None, input_size: int | None = None, seed: int = 0,
                 val_fraction: float = 0.2, test_fraction: float = 0.2, limit: int | None = None) -> DataSplits:
    """Load dataset ``name`` as seeded, stratified, train-normalised splits.

    Datasets with an official test split use it as ``test`` and carve ``val`` from the official
    train part (``test_fraction`` is then unused); the others are split three ways. ``limit`` caps
    the training samples only, so val/test do not change with it.
    """
    spec = DATASETS.get(name)
    if input_size is not None and input_size < 1:
        raise DatasetError(f"dataset '{name}': input_size must be a positive number of pixels, got {input_size}")
    if limit is not None and limit < 1:
        raise DatasetError(f"dataset '{name}': limit must be a positive number of samples, got {limit}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(f"dataset '{name}': val_fraction ({val_fraction}) and test_fraction ({test_fraction}) "
                           "must each be in [0, 1) and sum to less than 1")
    if spec.needs_data_dir and data_dir is None:
        raise dataset_error(name, "it is read from files on disk and no data folder was given")
    raw = spec.load(Path(data_dir).expanduser() if data_dir is not None else None, seed)

    official = raw.x_test is not None
    tr, va, te = split_indices(raw.y, val_fraction, 0.0 if official else test_fraction, seed)
    tr = tr[:limit]
    x_test, y_test = (raw.x_test, raw.y_test) if official else (raw.x[te], raw.y[te])
    size = input_size if input_size is not None else spec.default_size
    xs = {"train": resize(raw.x[tr], size), "val": resize(raw.x[va], size), "test": resize(x_test, size)}
    ys = {"train": raw.y[tr], "val": raw.y[va], "test": y_test}
    if len(ys["train"]) == 0:
        raise dataset_error(name, "the training split is empty; use more data or smaller val/test fractions")
    mean, std = channel_stats(xs["train"])
    sets = {k: _tensors(normalise(xs[k], mean, std), ys[k]) for k in SPLITS}
    meta = {"source": raw.source, "sizes": {k: len(ys[k]) for k in SPLITS}, "mean": mean.tolist(),
            "std": std.tolist(), "seed": seed, "input_size": size, "limit": limit,
            "test_split": "official" if official else "held-out", "val_fraction": val_fraction,
            "test_fraction": None if official else test_fraction}
    task = Task(spec.name, tuple(int(d) for d in xs["train"].shape[1:]), len(raw.classes))
    return DataSplits(task, sets["train"], sets["val"], sets["test"], list(raw.classes), meta)


def list_datasets() -> dict[str, str]:
    """Name -> one-line description of every registered dataset."""
    return {name: spec.description for name, spec in DATASETS.items()}
