"""End-to-end searches on a real sqlite Optuna storage."""
import optuna
import pytest

import sparsenas
from sparsenas.arch import Arch
from sparsenas.search_spaces import get_space
from sparsenas.tracking import arch_of

FAST = dict(space="sparse_mbv2", dataset="synthetic", epochs=2, batch_size=16, progress=False)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('s') / 'nas.db'}"
    study = sparsenas.search(strategy="random", trials=3, storage=url, study="s1", seed=1, **FAST)
    return url, study


def test_three_trial_search_records_params_values_attrs_and_epochs(searched):
    url, study = searched
    loaded = optuna.load_study(study_name="s1", storage=url)
    trials = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 3
    assert loaded.user_attrs["space"] == "sparse_mbv2" and loaded.user_attrs["strategy"] == "random"
    assert loaded.metric_names == ["accuracy", "latency_ms"]
    space = get_space("sparse_mbv2")
    for t in trials:
        arch = arch_of(t)
        assert isinstance(arch, Arch) and dict(arch.choices) == t.params  # params are the choices
        space.validate(arch, sparsenas.Task("synthetic", (1, 8, 8), 4))
        acc, lat = t.values
        assert 0.0 <= acc <= 1.0 and lat > 0
        assert t.user_attrs["accuracy"] == acc and t.user_attrs["latency_ms"] == lat
        assert t.user_attrs["params"] >= t.user_attrs["nnz"] > 0
        assert t.user_attrs["flops"] >= t.user_attrs["effective_flops"] > 0
        # predicted from the shipped profile (its 4-class head timed into the cache if need be), not measured
        assert t.user_attrs["latency_source"].startswith("table:") and t.user_attrs["predicted_latency_ms"] == lat
        assert sorted(t.intermediate_values) == [1, 2]  # validation accuracy per epoch
    # the synthetic task is easy: training must beat chance (25%) by far
    assert max(t.values[0] for t in trials) > 0.8


def test_rerunning_resumes_the_same_study(searched):
    url, _ = searched
    study = sparsenas.search(strategy="random", trials=4, storage=url, study="s1", seed=1, **FAST)
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4  # one more, none repeated or lost
    digests = [t.user_attrs["arch_digest"] for t in study.get_trials()]
    assert len(set(digests)) == 4
    # asking again for a budget already spent evaluates nothing
    again = sparsenas.search(strategy="random", trials=4, storage=url, study="s1", seed=1, **FAST)
    assert len(again.get_trials()) == 4


def test_resuming_with_another_space_or_task_is_refused(searched):
    url, _ = searched
    with pytest.raises(sparsenas.errors.SparseNASError, match="already holds a search"):
        sparsenas.search(strategy="random", trials=1, storage=url, study="s1", input_size=16,
                         **{**FAST, "epochs": 1})


def test_a_diverging_architecture_fails_its_trial_and_the_search_goes_on(storage_url):
    study = sparsenas.search(strategy="random", trials=2, storage=storage_url, study="nan", lr=1e9,
                             **{**FAST, "epochs": 1})
    trials = study.get_trials()
    assert len(trials) == 2
    assert all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert all("loss became" in t.user_attrs["fail_reason"] for t in trials)


def test_single_objective_rejects_slow_architectures_before_training(storage_url):
    study = sparsenas.search(strategy="random", trials=2, storage=storage_url, study="acc", objective="accuracy",
                             max_latency_ms=1e-6, **{**FAST, "epochs": 1})
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all("max-latency-ms" in t.user_attrs["pruned_reason"] for t in trials)
    assert all(not t.intermediate_values for t in trials)  # never trained


@pytest.mark.slow
def test_tpe_search_beats_a_random_guess_on_digits(storage_url):
    study = sparsenas.search(space="sparse_mbv2", strategy="tpe", dataset="digits", input_size=8, trials=3,
                             epochs=3, storage=storage_url, progress=False)
    best = max(t.user_attrs["test_accuracy"] for t in study.get_trials() if t.values)
    assert best > 0.8  # chance is 0.1


def test_a_network_proposed_under_another_encoding_is_not_trained_again(storage_url, tmp_path):
    # ensembles=1 makes the layer dense: p_inter, graph and grouping (and unused widths) change nothing
    fixed = {"depth": 1, "h1_width": 64, "dst": "off", "ensembles": 1}
    study = sparsenas.search(space="g2g_mlp", dataset="synthetic", strategy="random", trials=3, epochs=1,
                             batch_size=16, progress=False, storage=storage_url, study="dup", seed=0,
                             latency="measured", artifact_dir=str(tmp_path / "art"), options={"fixed": fixed})
    first, *others = study.get_trials()
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials())
    assert "duplicate_of" not in first.user_attrs and first.intermediate_values  # trained
    assert len({t.user_attrs["arch_digest"] for t in study.get_trials()}) > 1  # encodings differ...
    for t in others:  # ...one network: later proposals take the first one's results and weights
        assert t.user_attrs["duplicate_of"] == first.number and not t.intermediate_values
        assert t.values == first.values
        assert t.user_attrs["weights_artifact"] == first.user_attrs["weights_artifact"]
