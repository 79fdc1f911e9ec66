"""sparse_darts: the DARTS cell space with sparse convolutions (the space DASS searched).

A network is a stack of ``cells`` cells (reduction cells at 1/3 and 2/3 of the depth) with
``channels`` initial channels; every weighted convolution is a :class:`SparseConv2d` and the
classifier a :class:`SparseLinear`, all pruned to ``sparsity`` (the stem stays dense, see
:class:`DartsNetwork`). There are two cell types, ``normal`` and ``reduce``, each with 4 nodes.

Genotype encoding (the discrete form of the 14 mixed edges of a cell after DARTS' top-2
derivation), chosen so that every combination of choices is a valid genotype and random / TPE /
NSGA-II can sample it directly:
- ``{cell}_n{i}_inputs``: the two distinct states node ``i`` reads, as ``"a+b"`` with ``a < b``
  (0, 1: the two cell inputs; ``k + 2``: node ``k``) — 1, 3, 6 and 10 options for nodes 0..3;
- ``{cell}_n{i}_op0`` / ``_op1``: the primitive on the edge from ``a`` / from ``b`` (any DARTS
  primitive but ``none``, which derivation never keeps).
An encoding with one op per each of the 14 edges would carry 6 op choices per cell that the network
never uses; samplers would waste their model on them.

Size (scalable by choice): ``channels`` {8, 12, 16}, ``cells`` {3, 5, 8}; sparsity {0.5 .. 0.95}.
"""
from __future__ import annotations

import itertools

from ..arch import Arch
from ..errors import SparseNASError
from ..task import Task
from . import SPACES
from ._darts_modules import PRIMITIVES, STEPS
from .base import SearchSpace

CELL_TYPES = ("normal", "reduce")
OPS = [p for p in PRIMITIVES if p != "none"]
CHANNELS = [8, 12, 16]
CELLS = [3, 5, 8]
SPARSITIES = [0.5, 0.7, 0.8, 0.9, 0.95]


def input_pairs(node: int) -> list[str]:
    """The ``"a+b"`` input pairs node ``node`` may read (``a < b < node + 2``)."""
    return [f"{a}+{b}" for a, b in itertools.combinations(range(node + 2), 2)]


def genotype(arch: Arch, cell: str) -> list[tuple[int, int, str]]:
    """``[(node, input state, op), ...]``: the 8 edges of one cell type of ``arch``."""
    edges = []
    for i in range(STEPS):
        a, b = (int(v) for v in arch.choices[f"{cell}_n{i}_inputs"].split("+"))
        edges += [(i, a, arch.choices[f"{cell}_n{i}_op0"]), (i, b, arch.choices[f"{cell}_n{i}_op1"])]
    return edges


def genotype_choices(edges: dict[str, list[tuple[int, int, str]]]) -> dict[str, str]:
    """The choices of a genotype given as ``{cell type: [(node, input, op) x 2 per node]}``."""
    out: dict[str, str] = {}
    for cell, cell_edges in edges.items():
        for i in range(STEPS):
            node = sorted((j, op) for n, j, op in cell_edges if n == i)
            if len(node) != 2 or node[0][0] == node[1][0]:
                raise SparseNASError(f"sparse_darts genotype: node {i} of the {cell} cell needs two distinct "
                                     f"inputs, got {node}")
            out[f"{cell}_n{i}_inputs"] = f"{node[0][0]}+{node[1][0]}"
            out[f"{cell}_n{i}_op0"], out[f"{cell}_n{i}_op1"] = node[0][1], node[1][1]
    return out


@SPACES.register("sparse_darts")
class SparseDartsSpace(SearchSpace):
    name = "sparse_darts"
    version = 1
    description = ("DARTS cells (normal + reduction, 4 nodes, top-2 inputs each) whose convs are SparseConv "
                   "and classifier SparseLinear: the space DASS searched; small C and depth for CPUs")
    default_dataset = "digits"

    def check_task(self, task: Task) -> None:
        self.require_images(task, 4, " (two reductions)")

    def choices(self, task: Task) -> dict[str, list]:
        self.check_task(task)
        c: dict[str, list] = {"channels": CHANNELS, "cells": CELLS, "sparsity": SPARSITIES}
        for cell in CELL_TYPES:
            for i in range(STEPS):
                c[f"{cell}_n{i}_inputs"] = input_pairs(i)
                c[f"{cell}_n{i}_op0"] = OPS
                c[f"{cell}_n{i}_op1"] = OPS
        return c

    def default_arch(self, task: Task) -> Arch:
        """A DARTS-V2-like genotype (separable convs on the cell inputs) at C=8, 5 cells, 90% sparsity."""
        picks = {"channels": 8, "cells": 5, "sparsity": 0.9}
        for cell in CELL_TYPES:
            for i in range(STEPS):
                picks[f"{cell}_n{i}_inputs"] = "0+1"
                picks[f"{cell}_n{i}_op0"] = "sep_conv_3x3" if cell == "normal" else "max_pool_3x3"
                picks[f"{cell}_n{i}_op1"] = "skip_connect" if i else "sep_conv_3x3"
        return Arch(self.name, self.version, picks)

    def build(self, arch: Arch, task: Task):
        from ._darts_modules import DartsNetwork, SparseSpec, make_op

        self.validate(arch, task)
        sp = SparseSpec(float(arch.choices["sparsity"]))
        chosen = {cell: {(i, j): op for i, j, op in genotype(arch, cell)} for cell in CELL_TYPES}

        def make_edge(index: int, reduction: bool, i: int, j: int, c: int, stride: int):
            op = chosen["reduce" if reduction else "normal"].get((i, j))
            return None if op is None else make_op(op, c, stride, sp)

        return DartsNetwork(task.input_shape[0], task.num_classes, int(arch.choices["channels"]),
                            int(arch.choices["cells"]), make_edge, sp)
