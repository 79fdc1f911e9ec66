"""What tiny searches of each strategy record, as one digest: run it on two checkouts to show that a
refactor changed no figure (issue 21).

Each strategy that trains (dass, entangled, balanced, random) runs a search of a few seconds with
fixed seeds on synthetic or generated data; the digest covers every trial's state, validation and
test accuracy, parameter and non-zero counts, stage, choices and per-epoch validation accuracy
(latency is left out: it is timed, so it differs run to run).

    PYTHONPATH=CHECKOUT python benchmarks/record_digest.py [--only dass,entangled] [--json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile

import optuna

import sparsenas
from sparsenas.tracking import trial_record

RUNS = {
    "dass": dict(space="sparse_darts", strategy="dass", dataset="synthetic",
                 options=dict(search_epochs=1, retrain_epochs=1, retrain_top=2, cells=3, search_cells=2)),
    "entangled": dict(space="g2g_mlp", strategy="entangled", dataset="mnist1d", trials=5, limit=96, batch_size=32,
                      options={"search_epochs": 1, "sandwich_epochs": 1, "sandwich_random": 1, "retrain_epochs": 1,
                               "retrain_top": 2, "tau_archs": 3, "finetune_steps": 2}),
    "balanced": dict(space="pooling_resnet20", strategy="balanced", dataset="synthetic", limit=64, epochs=1,
                     options={"supernets": 2, "search_epochs": 1, "retrain_top": 1, "fix": {"downsample": "max"}}),
    "random": dict(space="sparse_mbv2", strategy="random", dataset="synthetic", trials=2, epochs=1),
}


def records(name: str, folder: str) -> list[list]:
    study = sparsenas.search(storage=f"sqlite:///{folder}/{name}.db", study=name, progress=False, **RUNS[name])
    out = []
    for t in study.trials:
        r = trial_record(t)
        # the stage under any of its keys: checkouts from before issue 21 wrote phase / supernet_round
        stage = next((t.user_attrs[k] for k in ("stage", "phase", "supernet_round") if k in t.user_attrs), None)
        out.append([t.number, r.state, r.accuracy, r.test_accuracy, r.params, r.nnz, stage, t.params,
                    sorted(t.intermediate_values.items())])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(RUNS), help="comma-separated strategies (default: all)")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    result = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.only.split(","):
            rows = records(name, folder)
            digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
            result[name] = {"trials": len(rows), "digest": digest}
            if not args.json:
                print(f"{name:10s} {len(rows):3d} trials  digest {digest}")
    if args.json:
        print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
