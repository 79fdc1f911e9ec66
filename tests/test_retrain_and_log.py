"""The supernet strategies' one retrain-and-log step: the network is saved with its trial, and a
network that diverges is a FAIL trial with the reason (the search goes on)."""
import optuna
import torch

from sparsenas.data import load_dataset
from sparsenas.evaluators import Evaluator, LatencyResult, TrainBudget
from sparsenas.search_spaces import get_space
from sparsenas.strategies.base import SearchContext
from sparsenas.strategies.supernet import retrain_and_log
from sparsenas.tracking import StudySpec, Tracker, load_weights, trial_record


def test_a_retrained_network_is_saved_and_a_diverged_one_fails_with_its_reason(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    data = load_dataset("synthetic", limit=48, seed=0)
    space = get_space("sparse_mbv2")
    spec = StudySpec(space.name, space.version, "synthetic", data.task.to_dict(), ("accuracy",), "torch")
    tracker = Tracker(url, "r", spec)
    evaluator = Evaluator(space, data, TrainBudget(epochs=1, batch_size=16), lambda a, m, t: LatencyResult(1.0, "test"))
    ctx = SearchContext(space=space, task=data.task, data=data, evaluator=evaluator, tracker=tracker, trials=2)
    arch = space.default_arch(data.task)

    ft, trained = retrain_and_log(ctx, evaluator, arch, strategy="dass", what="retrain", stage="main")
    rec = trial_record(ft)
    assert ft.state == optuna.trial.TrialState.COMPLETE and trained is not None
    assert rec.stage == "main" and rec.accuracy == trained.val_accuracy and rec.weights_artifact
    model = space.build(arch, data.task)
    model.load_state_dict(load_weights(url, tracker.study, ft))  # the trained network, as the study holds it

    ft, trained = retrain_and_log(ctx, evaluator.with_budget(lr=1e12), arch, strategy="dass", what="diverge",
                                  stage="main")
    rec = trial_record(ft)
    assert trained is None and ft.state == optuna.trial.TrialState.FAIL
    assert rec.reason.startswith("TrainingDiverged") and rec.stage == "main" and rec.weights_artifact is None
    assert [t.state.name for t in tracker.study.trials] == ["COMPLETE", "FAIL"]
    assert torch.isfinite(next(iter(model.parameters()))).all()
