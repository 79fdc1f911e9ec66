"""MNN as a runtime: per-layer kernels written into model.mnn, block masks, and no package installed
or log sent at run time (MNN's Python converter script would do both)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest
import torch
from torch import nn

from sparsenas.ops import SparseConv2d
from sparsenas.ops.masks import block_magnitude_mask
from sparsenas.ops.spec import trace_named_layers

MNN = pytest.importorskip("MNN")
pytest.importorskip("onnx")

from sparsenas.runtimes import get_runtime  # noqa: E402
from sparsenas.runtimes.mnn import model_kernels, run_mnn  # noqa: E402


def three_kinds() -> nn.Module:
    """Three 1x1 convs at 90%: unstructured (table: dense), unstructured (sparse, 1-channel blocks)
    and 4-output-channel blocks (sparse, 4-channel blocks); BatchNorm statistics away from identity
    so the outputs depend on the input."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                        SparseConv2d(32, 64, 1, sparsity=0.9), nn.BatchNorm2d(64), nn.ReLU(),
                        SparseConv2d(64, 64, 1, sparsity=0.9), nn.ReLU(),
                        SparseConv2d(64, 32, 1, sparsity=0.9, mask_kind="magnitude_oc4"), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.02, 0.1)
        for m in net.modules():  # a uniform scale keeps every mask: signals that carry the input through
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(4.0)
    return net.eval()


def table_for(net: nn.Module, tmp_path):
    """A hand-written MNN profile whose timings make the table pick, per 1x1 layer: dense (layer 3),
    sparse with 1-channel blocks (layer 6), sparse with 4-channel blocks (layer 8)."""
    from sparsenas.hwprofiles import LatencyTable
    from sparsenas.hwprofiles.profile import write_json_atomic
    from test_hwprofiles import hand_profile

    fastest = {"3": "native", "6": "sparse1", "8": "sparse4"}
    times = {}
    for name, spec in trace_named_layers(net, (3, 8, 8)):
        impls = get_runtime("mnn").impls(spec)
        spec = dataclasses.replace(spec, sparsity=round(spec.sparsity, 1))  # a profile's level
        times[spec] = {i: (0.01 if i == fastest.get(name, "native") else 0.05) for i in impls}
    data = hand_profile(times)
    data["runtime"] = {"name": "mnn", "version": get_runtime("mnn").version()}
    write_json_atomic(tmp_path / "mnn.json", data)
    return LatencyTable.load(tmp_path / "mnn.json", runtime="mnn")


def test_the_table_s_kernel_per_layer_is_the_kernel_in_model_mnn(tmp_path):
    from sparsenas.arch import Arch
    from sparsenas.export import write_export
    from sparsenas.task import Task

    net = three_kinds()
    rt = get_runtime("mnn")
    specs = dict(trace_named_layers(net, (3, 8, 8)))
    assert specs["8"].oc_block == 4 and specs["6"].oc_block == 0
    assert rt.impls(specs["6"]) == ("native", "sparse1")
    assert rt.impls(specs["8"]) == ("native", "sparse1", "sparse4")
    table = table_for(net, tmp_path)
    predicted = table.predict(list(specs.values())).kernels
    assert predicted == ["native", "native", "sparse1", "sparse4", "native"]
    res = write_export(net, Arch("toy", 1, {}), Task("synthetic", (3, 8, 8), 5), tmp_path / "out", formats="json",
                       runtime="mnn", choose=table.choose)
    assert "model.mnn" in res.files and res.mnn_max_abs_diff <= 1e-4
    blob = (tmp_path / "out" / "model.mnn").read_bytes()
    # stem, the three 1x1 convs, classifier (MNN runs the Linear as a 1x1 conv), read off model.mnn
    assert model_kernels(blob) == predicted
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(ref[0] - ref[1]).max() > 0.1  # the outputs compared depend on the input
    for xi, r in zip(x, ref):
        assert np.abs(run_mnn(blob, xi[None].numpy())[0] - r).max() < 1e-4 * max(1.0, np.abs(r).max())
    dense = rt.mnn(net, (3, 8, 8), lambda spec: "dense")
    assert model_kernels(dense) == ["native"] * 5 and len(dense) > len(blob)
    sizes = rt.weight_bytes(net, (3, 8, 8), table.choose)
    assert sizes["bytes"] < sizes["dense_bytes"]


def test_block_mask_zeros_whole_blocks_of_four_output_channels():
    w = torch.randn(10, 6, 1, 1)
    m = block_magnitude_mask(w, 0.5)[:, :, 0, 0]
    for a, b in ((0, 4), (4, 8), (8, 10)):  # the last, smaller group is a block too
        assert ((m[a:b] == 0).all(0) | (m[a:b] == 1).all(0)).all()
    assert abs(1 - float(m.mean()) - 0.5) <= 4 / 60
    layer = SparseConv2d(16, 32, 1, sparsity=0.9, mask_kind="magnitude_oc4")
    assert layer.oc_block == 4 and abs(1 - layer.density - 0.9) < 0.01


def test_converting_installs_nothing_and_leaves_onnx_importable(monkeypatch, tmp_path):
    """MNN's mnnconvert script would pip-install a logging SDK (it downgraded protobuf and broke
    `import onnx` here) and post logs: converting must start no process at all."""
    before = version("protobuf")

    def refuse(*args, **kwargs):
        raise AssertionError(f"a process was started at run time: {args!r}")

    for mod, name in ((subprocess, "Popen"), (subprocess, "run"), (subprocess, "call"), (subprocess, "check_call"),
                      (subprocess, "check_output"), (os, "system"), (os, "popen")):
        monkeypatch.setattr(mod, name, refuse)
    net = three_kinds()
    blob = get_runtime("mnn").mnn(net, (3, 8, 8), table_for(net, tmp_path).choose)
    assert model_kernels(blob)[2] == "sparse1"
    assert not [m for m in sys.modules if m.startswith("MNN.tools")]
    monkeypatch.undo()
    out = subprocess.run([sys.executable, "-c", "import onnx, google.protobuf as p; print(p.__version__)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == before == version("protobuf")


def test_export_writes_model_mnn_checked_against_torch(tmp_path):
    import random

    from sparsenas.export import write_export
    from sparsenas.search_spaces import SPACES
    from sparsenas.task import Task

    space, task = SPACES.get("sparse_mbv2")(), Task("digits", (1, 8, 8), 10)
    arch = space.sample(random.Random(3), task)
    torch.manual_seed(0)
    model = space.build(arch, task).eval()
    choose = lambda spec: "sparse1" if spec.sparsity >= 0.8 else "native"  # noqa: E731
    res = write_export(model, arch, task, tmp_path / "found", formats="json", runtime="mnn", choose=choose)
    assert "model.mnn" in res.files and res.mnn_max_abs_diff is not None and res.mnn_max_abs_diff < 1e-4
    kernels = get_runtime("mnn").kernels_in(model, task.input_shape, choose)
    assert "sparse1" in kernels.values()
    assert model_kernels((tmp_path / "found" / "model.mnn").read_bytes()) == list(kernels.values())
    assert "MNN vs PyTorch" in (tmp_path / "found" / "card.md").read_text()


def test_dass_supernet_mixes_block_masks_like_magnitude():
    from sparsenas.search_spaces import get_space
    from sparsenas.supernets.mixed import build_mixed_supernet
    from sparsenas.task import Task

    space, task = get_space("sparse_mbv2"), Task("synthetic", (1, 8, 8), 3)
    net = build_mixed_supernet(space, task, target_sparsity=0.9, conns=["magnitude", "magnitude_oc4"])
    assert "k3_sparse_oc4_0.9" in net.candidate_names["blocks"]
    blocked = [m for m in net.modules() if getattr(m, "mask_kind", None) == "score_oc4"]
    assert blocked and all(m.oc_block == 4 and m.score is not None for m in blocked)
    net.set_masked(True)
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    assert blocked[0].score.grad is not None  # scores learn through the straight-through block top-k
    w = blocked[0].current_mask().detach().reshape(blocked[0].out_channels, -1)
    full = w.shape[0] // 4 * 4
    groups = w[:full].reshape(-1, 4, w.shape[1])
    assert ((groups == 0).all(1) | (groups == 1).all(1)).all() and abs(1 - float(w.mean()) - 0.9) < 0.02
    with torch.no_grad():
        net.alpha["head"][0, list(net.head.names).index("sparse_oc4_0.9")] = 5.0
    arch = net.derive()
    assert arch.choices["head_conn"] == "magnitude_oc4" and arch.choices["head_sparsity"] == 0.9
    built = space.build(arch, task)
    assert any(getattr(m, "mask_kind", None) == "magnitude_oc4" for m in built.modules())


def test_g2g_blocks_exported_grouped_for_another_runtime_map_onto_mnn_s_convs(tmp_path):
    """A choice made for another runtime (onnxruntime's "grouped") lowers a block-diagonal G2G layer
    to a grouped conv in model.onnx; MNN's converter would split that into ops no layer maps to, so
    model.mnn holds it as the plain masked conv and every other layer's kernel stays on its own conv."""
    from sparsenas.arch import Arch
    from sparsenas.export import write_export
    from sparsenas.ops import G2GConv2d
    from sparsenas.task import Task

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                        G2GConv2d(16, 32, ensembles=4, graph="block", grouping="interleaved"), nn.ReLU(),
                        SparseConv2d(32, 32, 1, sparsity=0.9), nn.ReLU(),
                        G2GConv2d(32, 32, ensembles=4, graph="block", seed=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(4.0)
    net.eval()
    specs = dict(trace_named_layers(net, (3, 8, 8)))
    assert specs["2"].blocks == 4 and specs["6"].blocks == 4 and specs["4"].blocks == 0
    picks = {specs["2"]: "grouped", specs["4"]: "sparse1", specs["6"]: "sparse1"}
    choose = lambda spec: picks.get(spec, "dense")  # noqa: E731
    res = write_export(net, Arch("toy", 1, {}), Task("synthetic", (3, 8, 8), 5), tmp_path / "out",
                       formats="json,onnx,mnn", runtime="onnxruntime", choose=choose)
    onnx = __import__("onnx").load(str(tmp_path / "out" / "model.onnx"))
    groups = [a.i for n in onnx.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert 4 in groups  # model.onnx keeps the grouped lowering
    assert res.mnn_max_abs_diff is not None and res.mnn_max_abs_diff <= 1e-4
    blob = (tmp_path / "out" / "model.mnn").read_bytes()
    # stem, G2G (grouped elsewhere: dense here), magnitude, G2G on the sparse kernel, classifier
    assert model_kernels(blob) == ["native", "native", "sparse1", "sparse1", "native"]
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(ref[0] - ref[1]).max() > 0.1
    for xi, r in zip(x, ref):
        assert np.abs(run_mnn(blob, xi[None].numpy())[0] - r).max() < 1e-4 * max(1.0, np.abs(r).max())
    # exported for MNN with that choice, arch.json names the kernels model.mnn runs (the G2G layer: dense)
    write_export(net, Arch("toy", 1, {}), Task("synthetic", (3, 8, 8), 5), tmp_path / "for-mnn", formats="json,mnn",
                 runtime="mnn", choose=choose)
    labels = json.loads((tmp_path / "for-mnn" / "arch.json").read_text())["runtime"]["kernels"]
    assert labels == {"0": "native", "2": "native", "4": "sparse1", "6": "sparse1", "10": "native"}
    in_order = [labels[name] for name, _ in trace_named_layers(net, (3, 8, 8))]  # arch.json sorts its keys
    assert in_order == model_kernels((tmp_path / "for-mnn" / "model.mnn").read_bytes())
    # the grouped graph itself cannot take per-layer kernels: refused, naming the layer, not mis-placed
    from sparsenas.runtimes.mnn import ConversionError, conv_kernels, convert

    with pytest.raises(ConversionError, match=r"layer 1 of 5 \(out 32, in 16, kernel 1, groups 1\)"):
        convert(onnx.SerializeToString(), conv_kernels(net, (3, 8, 8), choose))
