"""g2g_mlp: a G2GNet-style feed-forward network (ensembles, group graph, dynamic sparse training).

Choices:
- ``depth`` (hidden layers) and ``h1_width``..``h3_width`` (layers past ``depth`` are unused);
- ``ensembles`` (G, 1 = dense), ``p_inter`` (share of inter-ensemble neuron pairs connected),
  ``graph`` (block | er | small_world | full, see :mod:`sparsenas.ops.g2g`);
- ``grouping``: index, random, or mixer (index in odd layers, interleaved in even ones, so
  consecutive layers mix the ensembles, G2GNet's "mixer");
- ``dst``: off, or ``PRUNE-GROW`` dynamic sparse training (every :data:`DST_EVERY` steps, a cosine-
  decayed :data:`DST_FRACTION` of the edges, stopping at 75% of training).

Density of a hidden layer: ``1/G + (1 - 1/G) * p_inter`` (G=8, p=0.15: 0.256, i.e. 74% sparse).
Takes mnist1d (1, 40) by default; images are flattened, so any dataset works.
"""
from __future__ import annotations

import math

from ..arch import Arch
from ..errors import SparseNASError
from ..task import Task
from . import SPACES
from .base import SearchSpace

MAX_DEPTH = 3
WIDTHS = [64, 128, 256, 512]
ENSEMBLES = [1, 2, 4, 8, 16]
P_INTER = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]
GRAPHS = ["block", "er", "small_world", "full"]
GROUPINGS = ["index", "random", "mixer"]
DST_RULES = ["off", "magnitude-hebbian", "hebbian-hebbian", "magnitude-random", "random-hebbian"]
DST_EVERY = 50
DST_FRACTION = 0.3
MAX_INPUTS = 4096


def layer_groupings(grouping: str, depth: int) -> list[str]:
    if grouping == "mixer":
        return ["index" if i % 2 == 0 else "interleaved" for i in range(depth)]
    return [grouping] * depth


@SPACES.register("g2g_mlp")
class G2GMLPSpace(SearchSpace):
    name = "g2g_mlp"
    version = 1
    description = ("G2GNet MLP: hidden layers split into ensembles, dense inside, sparse between along a "
                   "networkx group graph; depth, widths, G, p_inter, grouping, dynamic sparse training")
    default_dataset = "mnist1d"

    def check_task(self, task: Task) -> None:
        n = math.prod(task.input_shape)
        if n > MAX_INPUTS:
            raise SparseNASError(f"space '{self.name}' flattens its input and takes at most {MAX_INPUTS} values; "
                                 f"dataset '{task.dataset}' has input shape {task.input_shape} ({n} values). "
                                 "Use a smaller --input-size, or an image space such as sparse_mbv2")

    def choices(self, task: Task) -> dict[str, list]:
        self.check_task(task)
        c: dict[str, list] = {"depth": list(range(1, MAX_DEPTH + 1))}
        for i in range(1, MAX_DEPTH + 1):
            c[f"h{i}_width"] = WIDTHS
        c.update(ensembles=ENSEMBLES, p_inter=P_INTER, graph=GRAPHS, grouping=GROUPINGS, dst=DST_RULES)
        return c

    def canonical(self, arch: Arch) -> Arch:
        """Widths past ``depth`` are unused; one ensemble or the full graph is a dense layer whatever
        p_inter, graph and grouping say; the block graph draws no inter-ensemble edges, so p_inter
        means nothing for it. Those choices are set to fixed values."""
        ch = dict(arch.choices)
        for i in range(ch.get("depth", MAX_DEPTH) + 1, MAX_DEPTH + 1):
            ch[f"h{i}_width"] = WIDTHS[0]
        if ch.get("ensembles") == 1 or ch.get("graph") == "full":
            ch.update(ensembles=1, p_inter=P_INTER[0], graph="full", grouping=GROUPINGS[0])
        elif ch.get("graph") == "block":
            ch["p_inter"] = P_INTER[0]
        return Arch(arch.space, arch.version, ch)

    def default_arch(self, task: Task) -> Arch:
        """G2GNet's reference setting: 2 hidden layers of 256, G=8, p_inter=0.15 (74% sparse), ER, index."""
        return Arch(self.name, self.version, {"depth": 2, "h1_width": 256, "h2_width": 256, "h3_width": 256,
                                              "ensembles": 8, "p_inter": 0.15, "graph": "er", "grouping": "index",
                                              "dst": "off"})

    def build(self, arch: Arch, task: Task):
        from ..ops.g2g import DSTConfig
        from ._g2g_mlp_modules import G2GMLP

        self.validate(arch, task)
        ch = arch.choices
        depth = ch["depth"]
        dst = None
        if ch["dst"] != "off":
            prune, grow = ch["dst"].split("-")
            dst = DSTConfig(every=DST_EVERY, fraction=DST_FRACTION, prune=prune, grow=grow)
        return G2GMLP(math.prod(task.input_shape), task.num_classes, [ch[f"h{i}_width"] for i in range(1, depth + 1)],
                      ensembles=ch["ensembles"], p_inter=ch["p_inter"], graph=ch["graph"],
                      groupings=layer_groupings(ch["grouping"], depth), dst=dst)
