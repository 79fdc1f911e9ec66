import json
import random

import optuna
import pytest
import torch
import torch.nn.functional as F

import sparsenas
from sparsenas.arch import Arch
from sparsenas.data import load_dataset
from sparsenas.errors import SparseNASError
from sparsenas.ops import sparse_modules
from sparsenas.search_spaces import get_space
from sparsenas.search_spaces._darts_modules import EDGES, PRIMITIVES, SparseSpec, make_op
from sparsenas.strategies.dass import DassConfig
from sparsenas.supernets.dass_trainer import dass_search
from sparsenas.supernets.mixed import MixedOp, build_mixed_supernet
from sparsenas.task import Task

from _exported import assert_best_export_reproduces

TASK8 = Task("synthetic", (1, 8, 8), 4)


def tiny_darts(**kw):
    torch.manual_seed(0)
    return build_mixed_supernet(get_space("sparse_darts"), TASK8, target_sparsity=0.9, channels=8, cells=3,
                                search_cells=2, **kw)


@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_op_output_is_the_alpha_weighted_sum_of_its_ops(stride):
    torch.manual_seed(0)
    sp = SparseSpec(0.5, mask_kind="score", affine=False)
    mixed = MixedOp({p: make_op(p, 4, stride, sp) for p in PRIMITIVES}).eval()
    x = torch.randn(2, 4, 8, 8)
    weights = F.softmax(torch.randn(len(PRIMITIVES)), dim=0)
    with torch.no_grad():
        expected = sum(w * op(x) for w, op in zip(weights, mixed.candidates))
        out = mixed(x, weights)
    assert out.shape == (2, 4, 8 // stride, 8 // stride)
    torch.testing.assert_close(out, expected)
    # a one-hot weight vector selects exactly one op
    onehot = torch.zeros(len(PRIMITIVES))
    onehot[PRIMITIVES.index("sep_conv_3x3")] = 1.0
    with torch.no_grad():
        torch.testing.assert_close(mixed(x, onehot), mixed.candidates[PRIMITIVES.index("sep_conv_3x3")](x))


def test_alpha_gradient_flows_through_the_network_masked_at_target_sparsity():
    net = tiny_darts()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))
    net.set_masked(True)
    loss_masked = F.cross_entropy(net(x), y)
    for m in sparse_modules(net):  # every sparse layer really ran at 90% sparsity
        assert m.mask_kind == "score"
        assert abs(1 - float(m.mask.mean()) - 0.9) < 0.06, m
    loss_masked.backward()
    grads_masked = [a.grad.clone() for a in net.arch_parameters()]
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads_masked)
    scores = net.score_parameters()
    assert any(s.grad is not None and s.grad.abs().sum() > 0 for s in scores)  # straight-through to scores
    net.zero_grad(set_to_none=True)
    net.set_masked(False)
    loss_dense = F.cross_entropy(net(x), y)
    loss_dense.backward()
    assert not torch.isclose(loss_masked, loss_dense)
    assert any(not torch.allclose(gm, a.grad) for gm, a in zip(grads_masked, net.arch_parameters()))


def test_derived_darts_genotype_follows_alpha_is_valid_and_builds():
    net = tiny_darts()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.fill_(-5.0)
        normal = net.alpha["normal"]
        row = {e: r for r, e in enumerate(EDGES)}
        normal[row[(3, 0)], PRIMITIVES.index("none")] = 10.0  # 'none' never wins an edge
        normal[row[(3, 2)], PRIMITIVES.index("dil_conv_3x3")] = 3.0
        normal[row[(3, 4)], PRIMITIVES.index("sep_conv_5x5")] = 5.0
        net.alpha["reduce"][row[(0, 1)], PRIMITIVES.index("max_pool_3x3")] = 4.0
    arch = net.derive()
    c = arch.choices
    assert (c["normal_n3_inputs"], c["normal_n3_op0"], c["normal_n3_op1"]) == ("2+4", "dil_conv_3x3", "sep_conv_5x5")
    assert c["reduce_n0_op1"] == "max_pool_3x3"
    assert (c["cells"], c["channels"], c["sparsity"]) == (3, 8, 0.9)
    space = get_space("sparse_darts")
    space.validate(arch, TASK8)
    arch = Arch.from_json(arch.to_json())
    model = space.build(arch, TASK8).eval()
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    layers = sparse_modules(model)
    assert layers and all(m.target_sparsity == 0.9 for m in layers)
    # the encoding is one a random sampler can draw from directly: every sample builds
    for seed in range(3):
        sampled = space.sample(random.Random(seed), TASK8)
        assert space.build(sampled, TASK8)(torch.randn(1, 1, 8, 8)).shape == (1, 4)


def test_mbv2_supernet_derives_a_valid_sparse_mbv2_arch():
    task = Task("digits", (1, 8, 8), 10)
    space = get_space("sparse_mbv2")
    net = build_mixed_supernet(space, task, target_sparsity=0.8)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with torch.no_grad():
        net.alpha["blocks"].fill_(0.0)
        net.alpha["blocks"][2, net.candidate_names["blocks"].index("k5_sparse0.8")] = 1.0
        net.alpha["head"][0, 1] = 1.0
    arch = net.derive()
    space.validate(arch, task)
    assert arch.choices["s3b1_kernel"] == 5 and arch.choices["s3b1_sparsity"] == 0.8
    assert arch.choices["head_sparsity"] == 0.8
    assert space.build(arch, task)(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def test_latency_term_moves_alpha_to_cheaper_ops():
    net = tiny_darts()
    # a deterministic cost model for the test: one ms per dense MFLOP (the real default times kernels)
    table = net.candidate_latency(lambda spec: spec.flops() / 1e6)
    none, skip, sep5 = (PRIMITIVES.index(p) for p in ("none", "skip_connect", "sep_conv_5x5"))
    for name, row, ms in table:
        assert ms[none] == 0 and ms[sep5] > 0
        if name == "normal":
            assert ms[skip] == 0  # identity runs no kernel
    before = net.expected_latency(table).item()
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        net.expected_latency(table).backward()
        opt.step()
    assert net.expected_latency(table).item() < 0.5 * before
    assert net.probs()["normal"][:, sep5].mean() < 1 / len(PRIMITIVES)


def test_second_order_step_runs_and_moves_alpha():
    data = load_dataset("synthetic", seed=0, limit=64)
    net = tiny_darts()
    alpha0 = [a.detach().clone() for a in net.arch_parameters()]
    scores0 = [s.detach().clone() for s in net.score_parameters()]
    cfg = DassConfig(search_epochs=1, order="second", batch_size=64, phases=(0.0, 1.0, 0.0))
    log = dass_search(net, data, cfg, seed=0)
    assert log.steps == 1 and len(log.history) == 1
    # the pruning phase trains the scores (through the unrolled step too), not the weights
    assert any(not torch.allclose(s0, s) for s0, s in zip(scores0, net.score_parameters()))
    assert any(not torch.allclose(a0, a) for a0, a in zip(alpha0, net.arch_parameters()))
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert [h["phase"] for h in log.history] == ["prune"]
    assert 0.0 <= log.history[0]["val_accuracy_masked"] <= 1.0


def test_bad_dass_options_are_clear_errors(tmp_path):
    db = tmp_path / "bad.db"
    for options in ({"target_sparsity": 0.85}, {"retrain_epochs": 0}):
        with pytest.raises(SparseNASError):
            sparsenas.search(space="sparse_darts", strategy="dass", dataset="synthetic", storage=f"sqlite:///{db}",
                             progress=False, options=options)
    assert not db.exists()  # rejected before the study was created
    with pytest.raises(SparseNASError, match="does not take option"):
        DassConfig.from_options({"supernets": 4})
    with pytest.raises(SparseNASError, match="target-sparsity"):
        DassConfig.from_options({"target_sparsity": 1.5})
    with pytest.raises(SparseNASError, match="allowed"):
        build_mixed_supernet(get_space("sparse_darts"), TASK8, target_sparsity=0.85)
    with pytest.raises(SparseNASError, match="no mixed-op supernet"):
        class Other:
            name = "g2g_mlp"
        build_mixed_supernet(Other(), TASK8)


def test_tiny_dass_search_logs_derived_architectures_into_a_real_study(tmp_path):
    storage = f"sqlite:///{tmp_path}/x.db"
    sparsenas.search(space="sparse_darts", strategy="dass", dataset="synthetic", storage=storage, study="tiny",
                     progress=False, hw_anchor=False, options=dict(search_epochs=1, retrain_epochs=1, retrain_top=2,
                                                                   cells=3, search_cells=2))
    study = optuna.load_study(study_name="tiny", storage=storage)  # read back from the file, fresh
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2
    space = get_space("sparse_darts")
    task = Task.from_dict(study.user_attrs["task"])
    digests = set()
    for t in trials:
        assert t.user_attrs["strategy"] == "dass"
        arch = Arch.from_json(t.user_attrs["arch"])
        space.validate(arch, task)
        assert dict(arch.choices) == t.params  # the dashboard's params are the derived architecture
        assert len(t.values) == 2 and 0.0 <= t.values[0] <= 1.0 and t.values[1] > 0
        assert abs(t.user_attrs["sparse_layer_sparsity"] - 0.9) < 0.01
        history = t.user_attrs["alpha_history"]
        assert len(history) == 1 and len(history[0]["normal"]) == 14 and len(history[0]["reduce"][0]) == 8
        digests.add(t.user_attrs["arch_digest"])
    assert len(digests) == 2
    assert [t.user_attrs["derivation"] for t in trials][0] == "argmax"
    assert json.dumps(study.user_attrs["dass_alpha_history"]) and study.user_attrs["dass_search"]["steps"] == 4
    # the retrained networks were saved with their trials: the best exports without --train, as it scored
    assert_best_export_reproduces(storage, "tiny", tmp_path / "found")
    # a second run on the same study does not search again
    sparsenas.search(space="sparse_darts", strategy="dass", dataset="synthetic", storage=storage, study="tiny",
                     progress=False, hw_anchor=False, options=dict(search_epochs=1, retrain_epochs=1, retrain_top=2,
                                                                   cells=3, search_cells=2))
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 2


def test_dass_on_sparse_mbv2_logs_an_argmax_architecture(tmp_path):
    storage = f"sqlite:///{tmp_path}/m.db"
    study = sparsenas.search(space="sparse_mbv2", strategy="dass", dataset="synthetic", storage=storage,
                             progress=False, hw_anchor=False, options=dict(search_epochs=1, retrain_epochs=1, retrain_top=1,
                                                          batch_size=120, target_sparsity=0.8))
    (trial,) = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    arch = Arch.from_json(trial.user_attrs["arch"])
    get_space("sparse_mbv2").validate(arch, TASK8)
    assert {arch.choices[f"s{s}b1_sparsity"] for s in range(1, 6)} <= {0.0, 0.8}
    assert len(trial.user_attrs["alpha_history"][0]["blocks"]) == 5  # one row per mixed block
    assert trial.user_attrs["derivation"] == "argmax"


def test_random_search_can_pin_choices_to_compare_at_the_target_sparsity(tmp_path):
    storage = f"sqlite:///{tmp_path}/r.db"
    study = sparsenas.search(space="sparse_darts", strategy="random", dataset="synthetic", storage=storage,
                             trials=1, epochs=1, progress=False, hw_anchor=False,
                             options={"fixed": {"sparsity": 0.7, "cells": 3}})
    (trial,) = study.trials
    assert trial.params["sparsity"] == 0.7 and trial.params["cells"] == 3
    with pytest.raises(SparseNASError, match="cannot fix choice"):
        sparsenas.search(space="sparse_darts", strategy="random", dataset="synthetic", storage=storage, study="bad",
                         trials=1, epochs=1, progress=False, options={"fixed": {"sparsity": 0.33}})


def test_benchmark_hypervolume_matches_optunas_reference_implementation():
    import importlib.util
    from pathlib import Path

    import numpy as np
    from optuna._hypervolume import compute_hypervolume  # private: used only to check ours

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "dass_vs_random.py"
    spec = importlib.util.spec_from_file_location("dass_vs_random", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(0)
    for _ in range(5):
        pts = [(float(a), float(l)) for a, l in zip(rng.uniform(0.5, 1.0, 12), rng.uniform(1.0, 10.0, 12))]
        ref = (0.4, 11.0)
        expected = compute_hypervolume(np.array([(-a, l) for a, l in pts]), np.array([-ref[0], ref[1]]))
        assert bench.hypervolume_2d(pts, ref) == pytest.approx(expected)
    assert bench.hypervolume_2d([(0.9, 2.0)], (0.0, 4.0)) == pytest.approx(0.9 * 2.0)
    assert bench.hypervolume_2d([(0.9, 5.0)], (0.0, 4.0)) == 0.0  # outside the reference box


def test_derive_candidates_fills_up_with_samples_of_alpha_once_single_flips_run_out():
    task = Task("digits", (1, 8, 8), 10)
    space = get_space("sparse_mbv2")
    net = build_mixed_supernet(space, task, target_sparsity=0.8)
    with torch.no_grad():  # one architecture far more likely than every other
        for a in net.alpha.values():
            a.zero_()
            a[:, 0] = 3.0
    found = net.derive_candidates(30)
    labels = [label for label, _ in found]
    assert labels[0] == "argmax" and any(l.startswith("runner-up") for l in labels)
    sampled = [a for label, a in found if label.startswith("sampled")]
    assert len(found) == 30 and len({a for _, a in found}) == 30 and sampled
    for arch in sampled:
        space.validate(arch, task)
    # samples follow softmax(alpha): most of their choices are the argmax's
    best = found[0][1].choices
    same = [sum(a.choices[k] == v for k, v in best.items()) / len(best) for a in sampled]
    assert sum(same) / len(same) > 0.6, same
    assert [a for _, a in net.derive_candidates(30)] == [a for _, a in found]  # seeded: a resumed run draws the same
