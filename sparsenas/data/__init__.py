"""Datasets: a registry of loaders and :func:`load_dataset`, which returns seeded, normalised
train/val/test splits plus the :class:`~sparsenas.task.Task` a network must fit.

A new dataset is one module listed in ``__all_modules__`` with ``@register_dataset("name", ...)``
on a function returning :class:`RawData`; splitting, resizing and normalising happen here, once.
"""
from __future__ import annotations

from .base import (DATASETS, DataSplits, DatasetSpec, RawData, list_datasets, load_dataset, raw_split,
                   register_dataset)

__all_modules__ = ("digits", "mnist1d", "synthetic", "cifar", "mnist")

__all__ = ["DATASETS", "DataSplits", "DatasetSpec", "RawData", "list_datasets", "load_dataset", "raw_split",
           "register_dataset"]
