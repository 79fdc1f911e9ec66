"""The input contract of a trained network: what raw data it expects and how that data becomes the
tensor it was trained on (resize, then per-channel normalisation), the way timm models carry a
``pretrained_cfg``.

:func:`~sparsenas.data.load_dataset` makes one for every dataset; exports record it in
``arch.json`` and ``card.md`` and, by default, put :meth:`InputContract.module` in front of the
exported graph so that ONNX / TorchScript files take the dataset's raw values directly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .splits import resize_tensor

__all__ = ["InputContract", "RawInput", "GRAPH_INPUTS"]

# what an exported graph takes: the dataset's raw values (normalised inside), or normalised tensors
GRAPH_INPUTS = ("raw", "normalised")


@dataclass(frozen=True)
class InputContract:
    """What a network trained on ``dataset`` expects. ``raw_shape`` is one sample as the dataset
    provides it (no batch axis); ``input_shape`` what the network itself sees after ``resize``."""

    dataset: str
    raw_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    channels: str                             # "gray", "RGB", "signal" or "unspecified" (as the dataset declares)
    raw_form: str                             # how the dataset makes its raw values, in words
    value_range: tuple[float, float] | None   # of the raw values
    range_source: str                         # "declared" by the dataset, or "observed" on its training split
    resize: int | None                        # side (or length) the pipeline resizes to; None: no resize
    interpolation: str | None                 # e.g. "bilinear, align_corners=False"
    mean: tuple[float, ...]                   # per channel, of the resized training split
    std: tuple[float, ...]

    @property
    def layout(self) -> str:
        return {3: "NCHW", 2: "NCL"}.get(len(self.raw_shape), f"N + {len(self.raw_shape)} axes")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {**d, "layout": self.layout, "raw_shape": list(self.raw_shape), "input_shape": list(self.input_shape),
                "value_range": list(self.value_range) if self.value_range else None,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputContract":
        rng = d.get("value_range")
        return cls(str(d["dataset"]), tuple(int(v) for v in d["raw_shape"]), tuple(int(v) for v in d["input_shape"]),
                   str(d.get("channels", "unspecified")), str(d.get("raw_form", "")),
                   (float(rng[0]), float(rng[1])) if rng else None, str(d.get("range_source", "declared")),
                   int(d["resize"]) if d.get("resize") else None, d.get("interpolation"),
                   tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))

    def module(self) -> "RawInput":
        """Raw batch (N, *raw_shape) -> the normalised (N, *input_shape) the network was trained on."""
        return RawInput(self)

    def preprocess(self, x: Any) -> Tensor:
        """The training pipeline's preparation of raw samples: a numpy array or tensor of shape
        (N, *raw_shape) or one sample (*raw_shape), values as the dataset provides them -> the
        float32 batch the network takes."""
        t = x.float() if isinstance(x, Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))  # a copy: x may be read-only
        if tuple(t.shape) == self.raw_shape:
            t = t.unsqueeze(0)
        if tuple(t.shape[1:]) != self.raw_shape:
            from ..errors import SparseNASError

            raise SparseNASError(f"preprocess expects raw samples of shape {self.raw_shape} (or a batch of them) "
                                 f"as {self.dataset} provides them ({self.raw_form}); got {tuple(t.shape)}")
        with torch.no_grad():
            return self.module()(t)

    def describe(self) -> list[str]:
        """Markdown lines for the model card."""
        rng = (f"[{self.value_range[0]:g}, {self.value_range[1]:g}] ({self.range_source})" if self.value_range
               else "not declared")
        steps = []
        if self.resize:
            steps.append(f"resize to {'x'.join(map(str, self.input_shape[1:]))} ({self.interpolation})")
        steps.append("subtract mean, divide by std, per channel")
        return [f"- raw input: {self.layout} float32, one sample {tuple(self.raw_shape)}, channels {self.channels}, "
                f"values {rng}",
                f"- raw form: {self.raw_form or '-'}",
                f"- preparation: {'; then '.join(steps)}",
                f"- mean {[round(m, 6) for m in self.mean]}, std {[round(s, 6) for s in self.std]}",
                f"- network input after preparation: {tuple(self.input_shape)}"]


class RawInput(nn.Module):
    """The preparation step of an :class:`InputContract` as a module (exported inside the graph)."""

    def __init__(self, contract: InputContract) -> None:
        super().__init__()
        shape = (1, -1) + (1,) * (len(contract.input_shape) - 1)
        self.size = contract.resize if contract.resize and contract.raw_shape != contract.input_shape else None
        self.register_buffer("mean", torch.tensor(contract.mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(contract.std, dtype=torch.float32).reshape(shape))

    def forward(self, x: Tensor) -> Tensor:
        if self.size is not None:
            x = resize_tensor(x, self.size)
        return (x - self.mean) / self.std


class WithRawInput(nn.Sequential):
    """``RawInput`` then the network: what an export with raw graph input runs."""

    def __init__(self, contract: InputContract, net: nn.Module) -> None:
        super().__init__(RawInput(contract), net)
