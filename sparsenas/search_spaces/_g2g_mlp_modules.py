"""The nn.Modules that g2g_mlp assembles."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..ops.g2g import DSTConfig, G2GLinear, enable_dst


def layer_plan(in_features: int, widths: Sequence[int], ensembles: int, groupings: Sequence[str],
               seed: int = 0) -> list[tuple[int, int, int, str, int]]:
    """``(n_in, n_out, G, grouping, mask seed)`` of each hidden G2GLinear of :class:`G2GMLP`: the one
    place that says how a layer's G2G mask is drawn, so that a supernet can rebuild a child's masks."""
    plan, prev = [], in_features
    for i, (w, grouping) in enumerate(zip(widths, groupings)):
        plan.append((prev, w, min(ensembles, prev, w), grouping, seed * 1000 + i))
        prev = w
    return plan


class G2GMLP(nn.Module):
    """Flatten -> [G2GLinear -> ReLU] x depth -> dense Linear classifier.

    Input (B, *input_shape) (mnist1d (B, 1, 40), images (B, C, H, W)) -> logits (B, classes).
    ``groupings[i]`` is the ensemble assignment of hidden layer i ("index" | "random" |
    "interleaved"); ``ensembles == 1`` makes every hidden layer dense (a G2GLinear with one
    ensemble is an ordinary dense layer, so dense and G2G share one code path and one init).
    The classifier stays dense: 10 outputs are too few to split into ensembles.
    """

    def __init__(self, in_features: int, num_classes: int, widths: Sequence[int], *, ensembles: int,
                 p_inter: float, graph: str, groupings: Sequence[str], dst: DSTConfig | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for n_in, prev, g, grouping, layer_seed in layer_plan(in_features, widths, ensembles, groupings, seed):
            layers += [G2GLinear(n_in, prev, ensembles=g, p_inter=p_inter, graph=graph, grouping=grouping,
                                 seed=layer_seed), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, num_classes)
        self.dst = dst
        enable_dst(self, dst)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def extra_repr(self) -> str:
        return "" if self.dst is None else f"dst={self.dst}"


def dense_twin(model: G2GMLP) -> nn.Module:
    """A plain dense MLP (nn.Linear, default init) of the same widths, for comparisons."""
    linears = [m for m in model.features if isinstance(m, nn.Linear)] + [model.classifier]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, m in enumerate(linears):
        layers.append(nn.Linear(m.in_features, m.out_features))
        if i < len(linears) - 1:
            layers.append(nn.ReLU())
    with torch.no_grad():
        return nn.Sequential(*layers)
