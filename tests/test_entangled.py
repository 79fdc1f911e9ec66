import random

import pytest
import torch
import torch.nn.functional as F

from sparsenas.errors import SparseNASError
from sparsenas.ops import G2GConv2d, SparseConv2d, magnitude_mask
from sparsenas.ops.masks import block_magnitude_mask
from sparsenas.search_spaces import get_space
from sparsenas.search_spaces._mbv2_modules import EXPAND_GROUPING, PROJECT_GROUPING, g2g_seed, pointwise
from sparsenas.search_spaces.sparse_mbv2 import EXPANSIONS, KERNELS, SPARSITIES
from sparsenas.supernets.entangled import EntangledMBV2, centre, entangled_supernet
from sparsenas.task import Task
from sparsenas.tracking import trial_record

from _exported import assert_best_export_reproduces

TASK = Task("synthetic", (1, 8, 8), 4)


@pytest.fixture(scope="module")
def space():
    return get_space("sparse_mbv2")


def _randomised(space, seed=0):
    """A supernet with random alphas and random BatchNorm statistics (so equalities are not trivial)."""
    torch.manual_seed(seed)
    net = EntangledMBV2(space, TASK)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net


def test_child_slice_in_supernet_equals_extracted_child(space):
    net = _randomised(space)
    x = torch.randn(3, *TASK.input_shape)
    rng = random.Random(1)
    archs = [net.extreme(True), net.extreme(False)] + [net.sample(rng) for _ in range(4)]
    # the supernet never samples a block-diagonal layer (searched standalone), and does sample 4-channel blocks
    assert all(v != "block" for a in archs for v in a.choices.values())
    assert any(v == "magnitude_oc4" for a in archs for v in a.choices.values())
    every_sparse = {k: 0.9 for k in archs[-1].choices if k.endswith("_sparsity")}
    for conn in ("g2g", "magnitude_oc4"):
        archs.append(archs[-1].replace(**{k: conn for k in archs[-1].choices if k.endswith("_conn")}, **every_sparse))
    for arch in archs:
        net.set_arch(arch).eval()
        inside = net(x)
        child = net.extract(arch)  # no calibration: the supernet's own BN statistics
        standalone = child.eval()(x)
        assert inside.abs().max() > 1e-3
        torch.testing.assert_close(inside, standalone, rtol=1e-5, atol=1e-6)
    assert len({net.set_arch(a)(x).sum().item() for a in archs}) == len(archs)  # children differ


def _pad(t, shape):
    out = torch.zeros(shape, dtype=t.dtype)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


def _pad_kernel(w, kmax=7):
    s = (kmax - w.shape[-1]) // 2
    return F.pad(w, (s, s, s, s))


def _g2g_mask(n_in, n_out, sparsity, grouping, seed):
    """The mask of the standalone network's G2G 1x1 conv of that shape and seed (ones when dense)."""
    conv = pointwise(n_in, n_out, sparsity, "g2g", grouping, seed)
    return conv.mask.double() if sparsity > 0 else torch.ones(n_out, n_in, 1, 1, dtype=torch.double)


def _soft_masked(core, p_s, p_conn, grouping, seed):
    """core * (p_magnitude * sum_s p_s magnitude_mask_s + p_g2g * sum_s p_s g2g_mask_s
    + p_oc4 * sum_s p_s block_magnitude_mask_s): every candidate's own mask."""
    magnitude = sum(p * magnitude_mask(core, s) for p, s in zip(p_s, SPARSITIES))
    g2g = sum(p * _g2g_mask(core.shape[1], core.shape[0], s, grouping, seed) for p, s in zip(p_s, SPARSITIES))
    oc4 = sum(p * block_magnitude_mask(core, s) for p, s in zip(p_s, SPARSITIES))
    return core * (p_conn[0] * magnitude + p_conn[1] * g2g + p_conn[2] * oc4)


def test_mixed_weight_is_alpha_weighted_sum_of_padded_slices(space):
    net = _randomised(space, seed=3)
    with torch.no_grad():  # every connectivity takes a real share
        for key in ("s1b1", "s3b1", "s4b2"):
            net.alphas[f"{key}_conn"].copy_(torch.tensor([0.3, -0.2, 0.1]))
    p = {k: v.detach().double() for k, v in net.probs().items()}
    mixes = net.stage_mixes(p)
    for key in ("s1b1", "s3b1", "s4b2"):  # stem input; width change; inside a stage
        blk = net.blocks[key].double()
        mix = mixes[key]
        got = blk.mixed_weights(mix)
        W_exp, W_dw, W_proj = blk.w_exp.detach(), blk.w_dw.detach(), blk.w_proj.detach()
        H, Ci, Co = blk.hidden_max, blk.cin_max, blk.cout_max
        exp_core = torch.zeros_like(W_exp)
        exp_ident = torch.zeros_like(W_exp)
        dw = torch.zeros_like(W_dw)
        proj_core = torch.zeros_like(W_proj)
        for i, ci in enumerate(blk.in_sizes):
            for j, e in enumerate(EXPANSIONS):
                pe = mix.p_in[i] * mix.p_expand[j]
                if e == 1:  # no expand conv: the identity on the first ci channels
                    exp_ident += pe * _pad(torch.eye(ci)[:, :, None, None].double(), W_exp.shape)
                else:
                    exp_core += pe * _pad(W_exp[:ci * e, :ci], W_exp.shape)
                for l, k in enumerate(KERNELS):
                    dw += pe * mix.p_kernel[l] * _pad(_pad_kernel(centre(W_dw[:ci * e], k)), W_dw.shape)
                for w, co in enumerate(blk.out_sizes):
                    proj_core += pe * mix.p_out[w] * _pad(W_proj[:co, :ci * e], W_proj.shape)
        assert all(0.05 < p < 0.95 for p in mix.p_conn)  # every connectivity takes part
        torch.testing.assert_close(got["exp"], _soft_masked(exp_core, mix.p_sparsity, mix.p_conn, EXPAND_GROUPING,
                                                            g2g_seed(f"{key}.exp")) + exp_ident)
        torch.testing.assert_close(got["dw"], dw)
        torch.testing.assert_close(got["proj"], _soft_masked(proj_core, mix.p_sparsity, mix.p_conn,
                                                             PROJECT_GROUPING, g2g_seed(f"{key}.proj")))
        assert got["exp"].shape == (H, Ci, 1, 1) and got["proj"].shape == (Co, H, 1, 1)


def test_gradient_mode_runs_one_conv_per_layer_and_trains_alphas(space):
    net = _randomised(space, seed=4).set_mixed().train()
    x, y = torch.randn(4, *TASK.input_shape), torch.tensor([0, 1, 2, 3])
    calls = []
    orig = F.conv2d
    try:
        F.conv2d = lambda *a, **k: calls.append(1) or orig(*a, **k)
        loss = F.cross_entropy(net(x), y)
    finally:
        F.conv2d = orig
    loss.backward()
    n_blocks = len(net.blocks)
    assert len(calls) == 3 * n_blocks + 2  # stem; expand, depthwise, project per block; head
    for name in ("s2b1_kernel", "s3_depth", "s4_width", "head_sparsity", "s5b3_sparsity", "s1b1_expand",
                 "s3b2_conn", "head_conn"):
        g = net.alphas[name].grad
        assert g is not None and g.abs().sum() > 0, name
    for name in ("s3b2_conn", "head_conn"):  # magnitude, g2g and magnitude_oc4 each get a gradient
        assert len(net.alphas[name]) == 3 and (net.alphas[name].grad != 0).all(), name
    # derive() is the per-decision argmax
    with torch.no_grad():
        for k, a in net.alphas.items():
            a.zero_()
            a[-1] = 1.0  # the last choice: magnitude_oc4 for a conn
        net.alphas["head_conn"][1] = 2.0  # g2g
    assert net.choices["s2b1_conn"] == ["magnitude", "g2g", "magnitude_oc4"]
    arch = net.derive()
    space.validate(arch, TASK)
    assert arch["s2b1_kernel"] == 7 and arch["s3_depth"] == 3 and arch["head_sparsity"] == 0.95
    assert arch["s2b1_conn"] == arch["s3b2_conn"] == "magnitude_oc4" and arch["head_conn"] == "g2g"
    assert arch["downsample"] == net.downsample


@pytest.mark.parametrize("conn", ["magnitude", "g2g", "magnitude_oc4"])
def test_extract_round_trip_and_bn_recalibration(space, conn):
    net = _randomised(space, seed=5)
    arch = space.sample(random.Random(7), TASK).replace(s1b1_sparsity=0.8, s1b1_expand=3, s1_depth=1,
                                                        s1b1_conn=conn)
    batches = [torch.randn(8, *TASK.input_shape) for _ in range(3)]
    child = net.extract(arch, calibration=batches)
    # the state dict loads strictly into the space's own network for arch, which then computes the same
    fresh = space.build(arch, TASK)
    fresh.load_state_dict(child.state_dict(), strict=True)
    x = torch.randn(2, *TASK.input_shape)
    torch.testing.assert_close(fresh.eval()(x), child(x))
    # the structure is arch's, block by block
    ch, down = arch.choices, set(arch["downsample"].split("+"))
    expected = [(ch[f"s{s}b{b}_expand"], ch[f"s{s}b{b}_kernel"], ch[f"s{s}b{b}_sparsity"],
                 2 if b == 1 and f"s{s}" in down else 1) for s in range(1, 6) for b in range(1, ch[f"s{s}_depth"] + 1)]
    assert [(b.expand, b.kernel, b.sparsity, b.stride) for b in child.blocks] == expected
    # sparse 1x1 convs carry the magnitude mask of the inherited slice, or their own G2G mask
    expand = child.blocks[0].body[0]
    torch.testing.assert_close(expand.weight, net.blocks["s1b1"].w_exp[:16 * 3, :16].detach())
    if conn != "g2g":
        assert isinstance(expand, SparseConv2d)
        prune = magnitude_mask if conn == "magnitude" else block_magnitude_mask
        torch.testing.assert_close(expand.mask, prune(expand.weight, 0.8))
    else:
        assert isinstance(expand, G2GConv2d)
        torch.testing.assert_close(expand.mask, space.build(arch, TASK).blocks[0].body[0].mask)  # a new build's
        assert abs(expand.density - 0.2) < 0.01
    # BatchNorm statistics were re-estimated on the calibration batches (cumulative mean)
    with torch.no_grad():
        stem_out = torch.cat([child.stem[0](b) for b in batches])
    torch.testing.assert_close(child.stem[1].running_mean, stem_out.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(child.stem[1].running_mean, net.stem[1].running_mean)


def test_bad_space_and_placement_are_clear(space):
    with pytest.raises(SparseNASError, match="no weight-entangled supernet"):
        entangled_supernet(type("S", (), {"name": "pooling_resnet20"})(), TASK)
    with pytest.raises(SparseNASError, match="downsample placement"):
        EntangledMBV2(space, TASK, downsample="s1")
    with pytest.raises(SparseNASError, match="mixing"):
        EntangledMBV2(space, TASK, mixing="gumbel")


def test_entangled_search_logs_trials_front_and_kendall_tau(storage_url, tmp_path):
    import optuna

    from sparsenas.api import search
    from sparsenas.tracking import pareto_front

    study = search(space="sparse_mbv2", strategy="entangled", dataset="synthetic", trials=5, limit=32,
                   batch_size=16, storage=storage_url, study="ent", progress=False,
                   options={"search_epochs": 1, "sandwich_epochs": 1, "sandwich_random": 1, "retrain_epochs": 1,
                            "retrain_top": 2, "tau_archs": 3, "calib_batches": 1,
                            "finetune_steps": 2})
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    inherited = [t for t in trials if trial_record(t).stage == "inherited"]
    retrained = [t for t in trials if trial_record(t).stage == "retrained"]
    assert len(inherited) == 5 and len(retrained) == 3  # max(trials, tau_archs + 2) distinct archs
    assert sum(t.user_attrs["derived"] for t in inherited) == 1
    assert all(t.user_attrs["finetune_steps"] == 2 and "inherited_accuracy_raw" in t.user_attrs for t in inherited)
    for t in retrained:
        assert t.values[0] == t.user_attrs["standalone_accuracy"]
        src = study.trials[t.user_attrs["inherited_trial"]]
        assert t.user_attrs["inherited_accuracy"] == src.values[0] and t.params == src.params
    assert study.user_attrs["kendall_tau_n"] == 3 and "kendall_tau" in study.user_attrs
    assert study.user_attrs["entangled_derived_arch"] and pareto_front(study)
    # every logged network was saved with its trial: the best exports without --train, as it scored
    assert_best_export_reproduces(storage_url, "ent", tmp_path / "found")
    with pytest.raises(SparseNASError, match="does not take"):
        search(space="sparse_mbv2", strategy="entangled", dataset="synthetic", storage=storage_url, study="bad",
               progress=False, options={"search_epoch": 1})


def test_fused_masked_mix_has_autograd_gradients():
    """The hand-written backward of the soft-masked 1x1 weight agrees with finite differences, and its
    forward with the plain expression, for weights, slice coefficients and both probability vectors."""
    from sparsenas.search_spaces.sparse_mbv2 import SPARSITIES
    from sparsenas.supernets.entangled import MASK_CODES, masked_mix, soft_conn_mask

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, 1, 1, dtype=torch.double, generator=g).requires_grad_()
    coef = torch.rand(6, 5, dtype=torch.double, generator=g).requires_grad_()
    ps = torch.softmax(torch.randn(len(SPARSITIES), dtype=torch.double, generator=g), 0).requires_grad_()
    pc = torch.softmax(torch.randn(3, dtype=torch.double, generator=g), 0).requires_grad_()
    codes = torch.randint(0, MASK_CODES, (6, 5, 1, 1), generator=g).to(torch.int16)
    plain = w * coef[:, :, None, None] * soft_conn_mask(ps, pc, codes)
    assert torch.allclose(masked_mix(w, coef, ps, pc, codes), plain)
    assert torch.autograd.gradcheck(lambda *a: masked_mix(*a, codes), (w, coef, ps, pc))


def test_mask_codes_hold_magnitude_block_and_g2g_masks_in_int16(space):
    """Gradient mode's per-weight codes decode to each candidate's own mask (magnitude, 4-channel
    block, G2G) at every level, and cost 2 bytes per 1x1 weight (int16, not a gathered float or int64)."""
    from sparsenas.supernets.entangled import G2G_LEVELS, LEVELS, MASK_CODES

    net = _randomised(space, seed=6).set_mixed().train()
    net(torch.randn(2, *TASK.input_shape))
    cached = [t for b in net.blocks.values() for t in b._buckets.values()] + [net._head_buckets]
    weights = sum(b.w_exp.numel() + b.w_proj.numel() for b in net.blocks.values()) + net.w_head.numel()
    assert all(t.dtype == torch.int16 for t in cached)
    assert sum(t.numel() * t.element_size() for t in cached) == 2 * weights
    blk = net.blocks["s3b2"]
    blk.refresh_masks()  # codes of the plain weight (coefficients 1), to compare with each mask function
    codes = blk.codes("proj", blk.w_proj, torch.ones(blk.w_proj.shape[:2]))
    assert codes.dtype == torch.int16 and int(codes.max()) < MASK_CODES
    c = codes.long()
    magnitude, oc4, g2g = c // (LEVELS * 2 ** G2G_LEVELS), c // 2 ** G2G_LEVELS % LEVELS, c % 2 ** G2G_LEVELS
    w = blk.w_proj.detach()
    for i, s in enumerate(SPARSITIES):
        torch.testing.assert_close((magnitude >= i).float(), magnitude_mask(w, s))
        torch.testing.assert_close((oc4 >= i).float(), block_magnitude_mask(w, s))
        if s:
            want = _g2g_mask(w.shape[1], w.shape[0], s, PROJECT_GROUPING, g2g_seed("s3b2.proj")).float()
            torch.testing.assert_close((g2g >> (i - 1) & 1).float(), want)
