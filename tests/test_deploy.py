"""From search to deployed model: the export carries its input contract (raw data in, the trial's
accuracy out, in real onnxruntime) and its plug-in space (tests/test_plugins.py finds it again in a
fresh process)."""
import json
import sys
from pathlib import Path

import pytest
from torch import nn

import sparsenas
from sparsenas.data import raw_split
from sparsenas.errors import SparseNASError
from sparsenas.search_spaces.base import SearchSpace
from sparsenas.tracking import load_study

from _small_study import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SPACE = "tiny_space:TinyMLP"


class WrongOutputs(SearchSpace):
    """A plug-in with a bug: its networks return 3 logits whatever the task."""

    name = "wrong_outputs"
    description = "returns 3 logits"

    def choices(self, task):
        return {"width": [4, 8]}

    def build(self, arch, task):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(3))


@pytest.fixture(scope="module")
def plugin_export(tmp_path_factory):
    """A 1-trial search of the example plug-in space on digits resized 8 -> 12 (so the pipeline
    resizes and normalises), exported: (storage URL, export folder, trial)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        tmp = tmp_path_factory.mktemp("deploy")
        url = f"sqlite:///{tmp / 'p.db'}"
        study = sparsenas.search(space=SPACE, dataset="digits", input_size=12, trials=1, epochs=1, limit=300,
                                 storage=url, latency="measured", progress=False)
        out = tmp / "found"
        rc, _, err = run_cli(["export", "--storage", url, "--trial", "0", "--out", str(out), "--format", "json,pt,onnx"])
        assert rc == 0, err
        yield url, out, load_study(url, study.study_name).trials[0]
    finally:
        sys.path.remove(str(EXAMPLES))


def test_exported_onnx_takes_raw_digits_and_scores_the_trials_test_accuracy(plugin_export):
    ort = pytest.importorskip("onnxruntime")
    _, out, trial = plugin_export
    x, y = raw_split("digits", "test", seed=0)  # 8x8, pixels / 16: before resizing and normalising
    assert x.shape[1:] == (1, 8, 8) and 0 <= x.min() and x.max() <= 1
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_acc = float((session.run(None, {"input": x})[0].argmax(1) == y).mean())
    recorded = trial.user_attrs["test_accuracy"]
    assert abs(onnx_acc - recorded) <= 0.005, (onnx_acc, recorded)
    model = sparsenas.load(out)
    torch_acc = float((model(model.preprocess(x)).argmax(1).numpy() == y).mean())
    assert abs(torch_acc - recorded) <= 0.005, (torch_acc, recorded)
    doc = json.loads((out / "arch.json").read_text())
    contract = doc["input"]
    assert (contract["raw_shape"], contract["input_shape"], contract["resize"]) == ([1, 8, 8], [1, 12, 12], 12)
    assert contract["value_range"] == [0.0, 1.0] and contract["channels"] == "gray"
    assert doc["plugins"] == {"space": SPACE}
    card = (out / "card.md").read_text()
    assert "## Input" in card and "resize to 12x12 (bilinear" in card and "take the raw input" in card


def test_a_plugin_that_cannot_be_imported_is_named(plugin_export, tmp_path):
    _, out, _ = plugin_export
    doc = json.loads((out / "arch.json").read_text())
    doc["space"], doc["plugins"] = "gone_space", {"space": "no_such_module_xyz:Gone"}
    (tmp_path / "arch.json").write_text(json.dumps(doc))
    for argv in (["inspect", str(tmp_path / "arch.json")], ["train", str(tmp_path), "--no-progress"]):
        rc, _, err = run_cli(argv)
        assert rc == 2 and "Traceback" not in err, err
        assert "plug-in search space 'no_such_module_xyz:Gone'" in err and "cannot import module 'no_such_module_xyz'" in err
    with pytest.raises(SparseNASError, match="no_such_module_xyz"):
        sparsenas.load(tmp_path)


def test_search_takes_space_and_dataset_objects(tmp_path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        from tiny_dataset import stripes
        from tiny_space import TinyMLP

        url = f"sqlite:///{tmp_path / 'o.db'}"
        study = sparsenas.search(space=TinyMLP(), dataset=stripes, trials=1, epochs=1, storage=url,
                                 latency="measured", progress=False)
    finally:
        sys.path.remove(str(EXAMPLES))
    assert study.study_name == "tiny_mlp-stripes-tpe"
    config = study.user_attrs["config"]
    assert (config["space"], config["dataset"]) == (SPACE, "tiny_dataset:stripes")  # importable again


def test_a_space_with_the_wrong_output_shape_stops_before_any_trial(tmp_path):
    rc, _, err = run_cli(["search", "--space", "test_deploy:WrongOutputs", "--dataset", "digits", "--input-size", "8",
                          "--storage", f"sqlite:///{tmp_path / 'w.db'}", "--no-progress"])
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "expected logits of shape (2, 10)" in err and "(2, 3)" in err
    assert not (tmp_path / "w.db").exists()
    with pytest.raises(SparseNASError, match=r"expected logits of shape \(2, 10\)"):
        sparsenas.search(space=WrongOutputs, dataset="digits", input_size=8, storage=f"sqlite:///{tmp_path / 'x.db'}",
                         progress=False)
