"""What evaluating one architecture yields."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class EvalResult:
    accuracy: float                 # validation accuracy: what searches optimise
    latency_ms: float               # the latency objective (predicted or measured, see latency_source)
    test_accuracy: float | None = None  # held-out figure users read as final; never used to select
    params: int = 0
    nnz: int = 0
    flops: int = 0                  # dense multiply-accumulates of conv/linear layers, batch 1
    effective_flops: int = 0        # the same with pruned weights skipped
    model_bytes: int = 0            # exported weights in the smallest encoding the runtime loads
    history: list[float] = field(default_factory=list)  # validation accuracy per epoch
    extras: dict[str, Any] = field(default_factory=dict)

    def to_attrs(self) -> dict[str, Any]:
        """Flat JSON-able dict for Optuna user attrs."""
        d = asdict(self)
        extras = d.pop("extras")
        d.pop("history")
        return {**d, **extras}
