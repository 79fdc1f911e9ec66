"""What a network must fit: the data's input shape and number of classes."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """``input_shape`` excludes the batch: (C, H, W) for images, (C, L) for sequences."""

    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "input_shape": list(self.input_shape), "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        return cls(str(d["dataset"]), tuple(int(x) for x in d["input_shape"]), int(d["num_classes"]))
