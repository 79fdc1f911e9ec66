"""nas export / nas train / sparsenas.load on a real search stored in sqlite, with real onnxruntime."""
import json
import shutil
import warnings

import numpy as np
import optuna
import pytest
import torch
from torch import nn

import sparsenas
from sparsenas.data import load_dataset, raw_split
from sparsenas.data.contract import InputContract
from sparsenas.evaluators import accuracy
from sparsenas.export import ExportError, layer_sparsity, load_csr, read_arch, write_export
from sparsenas.ops import SparseMixin, sparse_modules
from sparsenas.search_spaces import get_space
from sparsenas.runtimes import DEFAULT_RUNTIME
from sparsenas.tracking import arch_of, load_study, load_weights

from _small_study import STUDY, run_cli, small_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return small_study(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(study, tmp_path_factory):
    url, _ = study
    out = tmp_path_factory.mktemp("exp") / "found"
    # the legacy exporter (the default) takes ~0.5 s against ~10 s for dynamo, tested below, marked slow
    rc, stdout, err = run_cli(["export", "--storage", url, "--study", STUDY, "--trial", "0", "--out", str(out),
                               "--sparse-format", "csr", "--onnx-exporter", "legacy", "--json"])
    assert rc == 0, err
    return out, json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained_model(study):
    """The network trial 0 trained in the search, rebuilt from its saved weights (the Optuna artifact)."""
    url, _ = study
    st = load_study(url, STUDY)
    trial = st.trials[0]
    state = load_weights(url, st, trial)
    assert state is not None, "the search saves trained weights as an artifact"
    model = get_space("sparse_mbv2").build(arch_of(trial), sparsenas.Task.from_dict(st.user_attrs["task"]))
    model.load_state_dict(state)
    return model.eval(), trial


def test_search_saves_weights_as_artifacts_of_each_trial(study):
    url, db = study
    st = load_study(url, STUDY)
    folder = db.parent / "t-artifacts"
    assert st.user_attrs["artifact_dir"] == str(folder)
    for t in st.trials:
        metas = optuna.artifacts.get_all_artifact_meta(t, storage=st._storage)
        assert [m.artifact_id for m in metas] == [t.user_attrs["weights_artifact"]]
        assert (folder / t.user_attrs["weights_artifact"]).is_file()


def test_export_writes_every_format_and_load_gives_the_trained_network(exported, trained_model):
    out, result = exported
    assert sorted(p.name for p in out.iterdir()) == ["arch.json", "card.md", "model.onnx", "model.pt", "model.ts",
                                                      "weights_csr.pt"]
    assert result["exports"][0]["files"] == sorted(p.name for p in out.iterdir())
    model, trial = trained_model
    loaded = sparsenas.load(out)
    assert isinstance(loaded, nn.Module) and not loaded.training
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # the weights are the trained ones: the loaded network scores the trial's validation accuracy
    data = load_dataset("synthetic", seed=0)
    assert accuracy(loaded, data.val, torch.device("cpu")) == trial.values[0]
    # arch.json alone rebuilds the network: architecture + task
    arch, task, doc = read_arch(out / "arch.json")
    assert arch == arch_of(trial) and task.input_shape == (1, 8, 8) and doc["source"]["trial"] == 0
    assert set(torch.load(out / "model.pt", weights_only=True)) == set(model.state_dict())


def test_sparse_layers_keep_masks_and_csr_holds_the_same_weights(exported):
    out, _ = exported
    loaded = sparsenas.load(out)
    layers = sparse_modules(loaded)
    assert layers, "the exported architecture has sparse layers"
    for m in layers:
        assert torch.all(m.weight[m.mask == 0] == 0)  # zeros in the dense weights where the mask is 0
        assert abs(float((m.weight == 0).float().mean()) - m.target_sparsity) < 0.01
    csr = load_csr(out / "weights_csr.pt")
    state = torch.load(out / "model.pt", weights_only=True)
    with pytest.raises(sparsenas.errors.SparseNASError, match="not a sparsenas weights_csr.pt"):  # a state dict is not one
        load_csr(out / "model.pt")
    assert len(csr) == len(layers)
    for name, w in csr.items():
        assert torch.equal(w, state[f"{name}.weight"])
    plain = sparsenas.load(out, plain=True)
    assert not any(isinstance(m, SparseMixin) for m in plain.modules())
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(plain(x), loaded(x), atol=1e-6)
    rows = layer_sparsity(loaded)
    assert sum(r["kind"] == "sparse" for r in rows) == len(layers)


def test_onnx_matches_torch_through_onnxruntime(exported):
    ort = pytest.importorskip("onnxruntime")
    out, result = exported
    assert result["exports"][0]["onnx_max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    loaded = sparsenas.load(out)
    for batch in (1, 7):  # the batch axis is dynamic
        x = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch))
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():  # the graph takes raw values and normalises them inside
            ref = loaded(loaded.preprocess(x)).numpy()
        assert got.shape == (batch, 4)
        assert np.abs(got - ref).max() <= 1e-4


def test_onnx_on_the_raw_test_split_scores_the_trials_test_accuracy(exported, trained_model):
    ort = pytest.importorskip("onnxruntime")
    out, _ = exported
    _, trial = trained_model
    x, y = raw_split("synthetic", "test", seed=0)  # as the dataset provides it: not normalised
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = float((session.run(None, {"input": x})[0].argmax(1) == y).mean())
    assert abs(got - trial.user_attrs["test_accuracy"]) <= 0.005
    doc = json.loads((out / "arch.json").read_text())
    assert doc["graph_input"] == "raw" and doc["input"]["raw_shape"] == [1, 8, 8] and len(doc["input"]["mean"]) == 1


@pytest.mark.slow
def test_dynamo_onnx_export_matches_torch(study, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    url, _ = study
    rc, stdout, err = run_cli(["export", "--storage", url, "--study", STUDY, "--best", "--out", str(tmp_path / "d"),
                               "--format", "onnx", "--onnx-exporter", "dynamo", "--json"])
    assert rc == 0, err
    res = json.loads(stdout.strip().splitlines()[-1])["exports"][0]
    assert res["onnx_max_abs_diff"] <= 1e-4 and res["files"] == ["arch.json", "card.md", "model.onnx"]
    session = ort.InferenceSession(str(tmp_path / "d" / "model.onnx"), providers=["CPUExecutionProvider"])
    # the folder has no model.pt: compare with the trial's own network, rebuilt from its artifact
    x = torch.randn(3, 1, 8, 8)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    trial = res["trial"]
    st = load_study(url, STUDY)
    ref_model = get_space("sparse_mbv2").build(arch_of(st.trials[trial]), sparsenas.Task.from_dict(st.user_attrs["task"]))
    ref_model.load_state_dict(load_weights(url, st, st.trials[trial]))
    prepare = InputContract.from_dict(st.user_attrs["input"]).preprocess  # the graph takes raw values
    with torch.no_grad():
        assert np.abs(got - ref_model.eval()(prepare(x)).numpy()).max() <= 1e-4


def test_torchscript_loads_and_matches(exported):
    out, result = exported
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still loads
        ts = torch.jit.load(str(out / "model.ts"))
    loaded = sparsenas.load(out)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(ts(x), loaded(loaded.preprocess(x)), atol=1e-5)  # raw input, as ONNX
    assert result["exports"][0]["torchscript_max_abs_diff"] <= 1e-4


def test_card_reports_space_choices_scores_and_layer_sparsity(exported, trained_model):
    out, _ = exported
    _, trial = trained_model
    card = (out / "card.md").read_text()
    assert "sparse_mbv2" in card and f"- study: `{STUDY}`, trial 0" in card
    assert f"| validation accuracy (search) | {trial.values[0]:.4f} |" in card
    assert f"{trial.user_attrs['measured_latency_ms']:.4f}" in card
    for key, value in arch_of(trial).choices.items():
        assert f"| {key} | {value} |" in card
    layer_rows = [line for line in card.splitlines() if line.startswith("| blocks.") or line.startswith("| stem.")]
    assert len(layer_rows) == sum(r["layer"].startswith(("blocks.", "stem.")) for r in layer_sparsity(sparsenas.load(out)))
    assert "ONNX vs PyTorch" in card and "non-zeros" in card


def test_missing_and_failed_trials_are_clear_errors(study, tmp_path):
    url, db = study
    rc, _, err = run_cli(["export", "--storage", url, "--study", STUDY, "--trial", "99", "--out", str(tmp_path / "x")])
    assert rc == 2 and "has no trial 99" in err and "Traceback" not in err
    # a failed trial, in a copy of the study
    copy = tmp_path / "copy.db"
    import sqlite3

    with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:  # sqlite's backup: WAL content included
        src.backup(dst)
    st = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{copy}")
    t = st.ask()
    t.set_user_attr("fail_reason", "TrainingDiverged: loss became nan")
    st.tell(t, state=optuna.trial.TrialState.FAIL)
    rc, _, err = run_cli(["export", "--storage", f"sqlite:///{copy}", "--trial", str(t.number), "--out", str(tmp_path / "y")])
    assert rc == 2 and "is FAIL, not COMPLETE" in err and "loss became nan" in err
    rc, _, err = run_cli(["export", "--storage", url, "--study", "nope", "--best", "--out", str(tmp_path / "z")])
    assert rc == 2 and "no study 'nope'" in err
    rc, _, err = run_cli(["export", "--storage", url, "--study", STUDY, "--best", "--format", "json,tflite",
                          "--out", str(tmp_path / "w")])
    assert rc == 2 and "unknown export format 'tflite'" in err
    assert not any((tmp_path / d).exists() for d in "xyzw")  # nothing half-written


def test_a_failed_check_writes_nothing(trained_model, tmp_path):
    model, trial = trained_model
    task = sparsenas.Task("synthetic", (1, 8, 8), 4)
    # an impossible tolerance makes the ONNX check fail after the file was produced
    with pytest.raises(ExportError, match="ONNX check failed"):
        write_export(model, arch_of(trial), task, tmp_path / "out", formats="json,pt,onnx", atol=-1.0,
                     onnx_exporter="legacy")
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary left behind


def test_trial_without_weights_needs_train_and_then_exports(study, tmp_path):
    url, db = study
    copy = tmp_path / "copy.db"
    import sqlite3

    with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:  # sqlite's backup: WAL content included
        src.backup(dst)
    st = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{copy}")
    t0 = st.trials[0]
    # an architecture logged after the fact, as supernet strategies do: no weights attached
    attrs = {k: v for k, v in t0.user_attrs.items() if k != "weights_artifact"}
    st.add_trial(optuna.trial.create_trial(params=t0.params, distributions=t0.distributions, values=t0.values,
                                           user_attrs=attrs))
    n = st.trials[-1].number
    argv = ["export", "--storage", f"sqlite:///{copy}", "--trial", str(n), "--out", str(tmp_path / "out"),
            "--format", "json,pt", "--json"]
    rc, _, err = run_cli(argv)
    assert rc == 2 and "has no saved weights" in err and "--train" in err
    rc, stdout, err = run_cli(argv + ["--train", "--epochs", "1"])
    assert rc == 0, err
    assert "retrained from scratch for 1 epochs" in (tmp_path / "out" / "card.md").read_text()
    assert isinstance(sparsenas.load(tmp_path / "out"), nn.Module)


def test_nas_train_retrains_from_arch_json_and_load_returns_it(exported, trained_model, tmp_path):
    out, _ = exported
    _, trial = trained_model
    target = tmp_path / "retrained"
    rc, stdout, err = run_cli(["train", str(out / "arch.json"), "--epochs", "1", "--out", str(target),
                               "--format", "json,pt,torchscript", "--no-progress", "--json"])
    assert rc == 0, err
    res = json.loads(stdout.strip().splitlines()[-1])
    # measured in the default runtime, and every figure of it says so
    assert res["runtime"] == DEFAULT_RUNTIME and res["measured_latency_ms"] > 0
    assert f"ms measured in {DEFAULT_RUNTIME}" in stdout
    card = (target / "card.md").read_text()
    assert f"batch 1, {DEFAULT_RUNTIME}; measured:{DEFAULT_RUNTIME})" in card
    assert (f"| measured at retraining (ms, batch 1, {DEFAULT_RUNTIME}, wall / thread CPU) | "
            f"{res['measured_latency_ms']:.4f}") in card and "at search time" not in card
    model = sparsenas.load(target)
    data = load_dataset("synthetic", seed=0)
    assert accuracy(model, data.val, torch.device("cpu")) == res["accuracy"]
    # same architecture, data, seed and epochs as the search: training is deterministic, so the
    # retrained weights are the search's
    assert res["accuracy"] == trial.values[0]
    ref = torch.load(out / "model.pt", weights_only=True)
    got = torch.load(target / "model.pt", weights_only=True)
    assert all(torch.allclose(got[k].float(), ref[k].float(), atol=1e-5) for k in ref)
    assert "retrained from scratch for 1 epochs on synthetic" in (target / "card.md").read_text()


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(sparsenas.errors.SparseNASError, match="no architecture file"):
        sparsenas.load(tmp_path)
    rc, _, err = run_cli(["train", str(tmp_path / "missing.json")])
    assert rc == 2 and "no architecture file" in err

