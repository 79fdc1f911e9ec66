"""sparse_mbv2's connectivity choice (conn: magnitude | g2g | block | magnitude_oc4) for its sparse 1x1 convs,
version 4."""
import json
import random

import optuna
import pytest
import torch

import sparsenas
from sparsenas.arch import Arch
from sparsenas.errors import SparseNASError
from sparsenas.hwprofiles import LatencyTable
from sparsenas.ops import G2GConv2d, SparseConv2d, g2g_plan, sparse_modules, to_inference
from sparsenas.search_spaces import get_space
from sparsenas.search_spaces.sparse_mbv2 import CONNS, SPARSITIES, block_keys
from sparsenas.supernets.entangled import EntangledMBV2
from sparsenas.supernets.mixed import build_mixed_supernet
from sparsenas.task import Task
from sparsenas.tracking import arch_of

TASK16 = Task("digits", (1, 16, 16), 10)
TASK8 = Task("synthetic", (1, 8, 8), 4)


@pytest.fixture(scope="module")
def space():
    return get_space("sparse_mbv2")


@pytest.fixture(scope="module")
def table():
    return LatencyTable.load(runtime="torch")  # torch's shipped profile (digits 16x16 calibration)


def all_g2g(arch: Arch, **changes) -> Arch:
    return arch.replace(**{k: "g2g" for k in arch.choices if k.endswith("_conn")}, **changes)


def g2g_archs(space, task, n, seed):
    rng = random.Random(seed)
    return [all_g2g(space.sample(rng, task)) for _ in range(n)]


def test_g2g_block_masks_have_the_target_density_and_dense_ensembles(space):
    arch = all_g2g(space.default_arch(TASK16), s3b1_sparsity=0.8, s4b2_sparsity=0.9, s4b3_sparsity=0.9,
                   head_sparsity=0.95)
    model = space.build(arch, TASK16)
    g2g = [m for m in model.modules() if isinstance(m, G2GConv2d)]
    assert len(g2g) == 7 and not any(isinstance(m, SparseConv2d) for m in model.modules())
    for m, sparsity in zip(g2g, [0.8, 0.8, 0.9, 0.9, 0.9, 0.9, 0.95]):  # expand, project of 3 blocks; the head
        assert m.nnz() == round((1 - sparsity) * m.weight.numel()) and abs(m.density - (1 - sparsity)) < 0.01
        intra = m.out_group[:, None] == m.in_group[None, :]
        assert bool(m.mask[..., 0, 0][intra].bool().all())  # every pair inside an ensemble is connected
        assert m.ensembles > 1 and 1 / m.ensembles <= 1 - sparsity
    # the mixer: expand convs group channels by index, project convs interleave them
    assert [m.grouping for m in g2g] == ["index", "interleaved"] * 3 + ["index"]
    # s4b2 and s4b3 have the same shapes; their masks are seeded by the block's name, so they differ
    assert g2g[2].mask.shape == g2g[4].mask.shape and not torch.equal(g2g[2].mask, g2g[4].mask)
    # conn is ignored where the sparsity is 0: a dense conv
    assert isinstance(model.blocks[0].body[0], torch.nn.Conv2d) and not isinstance(model.blocks[0].body[0], G2GConv2d)


def test_g2g_plan_hits_the_density_or_keeps_only_the_dense_ensembles():
    missed = []
    for n_in, n_out in [(24, 144), (144, 32), (96, 320), (12, 20)]:
        for s in SPARSITIES[1:]:
            ensembles, p_inter = g2g_plan(n_in, n_out, 1 - s, "interleaved")
            m = G2GConv2d(n_in, n_out, ensembles=ensembles, p_inter=p_inter, grouping="interleaved")
            intra = int((m.out_group[:, None] == m.in_group[None, :]).sum())
            if m.nnz() != round((1 - s) * n_in * n_out):
                # too few channels for dense ensembles at this density: only the ensembles are kept
                missed.append((n_in, n_out, s))
                assert p_inter == 0 and m.nnz() == intra and m.ensembles == min(n_in, n_out) and m.density > 1 - s
    assert missed == [(12, 20, 0.95)]  # 12 ensembles at most: density >= 1/12
    # 8 channels at 95% sparsity: 8 ensembles of single channels on one side, density 1/8
    assert g2g_plan(8, 48, 0.05, "index") == (8, 0.0)
    with pytest.raises(SparseNASError, match="density"):
        g2g_plan(8, 8, 0.0)


def test_version_1_archs_upgrade_to_magnitude_and_build(space):
    v4 = space.default_arch(TASK16).replace(s2b1_sparsity=0.9)
    v1 = Arch("sparse_mbv2", 1, {k: v for k, v in v4.choices.items() if not k.endswith("_conn")})
    assert space.version == 4 and space.upgrade(v1) == v4 and space.validate(v1, TASK16) == v4
    for old in (2, 3):  # versions 2 and 3 lacked "block" / "magnitude_oc4": their archs are v4 archs as they are
        assert space.upgrade(Arch("sparse_mbv2", old, dict(v4.choices))) == v4
    model = space.build(v1, TASK16)
    assert sum(isinstance(m, SparseConv2d) for m in model.modules()) == 2
    assert model(torch.randn(1, 1, 16, 16)).shape == (1, 10)
    # an arch.json written by version 1 still builds
    old = Arch.from_json(v1.to_json())
    assert old.version == 1 and space.build(old, TASK16)(torch.randn(1, 1, 16, 16)).shape == (1, 10)
    # other versions (and a v1 arch with a conn key it never had) are still refused clearly
    with pytest.raises(SparseNASError, match="version 5"):
        space.validate(Arch("sparse_mbv2", 5, dict(v4.choices)), TASK16)
    with pytest.raises(SparseNASError, match="conn"):
        space.validate(v1.replace(s1b1_conn="dense"), TASK16)


def test_choices_list_conn_beside_every_sparsity(space):
    ch = space.choices(TASK16)
    assert [k for k in ch if k.endswith("_conn")] == [f"s{s}b{b}_conn" for s, b in block_keys()] + ["head_conn"]
    assert all(ch[k] == CONNS == ["magnitude", "g2g", "block", "magnitude_oc4"] for k in ch if k.endswith("_conn"))


def test_kernel_specs_and_the_shipped_profile_cover_g2g_networks(space, table):
    specs = space.kernel_specs(TASK16)
    # s1b1 projects 48 channels to 8 at 95%: only 8 dense ensembles fit, density 1/8 (snapped to 0.9)
    small = all_g2g(space.default_arch(TASK16), s1_width=0.5, s1b1_expand=3, s1b1_sparsity=0.95)
    off_level = []
    for arch in g2g_archs(space, TASK16, 8, seed=3) + [small]:
        layers = space.layers(arch, TASK16)
        snapped = [table.snap(l) for l in layers]
        assert set(snapped) <= specs, set(snapped) - specs
        off_level += [(l.sparsity, s.sparsity) for l, s in zip(layers, snapped) if abs(l.sparsity - s.sparsity) > 0.01]
        pred = table.predict(layers, "sparse_mbv2", TASK16.input_shape)
        assert pred.ms > 0 and len(pred.kernels) == len(layers)
    assert (0.875, 0.9) in off_level


def test_to_inference_runs_g2g_layers_with_the_same_outputs(space, table):
    arch = g2g_archs(space, TASK16, 1, seed=5)[0].replace(s4b1_sparsity=0.9, s5b1_sparsity=0.95, head_sparsity=0.8)
    torch.manual_seed(0)
    model = space.build(arch, TASK16).eval()
    assert any(isinstance(m, G2GConv2d) for m in model.modules())
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        eager = model(x)
        for choose in (table.choose, lambda spec: "torch_csr", lambda spec: "dense"):
            fast = to_inference(model, TASK16.input_shape, choose=choose)
            torch.testing.assert_close(fast(x), eager, atol=1e-5, rtol=1e-5)


def test_entangled_child_with_g2g_equals_the_extracted_child(space):
    torch.manual_seed(0)
    net = EntangledMBV2(space, TASK8)
    rng = random.Random(2)
    x = torch.randn(3, *TASK8.input_shape)
    for level in (0.7, 0.95):
        arch = all_g2g(space.sample(rng, TASK8), **{k: level for k in space.choices(TASK8) if k.endswith("sparsity")})
        child = net.extract(arch)
        for mode in ("train", "eval"):  # training mode caches the mask; it is the same structural mask
            getattr(net.set_arch(arch), mode)()
            getattr(child, mode)()
            with torch.no_grad():
                torch.testing.assert_close(net(x), child(x), rtol=1e-5, atol=1e-6)
        assert all(m.mask_kind == "g2g" for m in sparse_modules(child))


def test_dass_supernet_offers_g2g_candidates_and_derives_them(space):
    net = build_mixed_supernet(space, TASK8, target_sparsity=0.8)
    names = net.candidate_names["blocks"]
    assert names[-3:] == ["k3_g2g0.8", "k5_g2g0.8", "k7_g2g0.8"] and net.candidate_names["head"] == [
        "dense", "sparse0.8", "g2g0.8"]
    g2g = [m for m in sparse_modules(net) if m.mask_kind == "g2g"]
    before = [m.mask.clone() for m in g2g]
    net.set_masked(False)  # dense warm-up: score masks open, G2G masks are the op and stay
    assert all(torch.equal(m.mask, b) and abs(m.sparsity - 0.8) < 0.01 for m, b in zip(g2g, before))
    assert all(m.sparsity == 0.0 for m in sparse_modules(net) if m.mask_kind == "score")
    with torch.no_grad():
        net.alpha["blocks"].fill_(0.0)
        net.alpha["blocks"][1, names.index("k5_g2g0.8")] = 1.0
        net.alpha["blocks"][2, names.index("k3_sparse0.8")] = 1.0
        net.alpha["head"][0, 2] = 1.0
    arch = net.derive()
    assert (arch["s2b1_kernel"], arch["s2b1_sparsity"], arch["s2b1_conn"]) == (5, 0.8, "g2g")
    assert (arch["s3b1_sparsity"], arch["s3b1_conn"]) == (0.8, "magnitude")
    assert (arch["head_sparsity"], arch["head_conn"]) == (0.8, "g2g")
    assert space.build(arch, TASK8)(torch.randn(1, 1, 8, 8)).shape == (1, 4)
    only = build_mixed_supernet(space, TASK8, target_sparsity=0.8, conns=["magnitude"])
    assert not any("g2g" in n for n in only.candidate_names["blocks"])
    with pytest.raises(SparseNASError, match="conn"):
        build_mixed_supernet(space, TASK8, conns=["hebbian"])


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_optuna_searches_sample_conn_unchanged(storage_url, strategy, space):
    study = sparsenas.search(space="sparse_mbv2", strategy=strategy, dataset="synthetic", trials=2, epochs=1,
                             batch_size=32, limit=64, storage=storage_url, study=strategy, seed=4, progress=False,
                             options={"fixed": {"s2b1_sparsity": 0.8, "s2b1_conn": "g2g", "s1_depth": 1}})
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2
    assert study.user_attrs["space_version"] == 4
    conns = set()
    for t in trials:
        assert all(t.params[f"s{s}b{b}_conn"] in CONNS for s, b in block_keys()) and t.params["head_conn"] in CONNS
        conns |= {v for k, v in t.params.items() if k.endswith("_conn")}
        arch = arch_of(t)
        assert arch.version == 4 and json.loads(arch.to_json())["choices"]["s2b1_conn"] == "g2g"
        model = space.build(arch, study_task(study))
        assert isinstance(model.blocks[1].body[-2], G2GConv2d)  # s2b1's project conv
    assert conns <= set(CONNS) and "g2g" in conns


def study_task(study):
    return Task.from_dict(study.user_attrs["task"])


def test_inspect_shows_each_layers_mask_and_upgrades_version_1_files(space, tmp_path, capsys):
    from sparsenas.cli import main

    g2g = all_g2g(space.default_arch(TASK16), s3b1_sparsity=0.8)
    v1 = Arch("sparse_mbv2", 1, {k: v for k, v in g2g.choices.items() if not k.endswith("_conn")})
    for arch, kind in ((g2g, "g2g"), (v1, "magnitude")):
        path = tmp_path / f"{kind}.json"
        path.write_text(arch.to_json())
        assert main(["inspect", str(path), "--input-size", "16", "--json"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["arch"]["version"] == 4 and out["arch"]["choices"]["s3b1_conn"] == kind
        assert [l["mask"] for l in out["layers"] if l["sparsity"] > 0] == [kind, kind]
        assert {l["mask"] for l in out["layers"] if l["sparsity"] == 0} == {"-"}


def test_g2g_network_exports_and_loads_back(space, tmp_path):
    from sparsenas.export import load, write_export

    arch = all_g2g(space.default_arch(TASK8), s2b1_sparsity=0.9, head_sparsity=0.7)
    torch.manual_seed(1)
    model = space.build(arch, TASK8).eval()
    write_export(model, arch, TASK8, tmp_path / "g2g", formats="json,pt,torchscript")
    back = load(tmp_path / "g2g")
    x = torch.randn(2, *TASK8.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))
        torch.testing.assert_close(load(tmp_path / "g2g", plain=True)(x), model(x), atol=1e-5, rtol=1e-5)
    assert [m.mask_kind for m in sparse_modules(back)] == ["g2g"] * 3


def test_block_conn_is_a_grouped_conv_the_profile_covers_and_the_export_lowers(space, tmp_path):
    """conn "block": a block-diagonal G2G 1x1 conv (sparsity 1 - 1/G), enumerated for the profile,
    and run as a grouped conv (with channel gathers for the interleaved project conv) with the same
    outputs as the masked network."""
    from sparsenas.ops import to_inference, trace_named_layers
    from sparsenas.ops.plain import GroupedPointwise, to_plain
    from sparsenas.search_spaces.sparse_mbv2 import block_plan

    arch = space.default_arch(TASK16).replace(s2b1_sparsity=0.8, s2b1_conn="block", head_sparsity=0.9,
                                              head_conn="block")
    torch.manual_seed(0)
    model = space.build(arch, TASK16).eval()
    named = dict(trace_named_layers(model, TASK16.input_shape))
    exp, proj, head = named["blocks.2.body.0"], named["blocks.2.body.6"], named["head.0"]
    assert exp.blocks == block_plan(exp.cin, exp.cout, 0.2) == 4 and not exp.permuted
    assert proj.blocks == 4 and proj.permuted and proj.sparsity == 0.75
    assert head.blocks == 8 and head.sparsity == 0.875
    keys = {s.key() for s in space.kernel_specs(TASK16)}
    assert {exp.key(), proj.key(), head.key()} <= keys
    grouped = lambda spec: "grouped" if spec.blocks else "dense"  # noqa: E731
    x = torch.randn(2, *TASK16.input_shape)
    with torch.no_grad():
        ref = model(x)
        for net in (to_inference(model, TASK16.input_shape, choose=grouped), to_plain(model, TASK16.input_shape, grouped)):
            assert sum(isinstance(m, GroupedPointwise) for m in net.modules()) == 3
            torch.testing.assert_close(net(x), ref, rtol=1e-4, atol=1e-5)
