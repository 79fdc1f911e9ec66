"""`nas export`: a trial of a study -> arch.json, model.pt, model.onnx, model.ts, card.md."""
from __future__ import annotations

import argparse
import sys

from .common import DEFAULT_STORAGE, add_graph_input, print_json


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a found architecture as JSON, PyTorch weights, ONNX and TorchScript",
                       description="Export trials of a search. Weights are the ones the search trained (saved as "
                                   "Optuna artifacts); --train retrains a trial that has none. ONNX and TorchScript "
                                   "files are checked against PyTorch on random inputs before anything is written.")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    p.add_argument("--study", default=None, help="study name (may be left out when the storage holds one study)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, default=None, metavar="N", help="export trial number N")
    which.add_argument("--best", action="store_true", help="export the most accurate trial of the Pareto front")
    which.add_argument("--pareto", action="store_true", help="export every Pareto-front trial to OUT/trial-N/")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--format", default="json,pt,onnx,torchscript",
                   help="comma-separated: json, pt, onnx, torchscript (default all; card.md is always written)")
    p.add_argument("--sparse-format", choices=["csr"], default=None,
                   help="also write the sparse layers' weights compressed (weights_csr.pt)")
    p.add_argument("--train", action="store_true", help="retrain trials that have no saved weights")
    p.add_argument("--epochs", type=int, default=None, help="with --train: epochs (default: the search's)")
    p.add_argument("--artifact-dir", default=None,
                   help="folder of the search's artifacts (default: recorded in the study, or beside a file storage)")
    p.add_argument("--onnx-exporter", choices=["legacy", "dynamo"], default="legacy",
                   help="torch.onnx exporter: legacy (TorchScript based, default: the graph hardware profiles time) or dynamo (torch.export based)")
    add_graph_input(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..errors import SparseNASError
    from ..api import export

    if args.epochs is not None and args.epochs < 1:
        raise SparseNASError(f"--epochs must be at least 1, got {args.epochs}")
    results = export(args.storage, args.study, args.out, trial=args.trial, best=args.best, pareto=args.pareto,
                            formats=args.format, sparse_format=args.sparse_format, train=args.train,
                            epochs=args.epochs, artifact_dir=args.artifact_dir, onnx_exporter=args.onnx_exporter,
                            graph_input=args.graph_input, log=lambda m: print(m, file=sys.stderr))
    for r in results:
        checks = []
        if r.onnx_max_abs_diff is not None:
            checks.append(f"ONNX max|diff| {r.onnx_max_abs_diff:.2g}")
        if r.torchscript_max_abs_diff is not None:
            checks.append(f"TorchScript max|diff| {r.torchscript_max_abs_diff:.2g}")
        if r.mnn_max_abs_diff is not None:
            checks.append(f"MNN max|diff| {r.mnn_max_abs_diff:.2g}")
        print(f"exported trial {r.info.get('trial')} to {r.out}/: {r.params:,} params, {r.nnz:,} non-zeros"
              + (f"; {', '.join(checks)}" if checks else ""))
        contract = r.info.get("contract")
        if contract is not None and r.info.get("graph_input") == "raw" and {"model.onnx", "model.ts", "model.mnn"} & set(r.files):
            print(f"  {'/'.join(f for f in r.files if f in ('model.onnx', 'model.ts', 'model.mnn'))} take {contract.dataset} as it comes: {tuple(contract.raw_shape)} per sample, "
                  f"{contract.raw_form}; they resize and normalise inside (card.md, Input)")
    if args.json:
        print_json({"exports": [r.to_dict() for r in results]})
    return 0
