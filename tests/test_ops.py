"""Sparse ops: masks, schedule, masked layers, layer specs, inference kernels, timing."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsenas.errors import SparseNASError, UnknownName
from sparsenas.ops import (
    KERNELS, CsrConv1x1Kernel, CubicSparsitySchedule, DenseConv2dKernel, GradualPruner, InvalidSparsity,
    LayerSpec, SparseConv2d, SparseLinear, TopKStraightThrough, apply_sparsity, kernel_choices,
    magnitude_mask, measured_choice, nm_mask, score_mask, sparse_modules, to_inference, trace_layers,
)
from sparsenas.timing import Timing, time_callable, time_interleaved

IMPLS = list(KERNELS)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # One thread: on a loaded 2-core machine, 2 OpenMP threads make tiny convs ~100x slower.
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- masks
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.95])
def test_magnitude_mask_exact_sparsity_and_smallest_pruned(sparsity: float) -> None:
    w = torch.randn(37, 23)
    mask = magnitude_mask(w, sparsity)
    zeros = int((mask == 0).sum())
    assert zeros == round(sparsity * w.numel())
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and mask.shape == w.shape
    if 0 < zeros < w.numel():
        assert w.abs()[mask == 0].max() <= w.abs()[mask == 1].min()


def test_magnitude_mask_ties_deterministic() -> None:
    w = torch.ones(4, 5)
    mask = magnitude_mask(w, 0.3)
    assert mask.flatten()[:6].sum() == 0 and mask.flatten()[6:].sum() == 14  # lowest indices first
    assert torch.equal(mask, magnitude_mask(w.clone(), 0.3))


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan")])
def test_bad_sparsity_rejected(bad: float) -> None:
    with pytest.raises(InvalidSparsity, match="sparsity"):
        magnitude_mask(torch.randn(3, 3), bad)
    with pytest.raises(ValueError):  # InvalidSparsity is also a ValueError
        SparseLinear(4, 4, sparsity=bad)


def test_nm_mask_two_of_four() -> None:
    w = torch.randn(8, 3, 2, 2)  # rows of 12 = 3 groups of 4
    mask = nm_mask(w, 2, 4)
    groups = mask.reshape(8, -1, 4)
    assert torch.all(groups.sum(-1) == 2)
    wa = w.abs().reshape(8, -1, 4)
    kept_min = torch.where(groups == 1, wa, torch.inf).amin(-1)
    pruned_max = torch.where(groups == 0, wa, -torch.inf).amax(-1)
    assert torch.all(kept_min >= pruned_max)
    with pytest.raises(InvalidSparsity, match="divisible by 4"):
        nm_mask(torch.randn(4, 6), 2, 4)
    with pytest.raises(InvalidSparsity, match="1 <= n <= m"):
        nm_mask(torch.randn(4, 8), 5, 4)


def test_nm_layer_sparsity_fixed_and_validated() -> None:
    layer = SparseConv2d(8, 4, 1, mask_kind="nm")
    assert layer.sparsity == 0.5 and layer.nnz() == layer.weight.numel() // 2
    assert torch.all(layer.mask.reshape(4, -1, 4).sum(-1) == 2)
    with pytest.raises(InvalidSparsity, match="1 - n/m"):
        SparseLinear(8, 4, mask_kind="nm", sparsity=0.9)
    with pytest.raises(InvalidSparsity, match="divisible by 4"):
        SparseConv2d(2, 4, 3, mask_kind="nm")  # rows of 2*3*3 = 18
    with pytest.raises(InvalidSparsity, match="mask_kind"):
        SparseLinear(8, 4, mask_kind="block")
    with pytest.raises(InvalidSparsity, match="fixed sparsity"):
        layer.set_sparsity(0.7)


def test_topk_straight_through_passes_gradient() -> None:
    scores = torch.randn(6, 5, requires_grad=True)
    mask = TopKStraightThrough.apply(scores, 0.6)
    assert torch.equal(mask, magnitude_mask(scores, 0.6))
    upstream = torch.randn(6, 5)
    (mask * upstream).sum().backward()
    assert torch.equal(scores.grad, upstream)


def test_score_layer_hard_topk_forward_and_score_gradients() -> None:
    layer = SparseLinear(16, 8, mask_kind="score", sparsity=0.75)
    assert layer.score is not None and layer.score.shape == layer.weight.shape
    x = torch.randn(5, 16)
    out = layer(x)
    expected_mask = magnitude_mask(layer.score, 0.75)
    assert torch.equal(layer.mask, expected_mask) and int((layer.mask == 0).sum()) == 96
    torch.testing.assert_close(out, F.linear(x, layer.weight * expected_mask, layer.bias))
    out.square().sum().backward()
    g_eff = torch.autograd.functional.vjp(  # dL/dW_eff, to check both chain rules by hand
        lambda w: F.linear(x, w, layer.bias).square().sum(), (layer.weight * expected_mask).detach()
    )[1]
    torch.testing.assert_close(layer.score.grad, g_eff * layer.weight.detach())  # straight-through
    torch.testing.assert_close(layer.weight.grad, g_eff * expected_mask)
    assert layer.score.grad[expected_mask == 0].abs().sum() > 0  # pruned scores still learn
    # training the scores changes the mask
    with torch.no_grad():
        layer.score[expected_mask == 0] += 10.0
    layer(x)
    assert not torch.equal(layer.mask, expected_mask)
    assert torch.equal(score_mask(layer.score, 0.75), layer.mask)


# ---------------------------------------------------------------- schedule and pruning
def test_cubic_schedule() -> None:
    s = CubicSparsitySchedule(final=0.9, start_step=10, end_step=110, initial=0.1)
    assert s.at(0) == pytest.approx(0.1) and s.at(10) == pytest.approx(0.1)
    assert s.at(110) == s.at(500) == 0.9
    assert s.at(60) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5**3)
    values = [s.at(t) for t in range(0, 130)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    stepped = CubicSparsitySchedule(1.0, 0, 100, frequency=10)
    assert stepped.at(19) == stepped.at(10) < stepped.at(20)
    with pytest.raises(InvalidSparsity):
        CubicSparsitySchedule(0.9, 10, 5)


def test_gradual_pruner_reaches_each_target_monotonically() -> None:
    model = nn.Sequential(SparseConv2d(8, 16, 1, sparsity=0.9), nn.ReLU(), SparseConv2d(16, 8, 1, mask_kind="nm"),
                          nn.Flatten(), SparseLinear(8 * 4, 4, sparsity=0.5))
    first, _, nm, _, last = model
    assert [m.target_sparsity for m in sparse_modules(model)] == [0.9, 0.5, 0.5]
    nm_mask_before = nm.mask.clone()
    pruner = GradualPruner(model, CubicSparsitySchedule(1.0, start_step=0, end_step=10))
    pruner.step(0)
    assert first.sparsity == 0.0 and int(first.mask.sum()) == first.weight.numel()
    prev = first.mask.clone()
    for step in range(1, 13):
        model(torch.randn(2, 8, 2, 2)).square().mean().backward()  # weights move between mask updates
        with torch.no_grad():  # plain SGD (torch.optim's first use costs ~1 s of imports)
            for p in model.parameters():
                p -= 0.01 * p.grad
                p.grad = None
        pruner.step(step)
        assert torch.all(first.mask <= prev)  # pruned weights stay pruned
        prev = first.mask.clone()
    assert first.sparsity == pytest.approx(0.9) and last.sparsity == pytest.approx(0.5)
    assert first.weight.numel() - first.nnz() == round(0.9 * first.weight.numel())
    assert last.density == pytest.approx(0.5)
    assert torch.equal(nm.mask, nm_mask_before) and nm.sparsity == 0.5
    assert apply_sparsity(model, 0.7) == 2 and first.target_sparsity == 0.7 and nm.sparsity == 0.5


# ---------------------------------------------------------------- kernels
def _linear(cin: int, cout: int, sparsity: float) -> SparseLinear:
    layer = SparseLinear(cin, cout, sparsity=sparsity)
    with torch.no_grad():
        layer.bias.normal_()
    return layer


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cin,cout,sparsity", [(16, 8, 0.0), (96, 24, 0.9), (32, 100, 0.5), (1, 5, 0.0)])
@pytest.mark.parametrize("batch", [1, 4])
def test_linear_kernels_match_masked_op(impl: str, cin: int, cout: int, sparsity: float, batch: int) -> None:
    layer = _linear(cin, cout, sparsity)
    kernel = layer.to_inference(impl)
    assert kernel.impl == impl and kernel.nnz == layer.nnz()
    x = torch.randn(batch, cin)
    with torch.no_grad():
        torch.testing.assert_close(kernel(x), layer(x), atol=1e-5, rtol=1e-5)
        x3 = torch.randn(2, batch, cin)  # leading dims are kept
        torch.testing.assert_close(kernel(x3), layer(x3), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cin,cout,hw,stride,sparsity,bias", [
    (16, 96, 8, 1, 0.9, False), (96, 24, 5, 1, 0.5, True), (24, 24, 7, 2, 0.95, False), (8, 3, 1, 1, 0.0, True),
])
@pytest.mark.parametrize("batch", [1, 4])
def test_conv1x1_kernels_match_masked_op(impl: str, cin: int, cout: int, hw: int, stride: int, sparsity: float,
                                         bias: bool, batch: int) -> None:
    layer = SparseConv2d(cin, cout, 1, stride=stride, bias=bias, sparsity=sparsity)
    kernel = layer.to_inference(impl)
    assert kernel.impl == impl and kernel.nnz == layer.nnz() and str(kernel.nnz) in repr(kernel)
    x = torch.randn(batch, cin, hw, hw)
    with torch.no_grad():
        expected = layer(x)
        out = kernel(x)
        assert out.shape == expected.shape and out.is_contiguous()
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        cl = x.to(memory_format=torch.channels_last)  # non-default layouts are accepted
        torch.testing.assert_close(kernel(cl), expected, atol=1e-5, rtol=1e-5)


def test_csr_kernels_copy_and_state_dict() -> None:
    layer = SparseConv2d(16, 32, 1, sparsity=0.8)
    x = torch.randn(1, 16, 4, 4)
    for impl in ("torch_csr", "scipy_csr"):
        kernel = layer.to_inference(impl)
        with torch.no_grad():
            y = kernel(x)
            torch.testing.assert_close(copy.deepcopy(kernel)(x), y)
        assert set(kernel.state_dict()) == {"crow_indices", "col_indices", "values", "bias"}
        assert kernel.values.numel() == layer.nnz()


def test_threads_guard_for_mkl_csr() -> None:
    kernel = SparseLinear(32, 16, sparsity=0.9).to_inference("torch_csr")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            kernel(torch.randn(1, 32))
        assert torch.get_num_threads() == 2  # restored after the 1-thread MKL call
    finally:
        torch.set_num_threads(before)


def test_non_pointwise_conv_uses_dense_kernel() -> None:
    layer = SparseConv2d(8, 8, 3, padding=1, groups=2, sparsity=0.5)
    kernel = layer.to_inference()
    assert isinstance(kernel, DenseConv2dKernel) and kernel.impl == "dense"
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(kernel(x), layer(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(SparseNASError, match="1x1 conv"):
        layer.to_inference("torch_csr")
    with pytest.raises(UnknownName, match="torch_csr"):
        layer.to_inference("bsr")


# ---------------------------------------------------------------- specs and to_inference
def _small_model() -> nn.Sequential:
    model = nn.Sequential(
        SparseConv2d(3, 16, 1, bias=False, sparsity=0.9), nn.BatchNorm2d(16), nn.ReLU(),
        SparseConv2d(16, 16, 3, stride=2, padding=1, groups=16, bias=False, sparsity=0.5), nn.ReLU(),
        SparseConv2d(16, 24, 1, bias=False, sparsity=0.8), nn.BatchNorm2d(24), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), SparseLinear(24, 10, sparsity=0.7),
    )
    model.train()
    model(torch.randn(8, 3, 8, 8))  # non-trivial BN statistics
    return model


def test_trace_layers_specs() -> None:
    model = _small_model()
    specs = trace_layers(model, (3, 8, 8), batch=2)
    assert [s.key() for s in specs] == [
        "conv2d:c3-16:k1:s1:g1:in8x8:sp0.8958:b2",  # round(0.9 * 48) = 43 zeros
        "conv2d:c16-16:k3:s2:g16:in8x8:sp0.5:b2",
        "conv2d:c16-24:k1:s1:g1:in4x4:sp0.7995:b2",  # 307 of 384
        "linear:c24-10:sp0.7:b2",
    ]
    assert model.training and all(m.training for m in model.modules())  # mode restored
    assert [s.sparse_capable for s in specs] == [True, False, True, True]
    assert specs[1].flops() == 2 * 4 * 4 * 16 * 9 and specs[3].effective_flops() == pytest.approx(2 * 240 * 0.3)
    assert LayerSpec.from_dict(specs[0].to_dict()) == specs[0]
    assert trace_layers(nn.Sequential(nn.Linear(5, 3)), (5,))[0] == LayerSpec("linear", 5, 3)  # dense: sp 0
    with pytest.raises(SparseNASError, match="unknown fields"):
        LayerSpec.from_dict({**specs[0].to_dict(), "padding": 1})


@pytest.mark.parametrize("impl", IMPLS)
def test_to_inference_forced_choice_matches_eval_model(impl: str) -> None:
    model = _small_model()
    seen: list[LayerSpec] = []

    def choose(spec: LayerSpec) -> str:
        seen.append(spec)
        return impl

    inf = to_inference(model, (3, 8, 8), choose=choose)
    assert all(s.sparse_capable for s in seen) and len(seen) == 3  # the depthwise conv is not asked
    assert kernel_choices(inf) == {"0": impl, "3": "dense", "5": impl, "10": impl}
    assert isinstance(model[0], SparseConv2d) and model.training  # original untouched
    assert not inf.training and not sparse_modules(inf)
    if impl == "torch_csr":
        assert isinstance(inf[0], CsrConv1x1Kernel)
    model.eval()
    with torch.no_grad():
        for batch in (1, 4):
            x = torch.randn(batch, 3, 8, 8)
            torch.testing.assert_close(inf(x), model(x), atol=1e-5, rtol=1e-5)
    # the inference model traces to the same specs as the masked model
    assert trace_layers(inf, (3, 8, 8)) == trace_layers(model, (3, 8, 8))


def test_to_inference_default_measured_choice() -> None:
    model = _small_model().eval()
    inf = to_inference(model, (3, 8, 8))
    assert set(kernel_choices(inf).values()) <= set(IMPLS)
    spec = trace_layers(model, (3, 8, 8))[0]
    assert measured_choice(spec) == kernel_choices(inf)["0"]  # cached: same answer, no re-timing
    with torch.no_grad():
        x = torch.randn(1, 3, 8, 8)
        torch.testing.assert_close(inf(x), model(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- timing
def test_timing_restores_threads_and_counts() -> None:
    before = torch.get_num_threads()
    t = time_callable(lambda: sum(range(100)), warmup=2, repeats=7, threads=1)
    assert isinstance(t, Timing) and t.repeats == 7 and t.threads == 1 and t.wall_ms > 0
    assert torch.get_num_threads() == before and set(t.to_dict()) >= {"wall_ms", "cpu_ms", "wall_iqr_ms"}
    calls = {"a": 0, "b": 0}

    def count(name: str):
        return lambda: calls.__setitem__(name, calls[name] + 1)

    res = time_interleaved({"a": count("a"), "b": count("b")}, warmup=1, repeats=10, rounds=3)
    assert list(res) == ["a", "b"] and all(r.repeats == 10 for r in res.values())
    assert calls == {"a": 1 + 10 + 3, "b": 1 + 10 + 3}  # warm-up, timed calls, one re-warm per round
