import random

import pytest
import torch

from sparsenas.ops import SparseConv2d
from sparsenas.search_spaces import get_space
from sparsenas.search_spaces.sparse_mbv2 import num_downsamplings
from sparsenas.task import Task
from sparsenas.errors import SparseNASError


@pytest.mark.parametrize("size", [8, 16, 32])
def test_builds_and_runs_for_input_sizes(size):
    space = get_space("sparse_mbv2")
    task = Task("digits", (1, size, size), 10)
    rng = random.Random(size)
    for _ in range(3):
        arch = space.sample(rng, task)
        model = space.build(arch, task).eval()
        out = model(torch.randn(2, 1, size, size))
        assert out.shape == (2, 10)
        # the stride plan ends at about 4x4 whatever the input size
        feat = model.blocks(model.stem(torch.randn(1, 1, size, size)))
        assert feat.shape[-1] == size // 2 ** num_downsamplings(size)


def test_sparsity_choice_becomes_sparse_convs_and_layers_list_them():
    space = get_space("sparse_mbv2")
    task = Task("digits", (1, 16, 16), 10)
    arch = space.default_arch(task).replace(s3b1_sparsity=0.9, head_sparsity=0.8)
    model = space.build(arch, task)
    sparse = [m for m in model.modules() if isinstance(m, SparseConv2d)]
    assert len(sparse) == 3  # expand + project of s3b1, and the head
    layers = space.layers(arch, task)
    sparsities = sorted({round(l.sparsity, 2) for l in layers if l.kernel == 1 and l.op == "conv2d"})
    assert sparsities == [0.0, 0.8, 0.9]
    assert layers[-1].op == "linear" and layers[-1].cout == 10
    assert any(l.groups > 1 and l.kernel == 3 for l in layers)  # depthwise convs are listed too


def test_choices_depend_on_input_size_and_bad_task_is_clear():
    space = get_space("sparse_mbv2")
    small = space.choices(Task("digits", (1, 8, 8), 10))["downsample"]
    big = space.choices(Task("cifar10", (3, 32, 32), 10))["downsample"]
    assert all(p.count("s") == 1 for p in small) and all(p.count("s") == 3 for p in big)
    with pytest.raises(SparseNASError, match="image data"):
        space.choices(Task("mnist1d", (1, 40), 10))
