import json
import math

import optuna
import pytest
import torch

from sparsenas.api import search
from sparsenas.errors import SparseNASError
from sparsenas.search_spaces import get_space
from sparsenas.search_spaces.pooling_resnet20 import placements, positions
from sparsenas.supernets.balanced import (
    BalancedMixture, balance_correction, balanced_probs, kl_to_uniform, pooling_path_supernet, train_mixture,
)
from sparsenas.task import Task


def test_36_placements_in_paper_notation():
    ps = placements()
    assert len(ps) == 36 == len(set(ps))
    assert all(sum(int(b) for b in p.split("-")) == 10 and min(int(b) for b in p.split("-")) >= 1 for p in ps)
    assert positions("4-3-3") == (4, 7) and "4-3-3" in ps


@pytest.mark.parametrize("size", [8, 16, 32])
def test_every_placement_builds_with_the_right_output_resolution(size):
    space = get_space("pooling_resnet20")
    task = Task("digits", (1, size, size), 10)
    x = torch.randn(1, 1, size, size)
    # all 36 placements for one type, the three types for a few placements (keeps the test fast)
    archs = [space.default_arch(task).replace(placement=p, downsample="max") for p in placements()]
    archs += [space.default_arch(task).replace(placement=p, downsample=d)
              for p in ("1-1-8", "4-3-3", "8-1-1") for d in ("avg", "conv")]
    for arch in archs:
        model = space.build(arch, task).eval()
        with torch.no_grad():
            assert model.features(x).shape == (1, 64, size // 4, size // 4), arch
            assert model(x).shape == (1, 10)


def test_downsampling_sits_before_the_chosen_blocks_in_standalone_and_supernet():
    space = get_space("pooling_resnet20")
    task = Task("digits", (1, 8, 8), 10)
    supernet = pooling_path_supernet(space, task)
    seen = []
    hooks = [b.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[-1])) for b in supernet.net_blocks()]
    for p in placements():
        for d in ("max", "avg", "conv"):
            arch = space.default_arch(task).replace(placement=p, downsample=d)
            p1, p2 = positions(p)
            convs = [l for l in space.layers(arch, task) if l.kernel == 3]
            # each block's first conv sees the map after the pools before it (conv: it downsamples itself)
            pre = [8 if b < p1 else 4 if b < p2 else 2 for b in range(1, 10)]
            if d == "conv":
                pre = [8 if b <= p1 else 4 if b <= p2 else 2 for b in range(1, 10)]
                assert [convs[1 + 2 * (b - 1)].stride for b in range(1, 10)] == [
                    2 if b in (p1, p2) else 1 for b in range(1, 10)]
            assert [convs[1 + 2 * (b - 1)].in_hw[0] for b in range(1, 10)] == pre, arch
            seen.clear()
            with torch.no_grad():
                assert supernet(torch.randn(2, 1, 8, 8), arch).shape == (2, 10)
            assert seen == pre  # the supernet's path has the same resolutions
    for h in hooks:
        h.remove()


def test_odd_sizes_and_bad_task():
    space = get_space("pooling_resnet20")
    task = Task("x", (3, 7, 7), 10)
    for d in ("max", "avg", "conv"):
        model = space.build(space.default_arch(task).replace(downsample=d), task)
        assert model.features(torch.randn(1, 3, 7, 7)).shape[-1] == 2  # ceil(ceil(7/2)/2)
    with pytest.raises(SparseNASError, match="image data"):
        space.choices(Task("mnist1d", (1, 40), 10))


def test_balancing_makes_the_model_marginal_uniform():
    g = torch.Generator().manual_seed(0)
    # affinities that send nearly every path to model 0: the raw marginal is far from uniform
    W = torch.rand(36, 4, generator=g) * 0.2
    W[:, 0] += 0.5
    probs = torch.softmax(50 * W, dim=1)
    assert kl_to_uniform(probs.mean(0)) > 0.5
    c = balance_correction(probs, tol=1e-4)
    balanced = balanced_probs(probs, c)
    assert torch.allclose(balanced.sum(1), torch.ones(36), atol=1e-5)
    assert kl_to_uniform(balanced.mean(0)) <= 1e-4
    assert balanced.mean(0).tolist() == pytest.approx([0.25] * 4, abs=0.01)
    # the correction keeps each path's preference order among the models
    assert torch.equal(balanced.argsort(1), (probs / c).argsort(1))
    # M=1 is trivially balanced
    assert balance_correction(torch.ones(5, 1)).tolist() == [1.0]


def test_mixture_training_updates_affinities_and_spreads_steps():
    from sparsenas.data import load_dataset

    data = load_dataset("synthetic", limit=128, seed=0)
    space = get_space("pooling_resnet20")
    paths = [space.default_arch(data.task).replace(placement=p, downsample="max") for p in placements()[:6]]
    torch.manual_seed(0)
    mix = BalancedMixture(lambda: pooling_path_supernet(space, data.task), paths, 2)
    report = train_mixture(mix, data, epochs=3, batch_size=32, seed=0)
    assert report.steps == 12 and sum(report.model_steps) == 12 and min(report.model_steps) >= 2
    assert (mix.W != 1).any()  # validation accuracies moved the affinities
    assert mix.rebalance(1.0) <= 1e-4  # the per-epoch correction, recomputed for the final affinities
    assert kl_to_uniform(mix.model_probs(1.0).mean(0)) <= 1e-4
    x, y = data.val.tensors
    scores = mix.score(x, y)
    assert scores.shape == (6, 2) and ((scores >= 0) & (scores <= 1)).all()
    # supernet BatchNorm keeps no running statistics (batch statistics in every mode)
    assert not any(getattr(m, "track_running_stats", False) for m in mix.modules())


OPTIONS = {"supernets": 2, "search_epochs": 1, "retrain_top": 1, "fix": {"downsample": "max"}}


def test_balanced_strategy_logs_every_type_retrains_and_resumes(storage_url):
    options = {"supernets": 2, "search_epochs": 1, "retrain_top": 1, "fix": {"placement": "2-3-5"}}
    kw = dict(space="pooling_resnet20", strategy="balanced", dataset="synthetic", limit=64, epochs=1,
              storage=storage_url, study="bal3", progress=False, options=options)
    study = search(**kw)
    estimates = [t for t in study.trials if t.user_attrs["stage"] == "estimate"]
    retrained = [t for t in study.trials if t.user_attrs["stage"] == "retrained"]
    assert sorted(t.params["downsample"] for t in estimates) == ["avg", "conv", "max"]
    assert all(t.params["placement"] == "2-3-5" and len(t.values) == 2 and t.values[1] > 0 for t in estimates)
    best = max(estimates, key=lambda t: t.values[0])
    assert len(retrained) == 1 and retrained[0].params == best.params
    assert retrained[0].user_attrs["epochs"] == 1
    for t in estimates:
        assert t.user_attrs["strategy"] == "balanced" and t.user_attrs["supernet"] in (0, 1)
        assert t.values[0] == pytest.approx(max(t.user_attrs["estimates"]), abs=1e-4)
    assert len(search(**kw).trials) == len(study.trials)  # resumed: nothing evaluated twice
    with pytest.raises(SparseNASError, match="fix="):
        search(**{**kw, "study": "bad", "options": {**options, "fix": {"downsample": "lp"}}})


@pytest.mark.slow
def test_balanced_strategy_logs_every_placement_and_retrains(storage_url):
    study = search(space="pooling_resnet20", strategy="balanced", dataset="synthetic", limit=96, epochs=1,
                   storage=storage_url, study="bal", progress=False, objective="accuracy", options=OPTIONS)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    estimates = [t for t in trials if t.user_attrs["stage"] == "estimate"]
    retrained = [t for t in trials if t.user_attrs["stage"] == "retrained"]
    assert len(estimates) == 36 and len(retrained) == 1  # every max-pool placement logged
    assert {t.params["placement"] for t in estimates} == set(placements())
    assert {t.params["downsample"] for t in estimates} == {"max"}
    best = max(estimates, key=lambda t: t.values[0])
    assert retrained[0].params == best.params
    for t in estimates[:5]:
        assert t.user_attrs["strategy"] == "balanced" and t.user_attrs["supernet"] in (0, 1)
        assert t.values[0] == pytest.approx(max(t.user_attrs["estimates"]), abs=1e-4)
        assert json.loads(t.user_attrs["arch"])["space"] == "pooling_resnet20"
    # resuming the same study re-uses the estimates and does not retrain again
    again = search(space="pooling_resnet20", strategy="balanced", dataset="synthetic", limit=96, epochs=1,
                   storage=storage_url, study="bal", progress=False, objective="accuracy", options=OPTIONS)
    assert len(again.trials) == len(study.trials)
    with pytest.raises(SparseNASError, match="fix="):
        search(space="pooling_resnet20", strategy="balanced", dataset="synthetic", limit=96, epochs=1,
               storage=storage_url, study="bad", progress=False, options={**OPTIONS, "fix": {"downsample": "lp"}})


def test_balanced_needs_a_path_supernet(storage_url):
    with pytest.raises(SparseNASError, match="single-path"):
        search(space="g2g_mlp", strategy="balanced", dataset="synthetic", limit=32, epochs=1, storage=storage_url,
               progress=False)


@pytest.mark.parametrize("space,dataset", [("g2g_mlp", "synthetic"), ("pooling_resnet20", "synthetic")])
def test_random_search_runs_on_the_new_spaces(storage_url, space, dataset):
    study = search(space=space, strategy="random", dataset=dataset, limit=64, epochs=1, trials=2,
                   storage=storage_url, progress=False)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 2
    for t in done:
        assert 0.0 <= t.values[0] <= 1.0 and t.values[1] > 0 and math.isfinite(t.values[1])
        assert t.user_attrs["nnz"] <= t.user_attrs["params"]
