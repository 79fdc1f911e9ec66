"""Inference runtimes: profiles per runtime, the exported artifact's kernels, missing runtimes,
G2G grouped lowering, model size."""
from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest
import torch
from torch import nn

from _small_study import run_cli
from sparsenas.export import write_export
from sparsenas.hwprofiles import LatencyTable, read_profile
from sparsenas.hwprofiles.profile import write_json_atomic
from sparsenas.hwprofiles.profiler import KernelTimer, run_profile
from sparsenas.hwprofiles.validate import validate
from sparsenas.ops import G2GConv2d, SparseConv2d, to_inference, trace_layers
from sparsenas.ops.plain import GroupedPointwise, to_plain
from sparsenas.ops.spec import LayerSpec, trace_named_layers
from sparsenas.runtimes import RUNTIMES, RuntimeNotInstalled, get_runtime
from sparsenas.runtimes.onnxruntime import run_file
from sparsenas.task import Task
from test_hwprofiles import TinySpace, hand_profile

pytest.importorskip("onnxruntime")

def _raises(fn) -> bool:
    try:
        fn()
    except RuntimeNotInstalled:
        return True
    return False


INSTALLED = [n for n, cls in RUNTIMES.items() if not _raises(cls.version)]


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino", "mnn"])
def test_a_profile_per_runtime_from_a_tiny_network(tmp_path, runtime):
    if runtime not in INSTALLED:
        pytest.skip(f"runtime {runtime} is not installed (pip install 'sparsenas[{RUNTIMES.get(runtime).extra}]')")
    space, task = TinySpace(), Task("synthetic", (1, 6, 6), 3)
    out = tmp_path / f"tiny-{runtime}.json"
    data = run_profile([(space, task)], out, timer=KernelTimer(warmup=1, repeats=10, rounds=2, runtime=runtime),
                       calibration_networks=6, calibration_repeats=10, progress=False, log=lambda s: None)
    rt = get_runtime(runtime)
    assert data["runtime"] == {"name": runtime, "version": rt.version()} == data["machine"]["runtime"]
    table = LatencyTable.load(out, runtime=runtime)
    assert table.runtime_name == runtime
    sparse = sorted((s for s in space.kernel_specs(task) if s.kernel == 1 and s.op == "conv2d"),
                    key=lambda s: (s.cin, s.sparsity))
    w16 = [s for s in sparse if s.cin == 16]
    impls = [set(table.entries[s.key()]["impls"]) for s in w16]
    if runtime == "torch":  # CSR kernels are timed for the sparse layers
        assert impls == [{"native"}, {"dense", "torch_csr", "scipy_csr"}, {"dense", "torch_csr", "scipy_csr"}]
    elif runtime == "mnn":  # MNN's sparse kernel from its own threshold (30% zeros) up
        assert impls == [{"native"}, {"native", "sparse1"}, {"native", "sparse1"}]
    else:  # one dense Conv whatever the sparsity: timed once, the same figure at every level
        assert impls == [{"native"}] * 3
        assert len({json.dumps(table.entries[s.key()]["impls"]) for s in w16}) == 1
        assert table.choose(w16[-1]) == "dense"
    arch = space.sample(random.Random(1), task)
    assert table.predict(space.layers(arch, task), space.name, task.input_shape).ms > 0
    report = validate(table, space, task, n=3, repeats=10, rounds=2, anchor_networks=2)
    assert report["runtime"]["name"] == runtime and report["n"] == 3
    assert all(n["measured_ms"] > 0 for n in report["networks"])
    with pytest.raises(Exception, match="do not mix"):  # another runtime never extends this profile
        other = "torch" if runtime != "torch" else "onnxruntime"
        run_profile([(space, task)], out, timer=KernelTimer(repeats=5, runtime=other), progress=False,
                    log=lambda s: None)


def block_layer(cin: int = 16, cout: int = 32, groups: int = 4, grouping: str = "index") -> G2GConv2d:
    torch.manual_seed(0)
    return G2GConv2d(cin, cout, ensembles=groups, p_inter=0.0, graph="block", grouping=grouping, seed=3).eval()


@pytest.mark.parametrize("grouping", ["index", "interleaved", "random"])
def test_g2g_grouped_lowering_gives_the_masked_layers_outputs(grouping, tmp_path):
    layer = block_layer(grouping=grouping)
    spec = trace_layers(layer, (16, 5, 5))[0]
    assert spec.blocks == 4 and spec.sparsity == pytest.approx(0.75) and spec.permuted == (grouping != "index")
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        ref = layer(x)
        grouped = to_inference(layer, (16, 5, 5), choose=lambda s: "grouped")
        assert isinstance(grouped, GroupedPointwise) and grouped.conv.groups == 4
        torch.testing.assert_close(grouped(x), ref, rtol=1e-5, atol=1e-5)
        plain = to_plain(layer, (16, 5, 5), choose=lambda s: "grouped")
        torch.testing.assert_close(plain(x), ref, rtol=1e-5, atol=1e-5)
    # the same lowering in the ONNX file, run by ONNX Runtime
    rt = get_runtime("onnxruntime")
    path = rt.save(layer, (16, 5, 5), lambda s: "grouped", tmp_path / "g.onnx")
    np.testing.assert_allclose(run_file(path, x), ref.numpy(), rtol=1e-4, atol=1e-5)
    # a layer that is not block-diagonal is refused, not silently changed
    er = G2GConv2d(16, 32, ensembles=4, p_inter=0.3, graph="er", seed=1)
    assert trace_layers(er, (16, 5, 5))[0].blocks == 0


def _conv_groups(onnx_path) -> list[int]:
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    return [next((a.i for a in n.attribute if a.name == "group"), 1) for n in graph.node if n.op_type == "Conv"]


@pytest.mark.parametrize("grouped_ms,expect", [(0.01, 4), (0.09, 1)])
def test_exported_artifact_runs_the_kernels_the_table_chose(tmp_path, grouped_ms, expect):
    model = nn.Sequential(block_layer(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3))
    shape = (16, 5, 5)
    spec, fc = trace_layers(model, shape)
    data = hand_profile({spec: {"native": 0.05, "grouped": grouped_ms}, fc: {"native": 0.01}}, levels=(0.0, 0.75))
    data["runtime"] = {"name": "onnxruntime", "version": get_runtime("onnxruntime").version()}
    write_json_atomic(tmp_path / "ort.json", data)
    table = LatencyTable.load(tmp_path / "ort.json", runtime="onnxruntime")
    predicted = table.predict([spec, fc]).kernels
    assert predicted[0] == ("grouped" if expect == 4 else "native")
    from sparsenas.arch import Arch

    res = write_export(model, Arch("toy", 1, {}), Task("synthetic", shape, 3), tmp_path / "out", formats="json",
                       runtime="onnxruntime", choose=table.choose)
    assert "model.onnx" in res.files and res.onnx_max_abs_diff <= 1e-4
    assert _conv_groups(tmp_path / "out" / "model.onnx") == [expect]
    doc = json.loads((tmp_path / "out" / "arch.json").read_text())
    assert doc["runtime"]["name"] == "onnxruntime" and doc["runtime"]["artifact"] == "model.onnx"
    assert doc["runtime"]["kernels"]["0"] == predicted[0]
    with pytest.raises(Exception, match="times runtime 'onnxruntime'"):
        LatencyTable.load(tmp_path / "ort.json", runtime="torch")


def test_a_runtime_that_is_not_installed_names_its_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails as if not installed
    with pytest.raises(RuntimeNotInstalled, match=r"pip install 'sparsenas\[openvino\]'"):
        get_runtime("openvino")
    rc, out, err = run_cli(["search", "--space", "sparse_mbv2", "--runtime", "openvino", "--trials", "1",
                            "--storage", "sqlite:///:memory:", "--no-progress"])
    assert rc == 2 and "sparsenas[openvino]" in err and "Traceback" not in err
    rc, out, err = run_cli(["search", "--runtime", "tensorrt", "--storage", "sqlite:///:memory:", "--no-progress"])
    assert rc == 2 and "unknown runtime 'tensorrt'" in err and "onnxruntime" in err


def test_weight_bytes_take_the_smallest_encoding_each_runtime_loads():
    torch.manual_seed(0)
    model = nn.Sequential(SparseConv2d(64, 128, 1, bias=False, sparsity=0.95), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 3)).eval()
    shape, dense = (64, 4, 4), lambda s: "dense"
    ort = get_runtime("onnxruntime").weight_bytes(model, shape, dense)
    conv_dense = 64 * 128 * 4
    assert ort["dense_bytes"] >= conv_dense and ort["bytes"] < ort["dense_bytes"] - conv_dense * 0.8
    csr = get_runtime("torch").weight_bytes(model, shape, lambda s: "torch_csr" if s.sparsity else "dense")
    as_dense = get_runtime("torch").weight_bytes(model, shape, dense)
    assert csr["bytes"] < as_dense["bytes"] and as_dense["bytes"] == as_dense["dense_bytes"]


def _plain_count(model: nn.Module, shape: tuple[int, ...], choose) -> dict[str, int]:
    """ONNX Runtime's weight bytes counted the long way: on the converted plain network the exporter writes."""
    from sparsenas.runtimes.base import coo_bytes

    dense = sparse = 0
    for m in to_plain(model, shape, choose).modules():
        tensors = []
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            tensors.append(m.weight.detach())
            dense, sparse = dense + m.weight.shape[0] * 4, sparse + m.weight.shape[0] * 4
        elif isinstance(m, GroupedPointwise):
            tensors += [t for t in (m.perm_in, m.unperm_out) if t is not None]
        for t in tensors:
            b = t.numel() * t.element_size()
            dense, sparse = dense + b, sparse + (min(b, coo_bytes(t)) if t.dim() > 1 else b)
    return {"bytes": sparse, "dense_bytes": dense}


def test_onnxruntime_weight_bytes_count_the_network_as_its_plain_conversion_does():
    """The size is counted on the network's own masked tensors (no copy); it must equal the count on
    the plain network the exporter converts: sparse, G2G (grouped or not, permuted or not), trained
    sparse_mbv2 networks."""
    from sparsenas.search_spaces import get_space

    rt = get_runtime("onnxruntime")
    grouped, dense = (lambda s: "grouped" if s.blocks else "dense"), (lambda s: "dense")
    shape = (16, 5, 5)
    toy = nn.Sequential(block_layer(grouping="index"), nn.ReLU(), block_layer(32, 32, grouping="interleaved"),
                        SparseConv2d(32, 8, 3, sparsity=0.9), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 3)).eval()
    for choose in (grouped, dense):
        assert rt.weight_bytes(toy, shape, choose) == _plain_count(toy, shape, choose)
    assert rt.weight_bytes(toy, shape, grouped) != rt.weight_bytes(toy, shape, dense)
    layer = block_layer(grouping="interleaved")  # the network is one sparse layer
    assert rt.weight_bytes(layer, shape, grouped) == _plain_count(layer, shape, grouped)
    space, task = get_space("sparse_mbv2"), Task("digits", (1, 8, 8), 10)
    rng, conns = random.Random(3), set()
    for i in range(6):
        arch = space.sample(rng, task)
        if i % 2:  # every layer a G2G one: block-diagonal layers to group
            arch = arch.replace(**{k: "g2g" for k, v in arch.choices.items() if k.endswith("_conn")})
        conns |= {v for k, v in arch.choices.items() if k.endswith("_conn")}
        model = space.build(arch, task).eval()
        traced = trace_named_layers(model, task.input_shape)  # what a latency evaluator hands over
        for choose in (grouped, dense):
            expected = _plain_count(model, task.input_shape, choose)
            assert rt.weight_bytes(model, task.input_shape, choose) == expected
            assert rt.weight_bytes(model, task.input_shape, choose, traced) == expected
    assert "g2g" in conns and "magnitude" in conns


@pytest.mark.parametrize("runtime", ["torch", "mnn"])
def test_inspect_prints_per_layer_time_in_a_runtime(tmp_path, capsys, runtime):
    from sparsenas.arch import Arch
    from sparsenas.search_spaces import get_space

    if runtime not in INSTALLED:
        pytest.skip(f"runtime {runtime} is not installed")
    space, task = get_space("sparse_mbv2"), Task("digits", (1, 16, 16), 10)
    arch = space.sample(random.Random(5), task)
    if runtime == "mnn":  # the shipped profile picks MNN's sparse kernels for 95%-sparse 1x1 convs
        arch = arch.replace(head_sparsity=0.95, head_conn="magnitude_oc4")
    path = tmp_path / "arch.json"
    path.write_text(arch.to_json())
    rc, out, err = run_cli(["inspect", str(path), "--runtime", runtime, "--json"])
    assert rc == 0, err
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["runtime"] == runtime and doc["predicted_latency_ms"] > 0
    assert all(layer["predicted_ms"] > 0 and layer["kernel"] for layer in doc["layers"])
    if runtime == "mnn":
        assert {"sparse1", "sparse4"} & {layer["kernel"] for layer in doc["layers"]}
    assert isinstance(Arch.from_json(path.read_text()), Arch)
    rc, out, err = run_cli(["inspect", str(path), "--hw", str(path)])
    assert rc == 2 and "--runtime" in err


@pytest.mark.slow
def test_size_as_a_search_objective(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 's.db'}"
    rc, out, err = run_cli(["search", "--space", "sparse_mbv2", "--runtime", "torch", "--objectives",
                            "accuracy,latency,size", "--trials", "2", "--epochs", "1", "--limit", "120",
                            "--storage", url, "--study", "sz", "--no-progress", "--no-hw-anchor", "--json"])
    assert rc == 0, err
    study = optuna.load_study(study_name="sz", storage=url)
    assert len(study.directions) == 3 and study.user_attrs["runtime"] == "torch"
    for t in study.trials:
        assert t.values[2] == t.user_attrs["model_bytes"] <= t.user_attrs["model_bytes_dense"]
        assert t.user_attrs["runtime"] == "torch"
    rc, out, err = run_cli(["search", "--objectives", "latency,accuracy", "--storage", url, "--no-progress"])
    assert rc == 2 and "starting with accuracy" in err


def test_every_default_is_the_one_default_runtime():
    """What takes a runtime and is not told one uses DEFAULT_RUNTIME (the runtime a search judges)."""
    from sparsenas.evaluators import MeasuredLatency
    from sparsenas.hwprofiles import default_profile_path, layer_impls
    from sparsenas.runtimes import DEFAULT_RUNTIME

    default = get_runtime(None)
    assert default.name == DEFAULT_RUNTIME
    assert LatencyTable.load().runtime_name == DEFAULT_RUNTIME
    assert default_profile_path() == default_profile_path(DEFAULT_RUNTIME)
    assert KernelTimer().runtime is default and MeasuredLatency().runtime is default
    spec = LayerSpec("conv2d", 32, 32, 1, 1, 1, (4, 4), 0.75, blocks=4)
    assert layer_impls(spec) == default.impls(spec)


def test_the_sparse_choice_is_the_runtime_s_own():
    """Without a profile, each runtime picks the kernel that makes most of the zeros its own way:
    torch times its sparse kernels, the others take the last they list (grouped for a G2G layer)."""
    from sparsenas.ops import measured_choice

    spec = LayerSpec("conv2d", 32, 32, 1, 1, 1, (4, 4), 0.75, blocks=4)
    assert get_runtime("torch", check=False).sparse_choice() is measured_choice
    assert get_runtime("onnxruntime", check=False).sparse_choice()(spec) == "grouped"
