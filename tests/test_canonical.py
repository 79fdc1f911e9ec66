"""SearchSpace.canonical: architectures with one canonical form build one network."""
from __future__ import annotations

import random

import pytest
import torch

from sparsenas.search_spaces import get_space
from sparsenas.task import Task


def _same_network(space, a, b, task) -> bool:
    torch.manual_seed(0)
    m1 = space.build(a, task).eval()
    torch.manual_seed(0)
    m2 = space.build(b, task).eval()
    # G2G layers keep their ensemble ids as buffers for inspection only (masks and DST do not read
    # them), so a dense layer labelled with 16 ensembles is the same network as one with 1
    s1 = {k: v for k, v in m1.state_dict().items() if not k.endswith("_group")}
    s2 = {k: v for k, v in m2.state_dict().items() if not k.endswith("_group")}
    if s1.keys() != s2.keys() or not all(torch.equal(s1[k], s2[k]) for k in s1):
        return False
    x = torch.randn(2, *task.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(m1(x), m2(x))


@pytest.mark.parametrize("name, task, n", [("g2g_mlp", Task("mnist1d", (1, 40), 10), 40),
                                           ("sparse_mbv2", Task("digits", (1, 8, 8), 10), 8)])
def test_canonical_form_builds_the_same_network(name, task, n):
    space, rng = get_space(name), random.Random(0)
    changed = 0
    for _ in range(n):
        arch = space.sample(rng, task)
        canon = space.canonical(arch)
        assert space.canonical(canon) == canon  # idempotent
        space.validate(canon, task)
        changed += canon != arch
        assert _same_network(space, arch, canon, task), arch.to_json()
    assert changed > n // 4  # random archs are often redundant encodings: the test is not vacuous


def test_canonical_merges_redundant_g2g_mlp_encodings():
    space, task = get_space("g2g_mlp"), Task("mnist1d", (1, 40), 10)
    base = space.default_arch(task)
    dense_a = base.replace(ensembles=1, p_inter=0.2, graph="er", grouping="random")
    dense_b = base.replace(ensembles=8, p_inter=0.05, graph="full", grouping="mixer")
    assert space.canonical(dense_a) == space.canonical(dense_b)
    assert space.canonical(base.replace(depth=1, h2_width=64)) == space.canonical(base.replace(depth=1, h2_width=512))
    assert space.canonical(base.replace(graph="block", p_inter=0.1)) == space.canonical(base.replace(graph="block"))
    # a choice that does matter keeps two archs apart
    assert space.canonical(base.replace(p_inter=0.1)) != space.canonical(base)
