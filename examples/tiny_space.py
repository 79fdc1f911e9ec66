"""A search space in one file: a small MLP for images, searched by width, depth and activation.

Use it without changing sparsenas:

    PYTHONPATH=examples nas search --space tiny_space:TinyMLP --dataset digits --trials 4 --epochs 2

or install it as a plug-in (``[project.entry-points."sparsenas.spaces"] tiny_mlp = "tiny_space:TinyMLP"``
in your package's pyproject.toml) and pass ``--space tiny_mlp``.
"""
from __future__ import annotations

import math

from torch import nn

from sparsenas.search_spaces.base import SearchSpace


class TinyMLP(SearchSpace):
    name = "tiny_mlp"               # stored in studies and arch.json files
    version = 1                     # bump when the choices change
    description = "flatten, then 1-2 hidden layers of 16-64 units"
    default_dataset = "digits"

    def choices(self, task):
        # name -> allowed values, in a fixed order: Optuna samples these
        return {"width": [16, 32, 64], "depth": [1, 2], "act": ["relu", "tanh"]}

    def build(self, arch, task):
        # a standalone network: (B, *task.input_shape) -> (B, task.num_classes) logits
        c = arch.choices
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[c["act"]]
        layers, width = [nn.Flatten()], math.prod(task.input_shape)
        for _ in range(c["depth"]):
            layers += [nn.Linear(width, c["width"]), act()]
            width = c["width"]
        return nn.Sequential(*layers, nn.Linear(width, task.num_classes))
