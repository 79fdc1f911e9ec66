"""User-facing errors.

Anything a user can cause (bad flag, bad file, unknown name) raises a subclass of
:class:`SparseNASError`; the CLI prints its message as one paragraph and exits with code 2.
Everything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class SparseNASError(Exception):
    """An error caused by the user's input; its message says what is wrong and what is allowed."""

    exit_code = 2


class InvalidArch(SparseNASError):
    """An architecture's choice is not allowed by its search space."""

    def __init__(self, key: str, value: object, allowed: object, space: str = "") -> None:
        self.key, self.value, self.allowed = key, value, allowed
        where = f" of space '{space}'" if space else ""
        super().__init__(f"invalid architecture: choice '{key}'{where} is {value!r}; allowed values: {allowed}")


class UnknownName(SparseNASError):
    """A name looked up in a registry (space, strategy, dataset, ...) does not exist."""


class DatasetError(SparseNASError):
    """A dataset is missing, malformed or not usable for the task."""


class StorageError(SparseNASError):
    """An Optuna storage URL is malformed or cannot be opened."""
