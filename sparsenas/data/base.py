"""The dataset registry, the raw-array contract of dataset modules, and :func:`load_dataset`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..errors import DatasetError
from ..registry import GROUPS, Registry
from ..task import Task
from .splits import channel_stats, normalise, resize, split_indices

if TYPE_CHECKING:
    from .contract import InputContract


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
    # the raw form (recorded in every export's input contract, data/contract.py): what the loader's
    # values are, in words; the channels' meaning; their range (None: the training split's min/max)
    raw_form: str = ""
    channels: str = "unspecified"
    value_range: tuple[float, float] | None = None


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
                     needs_data_dir: bool = False, hint: str = "", raw_form: str = "", channels: str = "unspecified",
                     value_range: tuple[float, float] | None = None) -> Callable[[Loader], Loader]:
    """Register a loader ``(data_dir, seed) -> RawData``. ``raw_form``, ``channels`` ("gray", "RGB",
    "signal") and ``value_range`` declare what its raw values are: exported models take exactly those."""
    def deco(fn: Loader) -> Loader:
        DATASETS.register(name)(DatasetSpec(name, description, fn, default_size, needs_data_dir, hint, raw_form,
                                            channels, tuple(value_range) if value_range else None))
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
    contract: "InputContract | None" = None  # how raw samples become these tensors (data/contract.py)

    def loader(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; available: {', '.join(SPLITS)}")
        return DataLoader(getattr(self, split), batch_size=batch_size, shuffle=shuffle, num_workers=0,
                          generator=torch.Generator().manual_seed(seed))


def _tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    # y may be a read-only cached array, so it is copied; x is always a fresh array from normalise().
    return TensorDataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                         torch.tensor(y, dtype=torch.int64))


def _check_args(name: str, input_size: int | None, limit: int | None, val_fraction: float,
                test_fraction: float) -> None:
    if input_size is not None and input_size < 1:
        raise DatasetError(f"dataset '{name}': input_size must be a positive number of pixels, got {input_size}")
    if limit is not None and limit < 1:
        raise DatasetError(f"dataset '{name}': limit must be a positive number of samples, got {limit}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(f"dataset '{name}': val_fraction ({val_fraction}) and test_fraction ({test_fraction}) "
                           "must each be in [0, 1) and sum to less than 1")


def _raw_splits(spec: DatasetSpec, data_dir: str | Path | None, seed: int, val_fraction: float,
                test_fraction: float, limit: int | None) -> tuple[RawData, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(raw data, raw inputs per split, labels per split): the split before any resize or normalisation."""
    if spec.needs_data_dir and data_dir is None:
        raise dataset_error(spec.name, "it is read from files on disk and no data folder was given")
    raw = spec.load(Path(data_dir).expanduser() if data_dir is not None else None, seed)
    official = raw.x_test is not None
    tr, va, te = split_indices(raw.y, val_fraction, 0.0 if official else test_fraction, seed)
    tr = tr[:limit]
    x_test, y_test = (raw.x_test, raw.y_test) if official else (raw.x[te], raw.y[te])
    xs = {"train": raw.x[tr], "val": raw.x[va], "test": x_test}
    ys = {"train": raw.y[tr], "val": raw.y[va], "test": y_test}
    if len(ys["train"]) == 0:
        raise dataset_error(spec.name, "the training split is empty; use more data or smaller val/test fractions")
    return raw, xs, ys


def raw_split(name: str, split: str = "test", *, data_dir: str | Path | None = None, seed: int = 0,
              val_fraction: float = 0.2, test_fraction: float = 0.2, limit: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) of one split exactly as the dataset provides them: before resizing and
    normalisation, i.e. what an exported model with raw graph input takes. Same split as
    :func:`load_dataset` with the same arguments."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}'; available: {', '.join(SPLITS)}")
    spec = DATASETS.get(name)
    _check_args(name, None, limit, val_fraction, test_fraction)
    _, xs, ys = _raw_splits(spec, data_dir, seed, val_fraction, test_fraction, limit)
    return xs[split], ys[split]


def load_dataset(name: str, *, data_dir: str | Path | None = None, input_size: int | None = None, seed: int = 0,
                 val_fraction: float = 0.2, test_fraction: float = 0.2, limit: int | None = None) -> DataSplits:
    """Load dataset ``name`` as seeded, stratified, train-normalised splits.

    Datasets with an official test split use it as ``test`` and carve ``val`` from the official
    train part (``test_fraction`` is then unused); the others are split three ways. ``limit`` caps
    the training samples only, so val/test do not change with it. ``.contract`` says how raw
    samples become the tensors of the splits (the input contract exports carry).
    """
    from .contract import InputContract

    spec = DATASETS.get(name)
    _check_args(name, input_size, limit, val_fraction, test_fraction)
    raw, raw_xs, ys = _raw_splits(spec, data_dir, seed, val_fraction, test_fraction, limit)
    size = input_size if input_size is not None else spec.default_size
    xs = {k: resize(raw_xs[k], size) for k in SPLITS}
    mean, std = channel_stats(xs["train"])
    sets = {k: _tensors(normalise(xs[k], mean, std), ys[k]) for k in SPLITS}
    official = raw.x_test is not None
    meta = {"source": raw.source, "sizes": {k: len(ys[k]) for k in SPLITS}, "mean": mean.tolist(),
            "std": std.tolist(), "seed": seed, "input_size": size, "limit": limit,
            "test_split": "official" if official else "held-out", "val_fraction": val_fraction,
            "test_fraction": None if official else test_fraction}
    task = Task(spec.name, tuple(int(d) for d in xs["train"].shape[1:]), len(raw.classes))
    observed = (float(raw_xs["train"].min()), float(raw_xs["train"].max()))
    resized = xs["train"].shape[2:] != raw_xs["train"].shape[2:]
    contract = InputContract(
        spec.name, tuple(int(d) for d in raw_xs["train"].shape[1:]), task.input_shape, spec.channels,
        spec.raw_form or raw.source, spec.value_range or observed, "declared" if spec.value_range else "observed",
        size if resized else None,
        ("bilinear, align_corners=False" if len(task.input_shape) == 3 else "linear, align_corners=False")
        if resized else None, tuple(float(m) for m in mean), tuple(float(s) for s in std))
    return DataSplits(task, sets["train"], sets["val"], sets["test"], list(raw.classes), meta, contract)


def list_datasets() -> dict[str, str]:
    """Name -> one-line description of every registered dataset."""
    return {name: spec.description for name, spec in DATASETS.items()}
