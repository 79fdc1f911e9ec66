import random

import pytest
import torch

from sparsenas.data import load_dataset
from sparsenas.errors import SparseNASError
from sparsenas.evaluators import TrainBudget, train
from sparsenas.ops import (
    DSTConfig, G2GConv2d, G2GLinear, InvalidSparsity, group_graph, hebbian_scores, sparse_modules, to_inference,
    trace_layers,
)
from sparsenas.search_spaces import get_space
from sparsenas.task import Task


def _block_structure(layer):
    intra = layer.out_group[:, None] == layer.in_group[None, :]
    return layer.mask.reshape(layer.mask.shape[0], -1).bool(), intra


@pytest.mark.parametrize("graph", ["er", "small_world"])
@pytest.mark.parametrize("grouping", ["index", "random", "interleaved"])
@pytest.mark.parametrize("G,p", [(8, 0.15), (4, 0.05), (16, 0.3)])
def test_density_follows_formula_and_groups_are_dense(graph, grouping, G, p):
    layer = G2GLinear(128, 256, ensembles=G, p_inter=p, graph=graph, grouping=grouping, seed=3)
    expected = 1 / G + (1 - 1 / G) * p
    assert layer.density == pytest.approx(expected, abs=2e-3)
    mask, intra = _block_structure(layer)
    assert mask[intra].all()  # every pair inside an ensemble is connected
    assert torch.bincount(layer.in_group).tolist() == [128 // G] * G  # balanced ensembles
    inter = mask & ~intra
    assert int(inter.sum()) == round(p * int((~intra).sum()))


def test_group_graph_decides_where_inter_edges_go():
    G = 8
    block = G2GLinear(64, 64, ensembles=G, p_inter=0.3, graph="block")
    mask, intra = _block_structure(block)
    assert torch.equal(mask, intra) and block.density == pytest.approx(1 / G)
    assert G2GLinear(64, 64, ensembles=G, graph="full").density == 1.0
    sw = G2GLinear(64, 64, ensembles=G, p_inter=0.15, graph="small_world", seed=1)
    graph = group_graph("small_world", G, 0.15, seed=1)
    mask, intra = _block_structure(sw)
    talking = {(int(sw.in_group[i]), int(sw.out_group[j])) for j, i in (mask & ~intra).nonzero().tolist()}
    assert talking and talking <= set(graph.edges())  # only ensembles the Watts-Strogatz graph links
    assert len(set(graph.edges())) < G * (G - 1)  # and that graph is not complete


def test_index_and_interleaved_groupings():
    a = G2GLinear(16, 16, ensembles=4, grouping="index")
    b = G2GLinear(16, 16, ensembles=4, grouping="interleaved")
    assert a.in_group.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert b.in_group.tolist() == [0, 1, 2, 3] * 4


def test_init_rescaled_to_active_fan_in():
    torch.manual_seed(0)
    layer = G2GLinear(512, 256, ensembles=8, p_inter=0.1, seed=0)
    torch.manual_seed(0)
    dense = torch.nn.Linear(512, 256)
    x = torch.randn(4096, 512)
    with torch.no_grad():
        # a sparse unit's pre-activation has the spread of a dense unit's, not sqrt(density) of it
        ratio = float((layer(x) - layer.bias).std() / (dense(x) - dense.bias).std())
    assert ratio == pytest.approx(1.0, abs=0.1)


def test_is_a_sparse_layer_with_kernels_and_specs():
    layer = G2GLinear(64, 32, ensembles=4, p_inter=0.1)
    model = torch.nn.Sequential(layer, torch.nn.ReLU(), G2GLinear(32, 8, ensembles=2, p_inter=0.0))
    assert len(sparse_modules(model)) == 2 and layer.nnz() == int(layer.mask.sum())
    spec = trace_layers(model, (64,))[0]
    assert spec.op == "linear" and spec.sparsity == pytest.approx(layer.sparsity, abs=1e-4)
    inf = to_inference(model, (64,), choose=lambda s: "torch_csr")
    x = torch.randn(3, 64)
    assert torch.allclose(inf(x), model(x), atol=1e-5)
    with pytest.raises(InvalidSparsity, match="follows from its ensembles"):
        layer.set_sparsity(0.5)
    with pytest.raises(SparseNASError, match="ensembles"):
        G2GLinear(4, 4, ensembles=8)
    with pytest.raises(SparseNASError, match="graph"):
        G2GLinear(8, 8, graph="tree")


def test_conv_form_masks_channels():
    conv = G2GConv2d(32, 64, ensembles=4, p_inter=0.2, seed=2)
    assert conv.weight.shape == conv.mask.shape == (64, 32, 1, 1)
    assert conv.density == pytest.approx(0.25 + 0.75 * 0.2, abs=2e-3)
    spec = trace_layers(torch.nn.Sequential(conv), (32, 4, 4))[0]
    assert spec.op == "conv2d" and spec.kernel == 1 and spec.sparsity == pytest.approx(conv.sparsity, abs=1e-4)


def test_dst_keeps_density_and_regrows_highest_correlation():
    torch.manual_seed(0)
    layer = G2GLinear(24, 16, ensembles=4, p_inter=0.1, seed=0)
    layer.enable_dst(DSTConfig(every=1, fraction=0.2, prune="magnitude", grow="hebbian"))
    layer.train()
    x = torch.randn(64, 24)
    layer(x)
    before, w_before = layer.mask.clone(), layer.weight.detach().abs().clone()
    corr = hebbian_scores(x, (x @ layer.masked_weight().T + layer.bias).detach())
    # reference: the k inactive edges with the highest |cos|, computed here independently
    k = round(0.2 * int(before.sum()))
    cand = torch.where(before.bool(), -1.0, corr).flatten()
    expected = set(torch.topk(cand, k).indices.tolist())
    moved = layer.rewire(0.2, "magnitude", "hebbian")
    assert moved == k
    assert layer.mask.sum() == before.sum()  # density unchanged
    grown = set(((layer.mask > 0) & (before == 0)).flatten().nonzero().flatten().tolist())
    assert grown == expected
    assert (layer.weight.flatten()[list(grown)] == 0).all()  # regrown edges start at zero
    pruned = (layer.mask == 0) & (before > 0)
    assert int(pruned.sum()) == k
    # the pruned edges were the smallest |w| among the active ones
    assert w_before[pruned].max() <= w_before[(layer.mask > 0) & (before > 0)].min()


def test_dst_runs_in_the_training_loop_at_constant_density():
    data = load_dataset("synthetic", limit=256, seed=0)  # g2g_mlp flattens images
    space = get_space("g2g_mlp")
    arch = space.default_arch(data.task).replace(dst="hebbian-hebbian", h1_width=64, h2_width=64)
    torch.manual_seed(0)
    model = space.build(arch, data.task)
    layers = sparse_modules(model)
    masks = [m.mask.clone() for m in layers]
    train(model, data, TrainBudget(epochs=8, batch_size=16, lr=0.05), seed=0)  # 128 steps: 2 rewirings
    for layer, before in zip(layers, masks):
        assert layer.mask.sum() == before.sum()
    assert any(not torch.equal(layer.mask, before) for layer, before in zip(layers, masks))


def test_space_choices_build_and_flatten_images():
    space = get_space("g2g_mlp")
    rng = random.Random(0)
    for shape in [(1, 40), (1, 8, 8)]:
        task = Task("x", shape, 10)
        for _ in range(4):
            arch = space.sample(rng, task)
            model = space.build(arch, task)
            assert model(torch.randn(2, *shape)).shape == (2, 10)
            hidden = [m for m in sparse_modules(model)]
            assert len(hidden) == arch["depth"]
    task = Task("mnist1d", (1, 40), 10)
    model = space.build(space.default_arch(task), task)
    assert all(m.sparsity > 0.7 for m in sparse_modules(model))  # G=8, p=0.15: 74% sparse
    with pytest.raises(SparseNASError, match="at most"):
        space.choices(Task("cifar10", (3, 64, 64), 10))
