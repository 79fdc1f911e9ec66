"""Evaluators: accuracy (training), latency (measured or table), cost (params, nnz, FLOPs)."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from ..arch import Arch
from ..data import DataSplits
from ..ops.spec import trace_layers
from ..search_spaces.base import SearchSpace
from .cost import count_flops, count_params
from .latency import LATENCY, LatencyEvaluator, LatencyResult, MeasuredLatency, measure_latency
from .result import EvalResult
from .training import TrainBudget, TrainingDiverged, TrainResult, accuracy, cosine, sgd, train

__all__ = ["Evaluator", "EvalResult", "TrainBudget", "TrainingDiverged", "TrainResult", "LATENCY",
           "LatencyEvaluator", "LatencyResult", "MeasuredLatency", "measure_latency", "train", "accuracy", "cosine", "sgd",
           "count_params", "count_flops"]


class Evaluator:
    """Latency, training and cost of one architecture, as separate steps so that a strategy can reject
    an architecture on latency before paying for its training."""

    def __init__(self, space: SearchSpace, data: DataSplits, budget: TrainBudget,
                 latency: LatencyEvaluator, *, seed: int = 0, device: str = "cpu") -> None:
        self.space, self.data, self.task = space, data, data.task
        self.budget, self.latency_of, self.seed, self.device = budget, latency, seed, device

    def with_budget(self, **changes: Any) -> "Evaluator":
        """A copy training with the budget's fields in ``changes`` replaced (a retraining's epochs...)."""
        evaluator = copy.copy(self)
        evaluator.budget = dataclasses.replace(self.budget, **changes)
        return evaluator

    def build(self, arch: Arch) -> nn.Module:
        torch.manual_seed(self.seed)  # same arch + seed -> same initial weights
        return self.space.build(arch, self.task)

    def latency(self, arch: Arch, model: nn.Module, task=None) -> LatencyResult:
        return self.latency_of(arch, model, task or self.task)

    def train(self, model: nn.Module, *, on_epoch: Callable[[int, float], None] | None = None,
              on_step: Callable[[float], None] | None = None) -> TrainResult:
        trained = train(model, self.data, self.budget, seed=self.seed, device=self.device,
                        on_epoch=on_epoch, on_step=on_step)
        model.cpu().eval()
        return trained

    def __call__(self, arch: Arch, **callbacks) -> EvalResult:
        model = self.build(arch)
        lat = self.latency(arch, model)
        return self.result(arch, model, self.train(model, **callbacks), lat)

    def result(self, arch: Arch, model: nn.Module, trained: TrainResult, lat: LatencyResult) -> EvalResult:
        """Cost and latency of a trained network (also used by supernet strategies)."""
        layers = trace_layers(model, self.task.input_shape)
        params, nnz = count_params(model)
        flops, eff = count_flops(layers)
        extras = {"latency_source": lat.source, "train_seconds": round(trained.seconds, 2),
                  "epochs": trained.epochs, **lat.attrs}
        return EvalResult(accuracy=trained.val_accuracy, latency_ms=lat.ms, test_accuracy=trained.test_accuracy,
                          params=params, nnz=nnz, flops=flops, effective_flops=eff, history=trained.history,
                          model_bytes=int(extras.pop("model_bytes", 0)), extras=extras)
