"""balanced: a balanced mixture of M supernets ranks every architecture of a small space (e.g. the
36 x 3 downsampling placements of pooling_resnet20), then the best are retrained standalone.

Every architecture is logged as a trial with its best supernet estimate (``stage="estimate"``,
``supernet`` = the model that scored it best, ``estimates`` = all M); the ``retrain_top`` best are
then trained from scratch like a random-search trial (``stage="retrained"``). Options:
``supernets`` (M, default 4), ``search_epochs`` (supernet training; default 3x the training
epochs), ``retrain_top`` (default 3), ``retrain_epochs`` (default the training epochs), and, from
the Python API, ``fix`` = {choice: value} to hold some choices fixed (e.g. ``{"downsample": "max"}``:
the paper's 36 max-pool placements).
"""
from __future__ import annotations

import itertools
import time
from typing import Any

from ..arch import Arch
from ..errors import SparseNASError
from ..evaluators import TrainResult
from ..tracking import trial_record
from ..search_spaces.base import SearchSpace
from ..task import Task
from .. import distributed
from ..supernets.balanced import BalancedMixture, BalancedTrainer
from ..supernets.registry import find_supernet, spaces_with
from . import STRATEGIES
from .base import SearchContext, Strategy
from .budget import Deadline
from .supernet import retrain_and_log, train_supernet
from .options import Option

MAX_PATHS = 1000


def all_archs(ctx: SearchContext, fix: dict | None = None) -> list[Arch]:
    """Every architecture of the space, with the choices in ``fix`` held at their value."""
    choices = dict(ctx.space.choices(ctx.task))
    for key, value in (fix or {}).items():
        if key not in choices or value not in choices[key]:
            allowed = choices.get(key, f"one of the choices {', '.join(choices)}")
            raise SparseNASError(f"strategy 'balanced': option fix={{{key!r}: {value!r}}} is not in space "
                                 f"'{ctx.space.name}'; allowed: {allowed}")
        choices[key] = [value]
    keys = list(choices)
    return [Arch(ctx.space.name, ctx.space.version, dict(zip(keys, combo)))
            for combo in itertools.product(*(choices[k] for k in keys))]


def _option(ctx: SearchContext, name: str, default: int) -> int:
    value = ctx.options.get(name)
    value = default if value is None else value
    if int(value) != value or value < 1:
        raise SparseNASError(f"strategy 'balanced': --{name.replace('_', '-')} must be a positive integer, got {value!r}")
    return int(value)


@STRATEGIES.register("balanced")
class BalancedStrategy(Strategy):
    name = "balanced"
    runs_distributed = True
    description = ("balanced mixture of M supernets (default 4) over every architecture of a small space "
                   "(pooling_resnet20), ranked by supernet accuracy; the best retrained standalone")
    options = (
        Option("supernets", int, 4, "number of supernets M in the mixture"),
        Option("search_epochs", int, None, "epochs of supernet training (default 3x --epochs)"),
        Option("retrain_top", int, 3, "best-ranked architectures to retrain standalone"),
        Option("retrain_epochs", int, None, "training epochs of each retrained architecture (default --epochs)"),
        Option("fix", dict, None, "hold choices at a value, e.g. downsample=max (the paper's 36 placements)"),
    )

    def check(self, space: SearchSpace, task: Task, options: dict[str, Any]) -> None:
        if find_supernet(space.name, "path") is None:
            raise SparseNASError(f"strategy 'balanced' needs a space with a single-path weight-sharing supernet "
                                 f"({', '.join(spaces_with('path'))}); space '{space.name}' has none. Use random, tpe "
                                 "or nsga2 for it")
        if space.size(task) > MAX_PATHS:
            raise SparseNASError(f"strategy 'balanced' scores every architecture and takes spaces of at most "
                                 f"{MAX_PATHS}; space '{space.name}' has {space.size(task)}")

    def run(self, ctx: SearchContext) -> None:
        space, tracker, evaluator = ctx.space, ctx.tracker, ctx.evaluator
        self.check(space, ctx.task, ctx.options)  # library callers may skip check()
        num_models = _option(ctx, "supernets", 4)
        search_epochs = _option(ctx, "search_epochs", 3 * evaluator.budget.epochs)
        retrain_top = _option(ctx, "retrain_top", 3)
        retrain_epochs = _option(ctx, "retrain_epochs", evaluator.budget.epochs)
        paths = all_archs(ctx, ctx.options.get("fix"))
        choices = space.choices(ctx.task)
        deadline = Deadline(time.perf_counter(), ctx.timeout)

        finished = [trial_record(t) for t in tracker.finished()]
        estimated = [r for r in finished if r.stage == "estimate"]
        if distributed.broadcast(bool(tracker.read_study().balanced_estimates_logged and estimated)):
            ranked = sorted(estimated, key=lambda r: -r.values[0])
            ranking = [r.arch for r in ranked]
            ctx.progress.log(f"balanced: resuming, {len(ranking)} supernet estimates already in the study")
        else:
            ranking = self._search(ctx, paths, choices, num_models, search_epochs)
        if not distributed.is_main():  # the other ranks only train; rank 0 scores, retrains and logs
            return
        done = {r.arch_digest for r in finished if r.stage == "retrained"}
        retrain = evaluator.with_budget(epochs=retrain_epochs)
        for arch in ranking[:retrain_top]:
            if arch.digest() in done:
                continue
            if deadline.passed():
                ctx.progress.log("balanced: --timeout reached, no more retraining")
                break
            retrain_and_log(ctx, retrain, arch, strategy=self.name, what=f"retrain {arch.digest()}",
                            stage="retrained", supernets=num_models)

    def _search(self, ctx: SearchContext, paths: list[Arch], choices: dict, num_models: int,
                search_epochs: int) -> list[Arch]:
        space, evaluator, tracker, task = ctx.space, ctx.evaluator, ctx.tracker, ctx.task
        ctx.progress.trial_started(len(tracker.study.trials), f"{num_models} supernets x {len(paths)} paths")
        build = find_supernet(space.name, "path")
        trainer = BalancedTrainer(lambda: BalancedMixture(lambda: build(space, task), paths, num_models),
                                  ctx.data, epochs=search_epochs, batch_size=evaluator.budget.batch_size,
                                  lr=max(evaluator.budget.lr, 0.1), seed=ctx.seed, device=ctx.device,
                                  on_step=ctx.progress.trial_progress,
                                  extra_settings={"supernets": num_models, "paths": [a.digest() for a in paths]})
        train_supernet(ctx, trainer)
        if not distributed.is_main():
            return []
        mixture, report = trainer.mixture, trainer.derive()
        x_val, y_val = ctx.data.val.tensors
        scores = mixture.score(x_val, y_val, device=ctx.device)  # (paths, M)
        best_model = scores.argmax(1)
        x_test, y_test = ctx.data.test.tensors
        ctx.progress.log(f"balanced: {report.steps} steps in {report.seconds:.0f}s; steps per supernet "
                         f"{report.model_steps}; scoring {len(paths)} paths")
        logged = []
        for a, arch in enumerate(paths):
            m = int(best_model[a])
            test = float(mixture.score(x_test, y_test, device=ctx.device, paths=[a], models=[m])[a, m])
            model = evaluator.build(arch)  # standalone network: its costs and latency are the exported ones
            result = evaluator.result(arch, model, TrainResult(float(scores[a, m]), test, [], search_epochs,
                                                               report.seconds / len(paths)),
                                      evaluator.latency(arch, model))
            ft = tracker.log_arch(arch, choices, result, strategy=self.name, stage="estimate", supernet=m,
                                  supernets=num_models, estimates=[round(float(v), 4) for v in scores[a]],
                                  assigned=report.assignment[a])
            ctx.progress.trial_finished(ft)
            logged.append((float(scores[a, m]), a))
        tracker.set_study_attr("balanced_estimates_logged", True)
        tracker.set_study_attr("balanced_model_steps", report.model_steps)
        return [paths[a] for _, a in sorted(logged, key=lambda t: (-t[0], t[1]))]
