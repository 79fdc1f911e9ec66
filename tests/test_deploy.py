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
def default_export(tmp_path_factory):
    """The default search (sparse_mbv2 on digits, resized 8 -> 16, latency from the shipped
    profile) cut to 1 trial of 1 epoch on 300 training samples, exported:
    (storage URL, export folder, trial)."""
    tmp = tmp_path_factory.mktemp("deploy")
    url = f"sqlite:///{tmp / 'p.db'}"
    # hw_anchor=False: re-timing the anchor networks costs ~4 s CPU; the card labels the factor either way
    study = sparsenas.search(space="sparse_mbv2", trials=1, epochs=1, limit=300, storage=url, hw_anchor=False,
                             progress=False)
    out = tmp / "found"
    rc, _, err = run_cli(["export", "--storage", url, "--trial", "0", "--out", str(out), "--format", "json,pt,onnx"])
    assert rc == 0, err
    return url, out, load_study(url, study.study_name).trials[0]


def test_exported_onnx_takes_raw_digits_and_scores_the_trials_test_accuracy(default_export):
    ort = pytest.importorskip("onnxruntime")
    _, out, trial = default_export
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
    assert (contract["raw_shape"], contract["input_shape"], contract["resize"]) == ([1, 8, 8], [1, 16, 16], 16)
    assert contract["value_range"] == [0.0, 1.0] and contract["channels"] == "gray"
    card = (out / "card.md").read_text()
    assert "## Input" in card and "resize to 16x16 (bilinear" in card and "take the raw input" in card


def test_card_and_inspect_print_the_same_latency_for_the_same_export(default_export):
    _, out, trial = default_export
    card = (out / "card.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| predicted now by profile"))
    assert "no speed anchor" in row and "`nas inspect --runtime onnxruntime`" in row
    card_ms = row.rstrip(" |").rsplit("|", 1)[1].strip()
    rc, stdout, err = run_cli(["inspect", str(out / "arch.json"), "--runtime", "onnxruntime", "--json"])
    assert rc == 0, err
    assert f"{json.loads(stdout.strip().splitlines()[-1])['predicted_latency_ms']:.4f}" == card_ms
    assert f"calibrated network latency {card_ms} ms" in stdout
    assert "us (onnxruntime)" in stdout and "…" not in stdout  # `nas inspect > file`: no column cut
    # the search's figure says what it is: the profile's, scaled by the speed anchor then
    searched = next(line for line in card.splitlines() if line.startswith("| latency at search time"))
    assert "table:cpu-x86-2core-onnxruntime" in searched and f"{trial.user_attrs['latency_ms']:.4f}" in searched
    assert ("x speed anchor" in searched) == (trial.user_attrs["hw_speed"] != 1.0)


def test_a_plugin_that_cannot_be_imported_is_named(default_export, tmp_path):
    _, out, _ = default_export
    doc = json.loads((out / "arch.json").read_text())
    doc["space"], doc["plugins"] = "gone_space", {"space": "no_such_module_xyz:Gone"}  # as a plug-in records it
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
