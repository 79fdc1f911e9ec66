"""Our search spaces as NNI 3.0 model spaces, and NNI strategies run on them in this process.

Needs the optional extra: ``pip install torch==2.13.0 "sparsenas[nni]"`` (NNI 3.0, PyTorch Lightning).
Nothing in the core imports this module; the ``nni:*`` strategies import it when they run.

Two ways a space becomes an NNI model space:
- :func:`value_choice_space` (any registered space): each of ``space.choices(task)`` is an
  ``nni.choice(name, values)``, and freezing a sample builds the network with our ``build()``.
  NNI's multi-trial strategies (Random, RegularizedEvolution) search it; each sample is evaluated by
  a callback we pass, in this process (NNI's sequential engine, no trial processes).
- a LayerChoice form (kind ``layer-choice`` of :mod:`sparsenas.supernets.registry`): the operations are NNI
  ``LayerChoice``s and the cell inputs ``InputChoice``s, which NNI's one-shot strategies (DARTS,
  RandomOneShot) turn into a supernet. Only sparse_darts has one: NNI mixes whole modules, and the
  other spaces' choices change the shapes inside our sparse layers (expansion, kernel, sparsity,
  G2G groups), which NNI's mixed ops (dense Conv2d/Linear/BatchNorm only) cannot express.
"""
from __future__ import annotations

import datetime
import logging
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..arch import Arch
from ..errors import SparseNASError
from ..supernets.registry import find_supernet, register_supernet, spaces_with

if TYPE_CHECKING:
    from torch import nn

    from ..data import DataSplits
    from ..search_spaces.base import SearchSpace
    from ..task import Task

INSTALL_HINT = 'pip install torch==2.13.0 "sparsenas[nni]"'


def require_nni() -> Any:
    """The ``nni`` module, or a SparseNASError that says how to install it."""
    try:
        with warnings.catch_warnings():  # NNI warns about torch classes it does not know (torch 2.13 is newer)
            warnings.simplefilter("ignore")
            import nni
            import nni.nas.nn.pytorch  # noqa: F401
            import pytorch_lightning  # noqa: F401
    except ImportError as e:
        raise SparseNASError(f"the nni:* strategies need NNI 3.0 and PyTorch Lightning, which are not installed here "
                             f"({e}); install the extra with: {INSTALL_HINT}") from None
    for name in ("nni", "pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)  # NNI logs every sample (INFO) and data-loader notes (WARNING)
    return nni


def arch_from_sample(space: "SearchSpace", choices: Mapping[str, list], sample: Mapping[str, Any]) -> Arch:
    """Our architecture for an NNI sample of a :func:`value_choice_space`."""
    missing = [k for k in choices if k not in sample]
    if missing:
        raise SparseNASError(f"NNI sample lacks choices {missing} of space '{space.name}'")
    return Arch(space.name, space.version, {k: sample[k] for k in choices})


def value_choice_space(space: "SearchSpace", task: "Task", build: Callable[[Arch], "nn.Module"]) -> Any:
    """An NNI ``ModelSpace`` with one ``nni.choice`` per choice of ``space``; ``freeze(sample)``
    returns ``build(arch)`` with the architecture attached as ``.sparsenas_arch``."""
    nni = require_nni()
    from nni.mutable import ensure_frozen
    from nni.nas.nn.pytorch import ModelSpace

    choices = space.choices(task)

    class ValueChoiceSpace(ModelSpace):  # one class per call: it closes over the space and task
        def __init__(self) -> None:
            super().__init__()
            picks = {k: ensure_frozen(self.add_mutable(nni.choice(k, list(v))), strict=False)
                     for k, v in choices.items()}
            self.net = build(Arch(space.name, space.version, picks))  # the dry-run member of the space

        def forward(self, x: Any) -> Any:
            return self.net(x)

        def freeze(self, sample: dict[str, Any]) -> "nn.Module":
            arch = arch_from_sample(space, choices, sample)
            net = build(arch)
            net.sparsenas_arch = arch
            return net

    ValueChoiceSpace.__name__ = f"{space.name}_nni"
    return ValueChoiceSpace()


MULTI_TRIAL = ("random", "evolution")


def run_multi_trial(kind: str, model_space: Any, evaluate: Callable[[Arch], float | None], *, max_models: int,
                    max_seconds: float | None, seed: int, population: int | None = None) -> dict[str, Any]:
    """Let NNI's multi-trial strategy ``kind`` search ``model_space`` (from :func:`value_choice_space`)
    with the sequential engine: every sample NNI proposes is handed to ``evaluate(arch)`` in this
    process, which returns the metric NNI maximises (None: the architecture failed).

    Returns timing: total seconds, seconds inside ``evaluate``, models evaluated.
    """
    nni = require_nni()
    import random

    import numpy as np
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from nni.nas.strategy import Random, RegularizedEvolution

    inside = {"seconds": 0.0, "models": 0}

    def trial(model: Any) -> None:
        t = time.perf_counter()
        try:
            metric = evaluate(model.sparsenas_arch)
        finally:
            inside["seconds"] += time.perf_counter() - t
            inside["models"] += 1
        # NNI needs a number for every model it submitted; a failed one counts as the worst
        nni.report_final_result(float(metric) if metric is not None else 0.0)

    if kind == "random":
        strategy = Random(dedup=True)
    elif kind == "evolution":
        pop = population or max(2, min(20, max_models // 2))
        strategy = RegularizedEvolution(population_size=pop, sample_size=max(1, min(pop, 5)), dedup=True)
    else:
        raise SparseNASError(f"unknown NNI multi-trial strategy '{kind}'; known: {', '.join(MULTI_TRIAL)}")
    # NNI samples with numpy's and Python's global generators
    random.seed(seed)
    np.random.seed(seed % 2**32)
    engine = SequentialExecutionEngine(max_model_count=max_models, max_duration=max_seconds)
    exe = RawFormatModelSpace.from_model(model_space, FunctionalEvaluator(trial))
    start = time.perf_counter()
    strategy(exe, engine)
    total = time.perf_counter() - start
    return {"seconds": round(total, 3), "evaluate_seconds": round(inside["seconds"], 3), "models": inside["models"],
            "overhead_per_model_s": round((total - inside["seconds"]) / max(1, inside["models"]), 4),
            "engine": "sequential (in-process)", "nni_strategy": repr(strategy)}


# ---------------------------------------------------------------------------------------- one-shot
def _darts_layer_choice_space(space: "SearchSpace", task: "Task", fixed: Mapping[str, Any]) -> Any:
    """sparse_darts with every edge a LayerChoice over the DARTS primitives (labels shared by all cells
    of a type, as in DARTS) and every node's two inputs an InputChoice(n_chosen=2)."""
    require_nni()
    import torch
    from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace
    from torch import nn

    from ..ops import SparseLinear
    from ..search_spaces._darts_modules import STEPS, FactorizedReduce, ReLUConvBN, SparseSpec, make_op, reduction_cells
    from ..search_spaces.sparse_darts import OPS

    c, cells, sparsity = int(fixed["channels"]), int(fixed["cells"]), float(fixed["sparsity"])
    sp = SparseSpec(sparsity)

    class NniCell(nn.Module):
        def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool) -> None:
            super().__init__()
            kind = "reduce" if reduction else "normal"
            self.pre0 = FactorizedReduce(c_pp, c, sp) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, sp)
            self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, sp)
            self.ops = nn.ModuleList()
            self.inputs = nn.ModuleList()
            for i in range(STEPS):
                self.ops.append(nn.ModuleList([
                    LayerChoice({op: make_op(op, c, 2 if reduction and j < 2 else 1, sp) for op in OPS},
                                label=f"{kind}_n{i}_e{j}") for j in range(i + 2)]))
                self.inputs.append(InputChoice(i + 2, 2, reduction="sum", label=f"{kind}_n{i}_inputs"))

        def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
            states = [self.pre0(s0), self.pre1(s1)]
            for ops, choose in zip(self.ops, self.inputs):
                states.append(choose([op(states[j]) for j, op in enumerate(ops)]))
            return torch.cat(states[2:], dim=1)

    class DartsLayerChoiceSpace(ModelSpace):
        def __init__(self) -> None:
            super().__init__()
            c_stem = 3 * c
            self.stem = nn.Sequential(nn.Conv2d(task.input_shape[0], c_stem, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(c_stem))
            c_pp, c_p, c_cur, reduction_prev = c_stem, c_stem, c, False
            reductions = reduction_cells(cells)
            self.cells = nn.ModuleList()
            for idx in range(cells):
                reduction = idx in reductions
                c_cur = c_cur * 2 if reduction else c_cur
                self.cells.append(NniCell(c_pp, c_p, c_cur, reduction, reduction_prev))
                reduction_prev = reduction
                c_pp, c_p = c_p, STEPS * c_cur
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = SparseLinear(c_p, task.num_classes, sparsity=sparsity)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s0 = s1 = self.stem(x)
            for cell in self.cells:
                s0, s1 = s1, cell(s0, s1)
            return self.classifier(torch.flatten(self.pool(s1), 1))

    return DartsLayerChoiceSpace()


def _darts_arch(space: "SearchSpace", fixed: Mapping[str, Any], sample: Mapping[str, Any]) -> Arch:
    from ..search_spaces._darts_modules import STEPS
    from ..search_spaces.sparse_darts import CELL_TYPES

    picks: dict[str, Any] = {"channels": fixed["channels"], "cells": fixed["cells"], "sparsity": fixed["sparsity"]}
    for kind in CELL_TYPES:
        for i in range(STEPS):
            a, b = sorted(int(v) for v in sample[f"{kind}_n{i}_inputs"])
            picks[f"{kind}_n{i}_inputs"] = f"{a}+{b}"
            picks[f"{kind}_n{i}_op0"] = sample[f"{kind}_n{i}_e{a}"]
            picks[f"{kind}_n{i}_op1"] = sample[f"{kind}_n{i}_e{b}"]
    return Arch(space.name, space.version, picks)


def _darts_fixed(space: "SearchSpace", task: "Task", options: Mapping[str, Any]) -> dict[str, Any]:
    """The choices a sparse_darts supernet does not search: channels, cells, sparsity."""
    default = space.default_arch(task).choices
    fixed = {"channels": options.get("channels") or default["channels"],
             "cells": options.get("cells") or default["cells"],
             "sparsity": options.get("target_sparsity") or default["sparsity"]}
    allowed = space.choices(task)
    for k, v in fixed.items():
        if v not in allowed[k]:
            flag = "--target-sparsity" if k == "sparsity" else f"--{k}"
            raise SparseNASError(f"{flag} {v} is not a value of sparse_darts' '{k}'; allowed: {allowed[k]}")
    return fixed


@dataclass(frozen=True)
class LayerChoiceForm:
    """A space as NNI LayerChoices: the choices fixed by options, the model space, a sample -> Arch."""

    fixed: Callable[["SearchSpace", "Task", Mapping[str, Any]], dict[str, Any]]
    model_space: Callable[["SearchSpace", "Task", Mapping[str, Any]], Any]
    to_arch: Callable[["SearchSpace", Mapping[str, Any], Mapping[str, Any]], Arch]


register_supernet("sparse_darts", "layer-choice")(LayerChoiceForm(_darts_fixed, _darts_layer_choice_space, _darts_arch))
ONE_SHOT = ("darts", "random-one-shot")


def check_one_shot(space: "SearchSpace", task: "Task", options: Mapping[str, Any]) -> dict[str, Any]:
    """The fixed choices of ``space``'s LayerChoice form; SparseNASError when it has none."""
    form = find_supernet(space.name, "layer-choice")
    if form is None:
        names = ", ".join(space.choices(task))
        if len(names) > 200:
            names = names[:200] + "..."
        raise SparseNASError(
            f"NNI's one-shot strategies cannot search space '{space.name}': they need the space's operations as NNI "
            "LayerChoices of whole modules, and sparsenas expresses only "
            f"{', '.join(spaces_with('layer-choice'))} that way. "
            f"The choices of '{space.name}' ({names}) change shapes and masks inside our sparse layers, which NNI's "
            "mixed ops (dense Conv2d/Linear/BatchNorm only) cannot share weights across. Use nni:random or "
            "nni:evolution on this space, or our supernet strategies (dass, entangled, balanced)")
    return form.fixed(space, task, options)


def run_one_shot(kind: str, space: "SearchSpace", data: "DataSplits", fixed: Mapping[str, Any], *, epochs: int,
                 batch_size: int, lr: float, seed: int, candidates: int = 1,
                 seconds: float | None = None) -> dict[str, Any]:
    """Train NNI's one-shot supernet of ``space`` for ``epochs``, or for ``seconds`` (Lightning's
    ``max_time``, which may stop it inside an epoch) when given, and derive architectures from it.

    darts: NNI's DARTS (bilevel: alphas on the validation split), then its argmax export (1 arch).
    random-one-shot: NNI's RandomOneShot (single-path uniform sampling, SPOS), then ``candidates``
    random paths ranked by validation accuracy with inherited weights (NNI's own export of this
    strategy is an arbitrary architecture).
    Returns {"archs": [(label, Arch, supernet val acc or None), ...], "seconds": ..., ...}.
    """
    require_nni()
    import pytorch_lightning as pl
    import torch
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from nni.nas.strategy import DARTS, RandomOneShot

    from ..evaluators import accuracy

    form = find_supernet(space.name, "layer-choice")
    task = data.task
    pl.seed_everything(seed, verbose=False)
    model_space = form.model_space(space, task, fixed)
    g = torch.Generator().manual_seed(seed)
    evaluator = Classification(
        learning_rate=lr, weight_decay=3e-4, optimizer=torch.optim.SGD, num_classes=task.num_classes,
        train_dataloaders=DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=g),
        val_dataloaders=DataLoader(data.val, batch_size=batch_size),
        max_epochs=epochs, max_time=None if seconds is None else datetime.timedelta(seconds=seconds),
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    strategy = {"darts": DARTS, "random-one-shot": RandomOneShot}[kind]()
    start = time.perf_counter()
    with warnings.catch_warnings():  # Lightning's advice on dataloader workers and NNI's export notes
        warnings.simplefilter("ignore")
        strategy(RawFormatModelSpace.from_model(model_space, evaluator), SequentialExecutionEngine())
    search_seconds = time.perf_counter() - start
    module = strategy.oneshot_module
    module.set_model(strategy.supernet)
    archs: list[tuple[str, Arch, float | None]] = []
    if kind == "darts":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            archs.append(("nni-darts-argmax", form.to_arch(space, fixed, module.export()), None))
    else:
        net = strategy.supernet.eval()
        seen: set[str] = set()
        scored = []
        for _ in range(max(1, candidates) * 3):
            if len(scored) >= candidates:
                break
            sample = module.resample()
            arch = form.to_arch(space, fixed, sample)
            if arch.digest() in seen:
                continue
            seen.add(arch.digest())
            scored.append((accuracy(net, data.val, torch.device("cpu"), batch_size * 4), arch))
        scored.sort(key=lambda s: -s[0])
        archs = [(f"nni-spos-rank{r}", a, acc) for r, (acc, a) in enumerate(scored)]
    trainer = getattr(evaluator, "trainer", None)
    return {"archs": archs, "search_seconds": round(search_seconds, 2),
            "derive_seconds": round(time.perf_counter() - start - search_seconds, 2),
            "epochs": epochs if seconds is None else None, "max_seconds": seconds,
            "epochs_run": getattr(trainer, "current_epoch", None), "steps_run": getattr(trainer, "global_step", None)}

