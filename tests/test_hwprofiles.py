"""Hardware profiles: schema checks, look-ups, kernel choice, prediction, a tiny real profile run."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from sparsenas.arch import Arch
from sparsenas.cli import main
from sparsenas.errors import SparseNASError
from sparsenas.evaluators.latency import LATENCY, LatencyResult
from sparsenas.hwprofiles import LatencyTable, MissingKernels, ProfileError, calibration_key, default_profile_path
from sparsenas.hwprofiles.profile import new_profile, read_profile, write_json_atomic
from sparsenas.hwprofiles.profiler import KernelTimer, cuda_semi_structured, partial_path, run_profile
from sparsenas.hwprofiles.validate import validate
from sparsenas.ops import (CsrConv1x1Kernel, kernel_choices, DenseConv1x1Kernel, DenseLinearKernel, ScipyCsrLinearKernel,
                           SparseConv2d, SparseLinear, to_inference, trace_layers)
from sparsenas.ops.spec import LayerSpec
from sparsenas.search_spaces import get_space
from sparsenas.search_spaces._mbv2_modules import pointwise
from sparsenas.search_spaces.base import SearchSpace
from sparsenas.task import Task
from sparsenas.runtimes import get_runtime

SHAPE = (16, 4, 4)


def timing(ms: float) -> dict[str, float]:
    return {"wall_ms": ms * 1.1, "cpu_ms": ms * 1.05, "wall_iqr_ms": 0.0, "cpu_iqr_ms": 0.0, "repeats": 100,
            "wall_p10_ms": ms * 1.02, "cpu_p10_ms": ms}


def hand_profile(times: dict[LayerSpec, dict[str, float]], levels=(0.0, 0.9), calibrations=None) -> dict:
    data = new_profile("hand", 1, {"repeats": 100}, get_runtime("torch", check=False).info())  # torch's kernels
    data["sparsity_levels"] = list(levels)
    data["entries"] = {s.key(): {"spec": s.to_dict(), "impls": {i: timing(ms) for i, ms in t.items()}}
                       for s, t in times.items()}
    data["calibrations"] = calibrations or {}
    return data


def two_layer_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(SparseConv2d(16, 32, 1, bias=False, sparsity=0.9), nn.ReLU(), nn.Flatten(),
                         SparseLinear(32 * 4 * 4, 10, sparsity=0.9))


CONV = LayerSpec("conv2d", 16, 32, 1, 1, 1, (4, 4), 0.9)
FC = LayerSpec("linear", 512, 10, sparsity=0.9)


def test_traced_sparsity_snaps_to_the_profiled_level():
    model = nn.Sequential(SparseConv2d(16, 30, 1, bias=False, sparsity=0.9))  # 480 weights: 0.9 exactly? no: 432/480
    traced = trace_layers(model, SHAPE)[0]
    table = LatencyTable(hand_profile({LayerSpec("conv2d", 16, 30, 1, 1, 1, (4, 4), 0.9): {"dense": 1.0}}))
    assert table.snap(LayerSpec("conv2d", 16, 30, 1, 1, 1, (4, 4), 0.8995)).sparsity == 0.9
    assert table.snap(traced).key() == "conv2d:c16-30:k1:s1:g1:in4x4:sp0.9:b1"
    assert table.snap(LayerSpec("conv2d", 16, 30, 1, 1, 1, (4, 4), 0.5)).sparsity == 0.5  # too far: not snapped


def test_prediction_from_a_hand_made_profile(tmp_path):
    cal = {"features": ["sum_ms", "layers", "act_melems", "one"], "coef": [2.0, 0.01, 0.0, 0.1]}
    data = hand_profile({CONV: {"dense": 0.30, "torch_csr": 0.10, "scipy_csr": 0.20},
                         FC: {"dense": 0.05, "torch_csr": 0.08, "scipy_csr": 0.07}},
                        calibrations={calibration_key("toy", SHAPE): cal})
    path = tmp_path / "hand.json"
    write_json_atomic(path, data)
    table = LatencyTable.load(path)
    layers = trace_layers(two_layer_model(), SHAPE)
    plain = table.predict(layers)
    assert plain.kernels == ["torch_csr", "dense"]
    assert plain.ms == pytest.approx(0.10 + 0.05) and plain.calibration is None
    p = table.predict(layers, "toy", SHAPE)
    assert p.ms == pytest.approx(2.0 * 0.15 + 0.01 * 2 + 0.1)
    assert p.plain_sum_ms == pytest.approx(0.15) and p.calibration == "toy@16x4x4"
    with pytest.raises(ProfileError, match="no calibration for other@16x4x4"):
        table.predict(layers, "other", SHAPE)


def test_a_median_profile_still_predicts_in_its_own_metric(tmp_path):
    """Profiles written before the p10 statistic keep predicting in the median they were measured in."""
    data = hand_profile({CONV: {"dense": 0.30, "torch_csr": 0.10}, FC: {"dense": 0.05}})
    data["timing"].update(metric="cpu_ms", statistic="median")
    for entry in data["entries"].values():
        for t in entry["impls"].values():
            del t["cpu_p10_ms"], t["wall_p10_ms"]
    path = tmp_path / "median.json"
    write_json_atomic(path, data)
    p = LatencyTable.load(path).predict(trace_layers(two_layer_model(), SHAPE))
    assert p.metric == "cpu_ms" and p.ms == pytest.approx(1.05 * (0.10 + 0.05))
    data["timing"]["metric"] = "cpu_p10_ms"  # claims p10 but has no p10 numbers: corrupt
    write_json_atomic(path, data)
    with pytest.raises(ProfileError, match="cpu_p10_ms"):
        LatencyTable.load(path)


def test_missing_keys_name_the_keys_and_the_command(tmp_path):
    path = tmp_path / "partial-cover.json"
    write_json_atomic(path, hand_profile({FC: {"dense": 0.05, "torch_csr": 0.08, "scipy_csr": 0.07}}))
    table = LatencyTable.load(path)
    with pytest.raises(MissingKernels) as e:
        table.predict(trace_layers(two_layer_model(), SHAPE), "toy", SHAPE)
    msg = str(e.value)
    assert CONV.key() in msg and FC.key() not in msg
    assert f"nas profile --space toy --input-size 4 --out {path}" in msg
    assert e.value.keys == [CONV.key()]
    with pytest.raises(MissingKernels, match="conv2d:c16-32"):  # the kernel choice fails the same way
        to_inference(two_layer_model(), SHAPE, choose=table.choose)


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ('["a", "list"]', "not a JSON object"),
    ('{"schema": "nn-meter/2", "entries": {}}', "not a sparsenas hardware profile"),
    ('{"name": "x"}', "no 'schema' field"),
])
def test_corrupt_or_foreign_profile_is_a_clear_error(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ProfileError, match=problem):
        read_profile(path)


def test_profile_with_broken_entries_is_rejected(tmp_path, capsys):
    data = hand_profile({FC: {"dense": 0.05}})
    data["entries"][FC.key()]["impls"]["dense"].pop("cpu_ms")
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="impl 'dense' needs numbers"):
        LatencyTable.load(path)
    assert main(["profile", "--validate", str(path), "--space", "sparse_mbv2"]) == 2  # CLI: one paragraph, exit 2
    err = capsys.readouterr().err
    assert "is corrupt" in err and "Traceback" not in err
    assert main(["search", "--hw", str(path), "--trials", "1", "--storage", f"sqlite:///{tmp_path}/x.db",
                 "--no-progress"]) == 2


def test_kernel_choice_follows_the_profile_and_the_exported_model_runs_it():
    model = two_layer_model()
    x = torch.randn(1, *SHAPE)
    csr_fast = LatencyTable(hand_profile({CONV: {"dense": 0.30, "torch_csr": 0.10, "scipy_csr": 0.20},
                                          FC: {"dense": 0.09, "torch_csr": 0.08, "scipy_csr": 0.07}}))
    inf = to_inference(model, SHAPE, choose=csr_fast.choose)
    assert isinstance(inf[0], CsrConv1x1Kernel) and isinstance(inf[3], ScipyCsrLinearKernel)
    assert csr_fast.predict(trace_layers(model, SHAPE)).kernels == ["torch_csr", "scipy_csr"]
    dense_fast = LatencyTable(hand_profile({CONV: {"dense": 0.05, "torch_csr": 0.10, "scipy_csr": 0.20},
                                            FC: {"dense": 0.05, "torch_csr": 0.08, "scipy_csr": 0.07}}))
    inf2 = to_inference(model, SHAPE, choose=dense_fast.choose)
    assert isinstance(inf2[0], DenseConv1x1Kernel) and isinstance(inf2[3], DenseLinearKernel)
    with torch.no_grad():
        ref = model.eval()(x)
        torch.testing.assert_close(inf(x), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(inf2(x), ref, rtol=1e-4, atol=1e-5)


class TinySpace(SearchSpace):
    """A 3-layer network: stem conv, a dense-or-sparse 1x1 conv, classifier (for fast profiler tests)."""

    name = "tiny_hw"

    def choices(self, task):
        return {"width": [8, 12, 16, 20], "sparsity": [0.0, 0.5, 0.9]}

    def build(self, arch, task):
        w = arch.choices["width"]
        return nn.Sequential(nn.Conv2d(task.input_shape[0], w, 3, padding=1), nn.ReLU(),
                             pointwise(w, 32, arch.choices["sparsity"]), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(32, task.num_classes))


class Interrupting(KernelTimer):
    """Stops the run (as Ctrl-C does) after ``stop_after`` kernels; counts what it timed."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__(warmup=1, repeats=5, rounds=1, runtime="torch")  # the test checks torch's CSR kernels
        self.stop_after, self.timed = stop_after, []

    def __call__(self, spec, impls):
        if self.stop_after is not None and len(self.timed) >= self.stop_after:
            raise KeyboardInterrupt
        self.timed.append(spec.key())
        return super().__call__(spec, impls)


def test_tiny_real_profile_resumes_round_trips_and_validates(tmp_path):
    space, task = TinySpace(), Task("synthetic", (1, 6, 6), 3)
    specs = space.kernel_specs(task, patience=30)
    assert {s.sparsity for s in specs} == {0.0, 0.5, 0.9} and len(specs) == 4 + 4 * 3 + 1
    out = tmp_path / "tiny.json"
    first = Interrupting(stop_after=4)
    with pytest.raises(KeyboardInterrupt):
        run_profile([(space, task)], out, timer=first, calibration_networks=6, calibration_repeats=5, progress=False)
    assert not out.exists() and len(read_profile(partial_path(out))["entries"]) == 4
    second = Interrupting()
    data = run_profile([(space, task)], out, timer=second, calibration_networks=6, calibration_repeats=5,
                       progress=False, log=lambda s: None)
    assert len(second.timed) == len(specs) - 4 and not set(first.timed) & set(second.timed)  # resumed, not redone
    assert not partial_path(out).exists()
    assert data["machine"]["threads"] == 1 and data["machine"]["torch"] == torch.__version__
    assert data["machine"]["cpu_model"] and data["sparsity_levels"] == [0.0, 0.5, 0.9]
    assert data["timing"]["metric"] == "cpu_p10_ms" and data["timing"]["statistic"] == "p10"
    for entry in data["entries"].values():  # the lower tail the profile predicts in never exceeds the median
        assert all(0 < t["cpu_p10_ms"] <= t["cpu_ms"] for t in entry["impls"].values())
    table = LatencyTable.load(out)
    assert set(table.entries) == {s.key() for s in specs}
    sparse_1x1 = next(s for s in specs if s.kernel == 1 and s.sparsity == 0.9)
    assert set(table.entries[sparse_1x1.key()]["impls"]) == {"dense", "torch_csr", "scipy_csr"}
    cal = table.calibration("tiny_hw", task.input_shape)
    assert len(cal["networks"]) == 6 and all(c >= 0 for c in cal["coef"])
    arch = space.sample(random.Random(3), task)
    p = table.predict(space.layers(arch, task), "tiny_hw", task.input_shape)
    assert p.ms > 0 and len(p.kernels) == 3
    anchor = table.anchor(space, task, networks=3, repeats=5)  # re-times 3 calibration networks now
    assert anchor.networks == 3 and anchor.speed > 0
    anchored = table.predict(space.layers(arch, task), "tiny_hw", task.input_shape)
    assert anchored.speed == anchor.speed and anchored.ms == pytest.approx(p.ms * anchor.speed)
    assert table.predict(space.layers(arch, task)).ms == pytest.approx(p.plain_sum_ms)  # the plain sum is not scaled
    report = validate(table, space, task, n=3, repeats=5, rounds=1, anchor_networks=2, plot=tmp_path / "v.png")
    assert report["n"] == 3 and (tmp_path / "v.png").stat().st_size > 1000
    for key in ("anchored", "unanchored", "plain_sum"):
        assert 0.0 <= report[key]["within_10"] <= 1.0 and np.isfinite(report[key]["mape"])
    assert report["speed"] > 0 and report["anchor"]["networks"] == 2


def test_sparse_mbv2_kernel_enumeration_covers_traced_networks():
    space, task = get_space("sparse_mbv2"), Task("digits", (1, 8, 8), 10)
    keys = {s.key() for s in space.kernel_specs(task)}
    table = LatencyTable(hand_profile({}, levels=(0.0, 0.5, 0.7, 0.8, 0.9, 0.95)))
    rng = random.Random(7)
    for _ in range(4):
        for spec in space.layers(space.sample(rng, task), task):
            assert table.snap(spec).key() in keys


def test_shipped_profile_predicts_sparse_mbv2_on_digits():
    table = LatencyTable.load(runtime="torch")  # torch's: the exported network below is to_inference's
    assert table.is_default and default_profile_path("torch").name in table.path
    assert table.data["machine"]["cpu_model"] and table.data["timing"]["threads"] == 1
    space, task = get_space("sparse_mbv2"), Task("digits", (1, 16, 16), 10)
    arch = space.sample(random.Random(11), task)
    torch.manual_seed(0)
    model = space.build(arch, task)
    evaluator = LATENCY.get("table")(hw=None, runtime="torch")
    result = evaluator(arch, model, task)
    assert isinstance(result, LatencyResult) and result.source == f"table:{table.name}"
    assert result.ms == result.attrs["predicted_latency_ms"] > result.attrs["kernel_sum_ms"] > 0
    # anchored once per space and input: the speed factor is recorded and scales the calibrated figure
    speed = result.attrs["hw_speed"]
    assert 0.2 < speed < 5 and evaluator.table.speed == {"sparse_mbv2@1x16x16": speed}
    unanchored = LATENCY.get("table")(hw=None, anchor=False, runtime="torch")(arch, model, task)
    assert unanchored.attrs["hw_speed"] == 1.0 and result.ms == pytest.approx(unanchored.ms * speed)
    assert evaluator(arch, model, task).attrs["hw_speed"] == speed  # not re-timed per network
    exported = kernel_choices(to_inference(model, task.input_shape, choose=table.choose))
    predicted = result.attrs["kernels"]
    assert all(predicted[name] == impl for name, impl in exported.items())  # the predicted net is the exported net
    assert all(predicted[name] == "native" for name in predicted if name not in exported)
    with pytest.raises(MissingKernels, match="--out my-cpu.json"):
        table.predict([LayerSpec("linear", 7, 3)], "sparse_mbv2", task.input_shape)


def test_profile_cli_refuses_bad_requests(tmp_path, capsys):
    assert main(["profile", "--space", "sparse_mbv2"]) == 2
    assert "needs --out FILE" in capsys.readouterr().err
    assert main(["profile", "--out", str(tmp_path / "p.json"), "--space", "no_such_space"]) == 2
    assert "unknown search space" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_cuda_semi_structured_only_on_a_gpu():
    spec = LayerSpec("linear", 128, 128, sparsity=0.5)
    got = cuda_semi_structured(spec, repeats=5)
    if torch.cuda.is_available():
        assert set(got) == {"cuda_dense", "cuda_semi_2:4"}
    else:
        assert got == {}


def test_validate_cli_prints_figures_and_writes_the_plot(tmp_path, capsys):
    plot = tmp_path / "v.png"
    assert main(["profile", "--validate", str(default_profile_path("torch")), "--space", "sparse_mbv2", "--n", "2",
                 "--network-repeats", "3", "--plot", str(plot), "--no-progress", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])["reports"][0]
    assert report["n"] == 2 and report["metric"] == "cpu_p10_ms" and report["input_shape"] == [1, 16, 16]
    assert set(report["anchored"]) >= {"mape", "within_10", "spearman"} and report["speed"] > 0
    assert plot.stat().st_size > 1000
