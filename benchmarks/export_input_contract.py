"""The exported model on the data as it comes: test accuracy of ``model.onnx`` in ONNX Runtime fed the
raw test split, against the accuracy the trial recorded in the search.

For each completed trial of a study (or of a small search this script runs), it exports the trial
twice and scores the test split in ONNX Runtime four ways:

- ``raw_graph_on_raw``: the default export (``graph_input="raw"``), fed the raw split (as the dataset
  provides it: digits 8x8, pixels / 16): what a user gets now;
- ``normalised_graph_on_resized``: the old graph (``--graph-input normalised``), fed the raw split
  resized to the network's input but not normalised: what a user who knew only the input shape got;
- ``normalised_graph_on_prepared``: the old graph fed ``preprocess(raw)`` (resized and normalised);
- ``load_preprocess``: ``sparsenas.load(DIR)`` on ``model.preprocess(raw)`` in PyTorch.

    python benchmarks/export_input_contract.py [--storage sqlite:///nas.db --study S] [--trials 2 --epochs 6] [--json]

Without ``--storage`` it runs the default search (sparse_mbv2, digits at 16x16, tpe) for ``--trials``
trials of ``--epochs`` epochs into a temporary sqlite file first. With ``--json`` the last line of
stdout is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

import sparsenas
from sparsenas.data import raw_split
from sparsenas.data.splits import resize
from sparsenas.export import export_trials
from sparsenas.tracking import load_study, study_record, trial_record


def _onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return float((session.run(None, {session.get_inputs()[0].name: x})[0].argmax(1) == y).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", default=None)
    p.add_argument("--study", default=None)
    p.add_argument("--trials", type=int, default=2, help="trials of the search run when no --storage is given")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="contract-"))
    storage, study_name = args.storage, args.study
    if storage is None:
        storage = f"sqlite:///{tmp / 'nas.db'}"
        study_name = sparsenas.search(space="sparse_mbv2", trials=args.trials, epochs=args.epochs, storage=storage,
                                      progress=False).study_name
    study = load_study(storage, study_name)
    config = study_record(study).config
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name != "COMPLETE":
            continue
        raw_dir, norm_dir = tmp / f"raw-{t.number}", tmp / f"norm-{t.number}"
        export_trials(storage, study.study_name, raw_dir, trial=t.number, formats="json,pt,onnx")
        export_trials(storage, study.study_name, norm_dir, trial=t.number, formats="json,onnx",
                      graph_input="normalised")
        model = sparsenas.load(raw_dir)
        contract = model.input_contract
        x, y = raw_split(contract.dataset if ":" not in str(config.get("dataset") or "") else config["dataset"],
                         "test", data_dir=config.get("data_dir"), seed=int(config.get("seed") or 0))
        resized = resize(x, contract.resize) if contract.resize else x
        prepared = model.preprocess(x).numpy()
        rows.append({"trial": t.number, "recorded_test_accuracy": trial_record(t).test_accuracy,
                     "raw_graph_on_raw": _onnx_accuracy(raw_dir / "model.onnx", x, y),
                     "normalised_graph_on_resized": _onnx_accuracy(norm_dir / "model.onnx", resized, y),
                     "normalised_graph_on_prepared": _onnx_accuracy(norm_dir / "model.onnx", prepared, y),
                     "load_preprocess": float((model(model.preprocess(x)).argmax(1).numpy() == y).mean()),
                     "test_images": int(len(y))})
    for r in rows:
        print(f"trial {r['trial']}: recorded test acc {r['recorded_test_accuracy']:.4f}; model.onnx on the raw split "
              f"{r['raw_graph_on_raw']:.4f}; old normalised-input graph on resized raw values "
              f"{r['normalised_graph_on_resized']:.4f}, on prepared values {r['normalised_graph_on_prepared']:.4f}; "
              f"sparsenas.load + preprocess {r['load_preprocess']:.4f} ({r['test_images']} test images)")
    if args.json:
        print(json.dumps({"study": study.study_name, "storage": storage, "trials": rows}))


if __name__ == "__main__":
    main()
