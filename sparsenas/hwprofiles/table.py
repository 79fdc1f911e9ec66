"""LatencyTable: a network's latency predicted from the kernels of a hardware profile.

Per layer the table takes the fastest implementation the profile knows; :meth:`LatencyTable.choose`
is that same decision in the form ``to_inference(model, shape, choose=table.choose)`` takes, so the
network whose latency is predicted is the network that is exported.

The prediction is not the plain sum of the per-kernel medians: isolated kernels run 1.5-3x faster
than inside a real forward on small inputs (here BN, ReLU6, residual adds and the
Python call of every module cost as much as the convolutions). The profile therefore stores, per
space and input shape, a linear calibration fitted on networks measured end to end::

    ms = c_sum * (sum of kernel medians) + sum_impl c_impl * (layers run by impl)
         + c_act * (output activations, millions) + c_0

whose non-negative coefficients absorb the per-layer overhead (one BN/activation per conv; the
in-context cost of a call differs by implementation: a CSR kernel's wrapper and numpy round trip
are not a native conv's) and the per-network fixed cost. On the shipped profile the per-impl layer
counts took the leave-one-out share within +-10% from 78% to 92% (kernel sum + layers + act only).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..ops.spec import LayerSpec
from ..runtimes import NATIVE, Runtime, get_runtime
from .profile import FEATURES, SHIPPED, ProfileError, calibration_key, default_profile_path, profile_runtime, read_profile

__all__ = ["NATIVE", "FEATURES", "LatencyTable", "MissingKernels", "Prediction", "layer_impls", "feature_vector"]

SNAP_TOLERANCE = 0.03  # a traced sparsity this close to a profiled level is that level


def layer_impls(spec: LayerSpec, runtime: str | None = None) -> tuple[str, ...]:
    """Implementations ``runtime`` (None: the default runtime) has for a layer (see
    :meth:`sparsenas.runtimes.Runtime.impls`)."""
    return get_runtime(runtime, check=False).impls(spec)


_OWN_SUM = ("grouped", "sparse1", "sparse4")  # 1x1 kernels whose time has its own calibration term


def _prod(values: Sequence[int]) -> int:
    n = 1
    for v in values:
        n *= v
    return n


def _out_elems(spec: LayerSpec) -> int:
    n = spec.batch * spec.cout
    for v in spec.out_hw if spec.op == "conv2d" else ():
        n *= v
    return n


def feature_vector(layers: Sequence[LayerSpec], picks: Sequence[tuple[str, float]]) -> list[float]:
    """The calibration's inputs, in :data:`FEATURES` order, from the layers and their (impl, ms)."""
    impls = [i for i, _ in picks]
    depthwise = [s for s in layers if s.groups > 1]
    pointwise = [s.op == "conv2d" and s.kernel == 1 and s.groups == 1 for s in layers]
    by_name = {"sum_ms": float(sum(ms for _, ms in picks)), "layers": float(len(layers)),
               "sum_pw_ms": float(sum(ms for (i, ms), pw in zip(picks, pointwise) if pw and i not in _OWN_SUM)),
               # MNN's sparse kernels run in a network at another share of their isolated time than dense ones
               "sum_sparse_ms": float(sum(ms for i, ms in picks if i in ("sparse1", "sparse4"))),
               "sum_dw_ms": float(sum(ms for (_, ms), s in zip(picks, layers) if s.groups > 1)),
               "sum_other_ms": float(sum(ms for (_, ms), s, pw in zip(picks, layers, pointwise)
                                         if not pw and s.groups == 1)),
               # a layer run as a grouped conv does 1/blocks of the dense multiply-accumulates
               "pw_mmacs": sum(s.flops() / (s.blocks if i == "grouped" else 1)
                               for s, pw, i in zip(layers, pointwise, impls) if pw) / 1e6,
               "sum_grouped_ms": float(sum(ms for i, ms in picks if i == "grouped")),
               # channels gathered around permuted grouped layers (a copy the isolated kernel time under-weights)
               "gather_melems": sum(s.cin * _prod(s.in_hw) + _out_elems(s) for s, i in zip(layers, impls)
                                    if i == "grouped" and s.permuted) / 1e6,
               "dw_mmacs": sum(s.flops() for s in depthwise) / 1e6,
               "act_melems": sum(_out_elems(s) for s in layers) / 1e6, "dw_layers": float(len(depthwise)),
               "dw_act_melems": sum(_out_elems(s) for s in depthwise) / 1e6, "one": 1.0}
    for f in FEATURES:
        if f.startswith("layers_"):
            by_name[f] = float(impls.count(f[len("layers_"):]))
    return [by_name[f] for f in FEATURES]


class MissingKernels(ProfileError):
    """The profile lacks timings for kernels a network runs."""

    def __init__(self, table: "LatencyTable", keys: Iterable[str], space: str | None = None,
                 input_shape: tuple[int, ...] | None = None, what: str = "timings for") -> None:
        self.keys = sorted(set(keys))
        shown = ", ".join(self.keys[:5]) + (f" (and {len(self.keys) - 5} more)" if len(self.keys) > 5 else "")
        super().__init__(f"hardware profile '{table.name}' ({table.path}) has no {what} {len(self.keys)} kernel(s) "
                         f"this network runs: {shown}. Add them on this machine with: {table.profile_command(space, input_shape)}")


@dataclass
class Prediction:
    """A predicted latency (in the profile's metric, ms) with its parts."""

    ms: float
    plain_sum_ms: float
    kernels: list[str]                 # implementation per layer, in execution order
    layer_ms: list[float]              # profiled median per layer
    features: list[float]
    calibration: str | None            # calibration key, None when uncalibrated (plain sum)
    profile: str
    metric: str
    speed: float = 1.0                 # the anchor's factor applied (see :mod:`.anchor`)
    extra: dict[str, Any] = field(default_factory=dict)


class LatencyTable:
    """Look-ups and predictions from one hardware profile (see :mod:`sparsenas.hwprofiles.profile`)."""

    def __init__(self, data: dict[str, Any], path: str | Path | None = None) -> None:
        self.data = data
        self.runtime_name: str = profile_runtime(data)
        # predicting needs no runtime installed, only its rules (measuring does: Runtime.require)
        self.runtime: Runtime = get_runtime(self.runtime_name, check=False)
        self.path = str(path) if path is not None else "<memory>"
        self.name: str = data["name"]
        self.metric: str = data["timing"]["metric"]
        self.entries: dict[str, dict[str, Any]] = data["entries"]
        self.levels = sorted(float(v) for v in data.get("sparsity_levels", []))
        # time now / time when profiled, per calibration key; set by anchoring (:mod:`.anchor`)
        self.speed: dict[str, float] = {}

    @classmethod
    def load(cls, path: str | Path | None = None, runtime: str | None = None) -> "LatencyTable":
        """The profile at ``path``; None: the profile shipped with sparsenas for ``runtime`` (None:
        the default runtime). With both, the profile must belong to ``runtime``."""
        p = default_profile_path(runtime) if path is None else Path(path)
        table = cls(read_profile(p), p)
        if runtime is not None and table.runtime_name != runtime:
            raise ProfileError(f"hardware profile '{p}' times runtime '{table.runtime_name}', but runtime '{runtime}' "
                               f"was asked for: latencies of one runtime say little about another. Pass "
                               f"--runtime {table.runtime_name}, or a profile of {runtime} (`nas profile --runtime "
                               f"{runtime} --space SPACE --out FILE`), or leave out --hw for the shipped one")
        return table

    @property
    def is_default(self) -> bool:
        return self.runtime_name in SHIPPED and Path(self.path) == default_profile_path(self.runtime_name)

    def profile_command(self, space: str | None = None, input_shape: tuple[int, ...] | None = None) -> str:
        size = f" --input-size {input_shape[-1]}" if input_shape and len(input_shape) == 3 else ""
        cmd = f"nas profile --space {space or 'SPACE'}{size}"
        rt = f" --runtime {self.runtime_name}"
        if self.is_default:  # the shipped file is not the user's to extend: start their own
            return f"`{cmd} --out my-cpu.json{rt}` (a profile of your own), then pass --hw my-cpu.json"
        return f"`{cmd} --out {self.path}{rt}` (it keeps the entries already there)"

    # ------------------------------------------------------------------ look-up
    def snap(self, spec: LayerSpec) -> LayerSpec:
        """``spec`` with its measured zero fraction (e.g. 0.7995) replaced by the nearest profiled level
        (and filed as the runtime files it, see :meth:`~sparsenas.runtimes.Runtime.table_spec`)."""
        spec = self.runtime.table_spec(spec)
        if not self.levels or spec.blocks or spec.key() in self.entries:  # a block layer's sparsity is exact
            return spec
        # the nearest level at which this layer was profiled: one profile holds several spaces, and a
        # space with free densities (g2g_mlp) brings levels (0.675) next to another's (0.7)
        near = sorted((abs(v - spec.sparsity), v) for v in self.levels if abs(v - spec.sparsity) <= SNAP_TOLERANCE)
        if not near:
            return spec
        snapped = [dataclasses.replace(spec, sparsity=v) for _, v in near]
        return next((s for s in snapped if s.key() in self.entries), snapped[0])

    def timings(self, spec: LayerSpec) -> dict[str, float] | None:
        """``{impl: median ms}`` for the implementations ``to_inference`` can give this layer, or None."""
        entry = self.entries.get(self.snap(spec).key())
        if entry is None:
            return None
        wanted = self.runtime.impls(spec)
        found = {i: float(t[self.metric]) for i, t in entry["impls"].items() if i in wanted}
        return found or None

    def missing(self, layers: Iterable[LayerSpec]) -> list[str]:
        return sorted({self.snap(s).key() for s in layers if self.timings(s) is None})

    def best(self, spec: LayerSpec) -> tuple[str, float]:
        """(implementation, ms) of the fastest implementation profiled for this layer."""
        t = self.timings(spec)
        if t is None:
            raise MissingKernels(self, [self.snap(spec).key()])
        impl = min(t, key=t.__getitem__)
        return impl, t[impl]

    def choose(self, spec: LayerSpec) -> str:
        """The kernel the artifact runs a sparse layer with, in ``to_inference``'s terms: a
        :data:`~sparsenas.ops.KERNELS` name (``dense`` for the runtime's native op) or ``grouped``."""
        impl, _ = self.best(spec)
        return "dense" if impl == NATIVE else impl

    # ------------------------------------------------------------------ prediction
    def anchor(self, space: Any, task: Any, networks: int = 16, repeats: int = 100) -> Any:
        """Re-time a few of the profile's calibration networks now and scale this space's
        predictions by how much faster or slower the machine runs than when it was profiled."""
        from .anchor import measure_anchor

        a = measure_anchor(self, space, task, networks, repeats)
        self.speed[calibration_key(space.name, task.input_shape)] = a.speed
        return a

    def calibration(self, space: str, input_shape: tuple[int, ...]) -> dict[str, Any]:
        key = calibration_key(space, input_shape)
        cal = self.data["calibrations"].get(key)
        if cal is None:
            known = ", ".join(sorted(self.data["calibrations"])) or "none"
            raise ProfileError(f"hardware profile '{self.name}' ({self.path}) has no calibration for {key} "
                               f"(it has: {known}). Add it on this machine with: "
                               f"{self.profile_command(space, input_shape)}")
        return cal

    def predict(self, layers: Sequence[LayerSpec], space: str | None = None,
                input_shape: tuple[int, ...] | None = None) -> Prediction:
        """Latency of a network running ``layers`` (as ``space.layers(arch, task)`` lists them).

        With ``space`` and ``input_shape`` the profile's calibration for them is applied (an error if
        there is none), times the speed anchor when one was measured (:meth:`anchor`); without, the
        result is the plain sum of kernel timings.
        """
        missing = self.missing(layers)
        if missing:
            raise MissingKernels(self, missing, space, input_shape)
        picks = [self.best(s) for s in layers]
        layer_ms = [ms for _, ms in picks]
        feats = feature_vector(layers, picks)
        plain = feats[0]
        key = None
        ms = plain
        if space is not None and input_shape is not None:
            cal = self.calibration(space, input_shape)
            key = calibration_key(space, input_shape)
            by_name = dict(zip(FEATURES, feats))
            ms = float(sum(c * by_name[f] for f, c in zip(cal["features"], cal["coef"])))
        speed = self.speed.get(key, 1.0) if key else 1.0
        return Prediction(ms=ms * speed, plain_sum_ms=plain, kernels=[i for i, _ in picks], layer_ms=layer_ms,
                          features=feats, calibration=key, profile=self.name, metric=self.metric, speed=speed)
