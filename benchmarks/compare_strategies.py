"""Every strategy, ours and NNI's, on the same space, data, wall-clock budget and seeds.

Each (strategy, seed) runs in a fresh Python process (so peak memory is its own): the search gets
``--budget-minutes`` (``--timeout``; a multi-trial strategy finishes the trial it is in), then the
top ``--top`` architectures of its validation Pareto front are retrained standalone for ``--epochs``
epochs with the same seed and scored on the test split. Latency is the search's own latency
objective, which every strategy takes from the same evaluator (the shipped profile's table where it
covers the space, else measured). Printed per strategy, mean +- standard deviation over seeds:

- best test accuracy of the retrained architectures, and the best among those within a latency bound
  (``--latency-bound-ms``; default the median latency of random search's trials);
- Pareto hypervolume of (test accuracy up, latency down) of the retrained architectures, and of
  (validation accuracy, latency) of every architecture the search trained standalone, with one
  reference point for all (a supernet's estimates, entangled's inherited-weight accuracies or
  balanced's scores, come from more training than a trial's epochs: they are counted apart, as
  ``estimates`` and ``best_estimate_val``);
- wall time until the search's validation hypervolume reached random search's final one (same
  seed; "-" when it never did), the search's wall time, trials, per-trial overhead (for multi-trial
  strategies the median time between two trials' ends that was not training: building, latency,
  costs, storage, the framework; for one-shot ones search time minus training per logged
  architecture), and peak RSS; ``--nni-service-overhead`` also times NNI's own training-service
  engine (one process per trial) on a tiny model;
- the three baselines the random-search-for-sparse-NAS comparison asks for, built on random
  search's best architecture of each seed: the dense parent (every mask removed), the same
  network with random masks at equal sparsity (fixed, not learned), and random search itself.

A difference smaller than the larger seed-to-seed spread of the two strategies is a tie (``~`` marks
every strategy tied with the best). A PNG of the retrained fronts is written with ``--plot``.

    PYTHONPATH=. python benchmarks/compare_strategies.py --space sparse_mbv2 --dataset digits \
        --budget-minutes 2 --seeds 2 [--strategies random,tpe,nni:evolution] [--json]

A multi-trial strategy with a pruner is named ``STRATEGY+PRUNER`` (``tpe+mo-asha``,
``random+mo-asha``; the pruner's settings from ``--pruner-args``); it trains architectures to
``--epochs`` only when its rungs promote them, and its hypervolumes and time to random's HV count
those full-fidelity architectures only. The comparison multi-fidelity search is judged on
(issue 22; at least 8 minutes per search, so about 1.5 hours per task on one core):

    PYTHONPATH=. python benchmarks/compare_strategies.py --space sparse_mbv2 --dataset digits --input-size 16 \
        --epochs 6 --budget-minutes 8 --seeds 3 --strategies random,tpe,tpe+mo-asha,random+mo-asha --json
    PYTHONPATH=. python benchmarks/compare_strategies.py --space g2g_mlp --dataset mnist1d \
        --epochs 6 --budget-minutes 8 --seeds 3 --strategies random,tpe,tpe+mo-asha,random+mo-asha --json

NNI's strategies run when ``nni`` is importable by the Python running this script (the ``nni``
extra); otherwise they are listed as skipped with the reason.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

OURS = ("random", "tpe", "nsga2", "dass", "entangled", "balanced")
NNI = ("nni:random", "nni:evolution", "nni:darts", "nni:random-one-shot")
MULTI_TRIAL = ("random", "tpe", "nsga2", "nni:random", "nni:evolution")
PRUNED = ("tpe+mo-asha", "random+mo-asha")  # STRATEGY+PRUNER: a multi-trial strategy with that pruner


def split_name(name: str) -> tuple[str, str | None]:
    """``tpe+mo-asha`` -> ("tpe", "mo-asha"); ``tpe`` -> ("tpe", None)."""
    strategy, _, pruner = name.partition("+")
    return strategy, pruner or None
METRICS = (  # key, label, higher is better
    ("best_test_accuracy", "best test acc", True),
    ("test_accuracy_at_bound", "test acc @ lat bound", True),
    ("hypervolume_test", "HV (test, retrained)", True),
    ("hypervolume_val", "HV (val, search)", True),
    ("time_to_random_hv_s", "s to random's HV", False),
    ("wall_s", "search wall s", False),
    ("trials", "trials", True),
    ("complete", "full-fidelity archs", True),
    ("overhead_per_trial_s", "overhead/trial s", False),
    ("peak_rss_mb", "peak RSS MB", False),
)


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by [(accuracy, latency_ms)] (accuracy up, latency down) inside ``ref``."""
    pts = sorted((lat, acc) for acc, lat in points if acc > ref[0] and lat < ref[1])
    area, best = 0.0, ref[0]
    for lat, acc in pts:
        if acc > best:
            area += (ref[1] - lat) * (acc - best)
            best = acc
    return area


# ------------------------------------------------------------------------------- child processes
def _common(cfg: dict) -> dict:
    return dict(space=cfg["space"], dataset=cfg["dataset"], input_size=cfg["input_size"], limit=cfg["limit"],
                storage=cfg["storage"], seed=cfg["seed"], epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                runtime=cfg["runtime"], progress=False)


def _retrain(cfg: dict, archs: list, mutate=None, measure: bool = False) -> list[dict]:
    """Train each architecture standalone (``--epochs``, the run's seed); its test accuracy."""
    from sparsenas.data import load_dataset
    from sparsenas.evaluators import TrainBudget, count_params, measure_latency, train
    from sparsenas.search_spaces import get_space

    space = get_space(cfg["space"])
    data = load_dataset(cfg["dataset"], input_size=cfg["input_size"], seed=cfg["seed"], limit=cfg["limit"])
    budget = TrainBudget(epochs=cfg["epochs"], batch_size=cfg["batch_size"])
    out = []
    for arch in archs:
        import torch

        torch.manual_seed(cfg["seed"])
        model = space.build(arch, data.task)
        if mutate is not None:
            mutate(model, cfg["seed"])
        res = train(model, data, budget, seed=cfg["seed"])
        params, nnz = count_params(model.eval())
        row = {"arch_digest": arch.digest(), "test_accuracy": res.test_accuracy, "val_accuracy": res.val_accuracy,
               "params": params, "nnz": nnz}
        if measure:  # baselines are not in any study: time them here, in the runtime the searches judge
            row["latency_ms"] = measure_latency(model, data.task, runtime=cfg["runtime"])["measured_latency_ms"]
        out.append(row)
    return out


def child_search(cfg: dict) -> dict:
    import optuna
    import torch

    import sparsenas
    from sparsenas.tracking import arch_of

    torch.set_num_threads(1)
    options = dict(cfg["options"])
    start_wall = time.time()
    t0 = time.perf_counter()
    strategy, pruner = split_name(cfg["strategy"])
    pruning = dict(pruner=pruner, pruner_args=cfg.get("pruner_args") or {}) if pruner else {}
    study = sparsenas.search(strategy=strategy, study=cfg["study"], trials=cfg["trials"],
                             timeout=cfg["budget_s"], options=options, **pruning, **_common(cfg))
    wall = time.perf_counter() - t0
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.values is not None and len(t.values) == 2]
    own = [t for t in done if "duplicate_of" not in t.user_attrs]
    trained = sum(t.user_attrs.get("train_seconds") or 0.0 for t in own)
    n_all = len(study.trials)
    # the search's own progress counts only architectures trained standalone (per-epoch values
    # recorded): a supernet's estimates (entangled's inherited weights, balanced's scores) come from
    # far more training than a trial's epochs and are not the same quantity
    standalone = [t for t in done if t.intermediate_values]
    estimates = [t for t in done if not t.intermediate_values and "duplicate_of" not in t.user_attrs]
    timeline = [{"t": (t.datetime_complete.timestamp() - start_wall) if t.datetime_complete else wall,
                 "val": t.values[0], "latency_ms": t.values[1]} for t in standalone]
    # per-trial overhead: the time between two trials' ends that was not training (build, latency,
    # costs, storage, the framework driving it); start-up (data, imports) is left out. One-shot
    # strategies log their architectures at the end: their overhead is search time per architecture.
    ends = sorted((t.datetime_complete.timestamp(), t.user_attrs.get("train_seconds") or 0.0) for t in own
                  if t.datetime_complete)
    gaps = [b[0] - a[0] - b[1] for a, b in zip(ends, ends[1:])]
    # (with a pruner the trials stopped early, between two complete ones, are not overhead: left out)
    overhead = None if pruner else statistics.median(gaps) if len(gaps) >= 2 and strategy in MULTI_TRIAL else \
        (wall - trained) / max(1, n_all)
    front = sorted(study.best_trials, key=lambda t: -t.values[0])[: cfg["top"]]
    retrained = _retrain(cfg, [arch_of(t) for t in front])
    for row, t in zip(retrained, front):
        row.update(trial=t.number, latency_ms=t.values[1], search_val_accuracy=t.values[0])
    best = max(done, key=lambda t: t.values[0], default=None)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return {"wall_s": wall, "trials": n_all, "complete": len(done), "pruned": pruned, "estimates": len(estimates),
            "best_estimate_val": max((t.values[0] for t in estimates), default=None),
            "train_seconds": trained,
            "overhead_per_trial_s": overhead, "timeline": timeline, "retrained": retrained,
            "best_arch": arch_of(best).to_json() if best is not None else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "nni": study.user_attrs.get("nni")}


def _dense(model: Any, seed: int) -> None:
    """Every mask removed: the dense parent of the same network."""
    from sparsenas.ops import sparse_modules

    for m in sparse_modules(model):
        m.mask.fill_(1.0)
        m.sparsity = m.target_sparsity = 0.0
        m.structural_mask = True  # nothing prunes it again
        if callable(getattr(m, "after_step", None)):
            m.after_step = None  # no prune-and-regrow either
    for m in model.modules():
        if callable(getattr(m, "after_step", None)):
            m.after_step = None


def _random_masks(model: Any, seed: int) -> None:
    """Each sparse layer keeps its sparsity, but the mask is drawn at random once and never changes."""
    import torch

    from sparsenas.ops import sparse_modules

    g = torch.Generator().manual_seed(seed)
    for m in sparse_modules(model):
        target = m.target_sparsity if not m.structural_mask else 1.0 - float(m.mask.mean())
        zeros = int(round(target * m.mask.numel()))
        mask = torch.ones(m.mask.numel())
        mask[torch.randperm(m.mask.numel(), generator=g)[:zeros]] = 0.0
        m.mask.copy_(mask.view_as(m.mask))
        m.sparsity = m.target_sparsity = target
        m.structural_mask = True
    for m in model.modules():
        if callable(getattr(m, "after_step", None)):
            m.after_step = None


def child_baselines(cfg: dict) -> dict:
    import torch

    from sparsenas.arch import Arch

    torch.set_num_threads(1)
    arch = Arch.from_json(cfg["arch"])
    return {"dense_parent": _retrain(cfg, [arch], _dense, measure=True)[0],
            "random_masks": _retrain(cfg, [arch], _random_masks, measure=True)[0],
            "random_search_best": _retrain(cfg, [arch], measure=True)[0]}


def _run_child(kind: str, cfg: dict, python: str) -> dict:
    p = subprocess.run([python, os.path.abspath(__file__), f"--child-{kind}", json.dumps(cfg)],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail)}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------- NNI's own multi-trial engine (one process per trial)
_SERVICE_SPACE = """
import time
import nni
import torch
from torch import nn
from nni.nas.nn.pytorch import LayerChoice, ModelSpace


class Tiny(ModelSpace):
    def __init__(self):
        super().__init__()
        self.op = LayerChoice([nn.Sequential(nn.Linear(64, w), nn.ReLU(), nn.Linear(w, 32)) for w in (8, 16, 24, 32, 48, 64)],
                              label="op")
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.op(x))


def evaluate(model):
    t = time.perf_counter()
    torch.manual_seed(0)
    x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    nni.report_final_result({"default": float((model(x).argmax(1) == y).float().mean()),
                             "inside_s": time.perf_counter() - t})
"""
_SERVICE_RUN = """
import json, time
from service_space import Tiny, evaluate
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.experiment import NasExperiment
from nni.nas.strategy import Random
exp = NasExperiment(Tiny(), FunctionalEvaluator(evaluate), Random())
exp.config.max_trial_number = TRIALS
exp.config.trial_concurrency = 1
t = time.perf_counter()
exp.run(port=PORT, wait_completion=True, debug=False)
wall = time.perf_counter() - t
jobs = exp.list_trial_jobs()
inside = [m.data["inside_s"] for ms in exp.get_job_metrics().values() for m in ms if isinstance(m.data, dict)]
durs = [(j.endTime - j.startTime) / 1000 for j in jobs if j.endTime]
exp.stop()
print(json.dumps({"wall_s": wall, "trials": len(jobs), "trial_s": durs, "inside_s": inside}))
"""


def nni_service_overhead(python: str, trials: int = 4, port: int = 8745) -> dict:
    """Per-trial overhead of NNI's training-service engine (a fresh trial process per model, NNI's
    Node manager, local training service) on a tiny model whose own work takes about a second:
    trial duration minus the time spent inside the evaluation function."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "service_space.py"), "w") as f:
            f.write(_SERVICE_SPACE)
        script = _SERVICE_RUN.replace("TRIALS", str(trials)).replace("PORT", str(port))
        p = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=tmp,
                           env={**os.environ, "PYTHONPATH": tmp})
    if p.returncode != 0:
        return {"error": " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    over = statistics.median(r["trial_s"]) - statistics.median(r["inside_s"]) if r["trial_s"] and r["inside_s"] else None
    return {**r, "overhead_per_trial_s": over,
            "engine": "NNI training service (local), one process per trial"}


# ------------------------------------------------------------------------------------------ parent
def options_for(name: str, options: dict) -> dict:
    """The subset of ``options`` strategy ``name`` declares (platforms where strategies declare their
    options refuse the others); all of them where strategies declare none."""
    from sparsenas.strategies import STRATEGIES

    declared = getattr(STRATEGIES.get(split_name(name)[0]), "options", None)
    if not isinstance(declared, tuple):
        return dict(options)
    names = {o.name for o in declared}
    return {k: v for k, v in options.items() if k in names}


def _applicable(names: list[str], args: argparse.Namespace, options: dict) -> dict[str, str | None]:
    """strategy -> None if it can run on this space and task, else why not."""
    from sparsenas.data import load_dataset
    from sparsenas.errors import SparseNASError
    from sparsenas.search_spaces import get_space
    from sparsenas.strategies import STRATEGIES

    space = get_space(args.space)
    task = load_dataset(args.dataset, input_size=args.input_size, limit=args.limit).task
    out: dict[str, str | None] = {}
    for n in names:
        try:
            cls = STRATEGIES.get(split_name(n)[0])
            opts = options_for(n, options)
            if hasattr(cls, "resolve_options"):
                opts = cls.resolve_options(opts)
            cls().check(space, task, opts)
            out[n] = None
        except SparseNASError as e:
            out[n] = str(e).split(";")[0][:160]
    return out


def _mean_sd(xs: list[float | None]) -> dict | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def summarize(runs: dict[str, list[dict]], bound: float | None) -> tuple[dict, dict]:
    ok = {s: [r for r in rs if "error" not in r] for s, rs in runs.items()}
    lats = [p["latency_ms"] for rs in ok.values() for r in rs for p in r["timeline"] + r["retrained"]]
    ref = (0.0, 1.1 * max(lats)) if lats else (0.0, 1.0)
    if bound is None:
        rnd = [p["latency_ms"] for r in ok.get("random", []) for p in r["timeline"]]
        bound = statistics.median(rnd) if rnd else (statistics.median(lats) if lats else None)
    random_final = {r["seed"]: hypervolume_2d([(p["val"], p["latency_ms"]) for p in r["timeline"]], ref)
                    for r in ok.get("random", [])}
    per: dict[str, dict] = {}
    for s, rs in ok.items():
        rows = []
        for r in rs:
            pts = sorted(r["timeline"], key=lambda p: p["t"])
            reach, target = None, random_final.get(r["seed"])
            if target is not None:
                for i in range(len(pts)):
                    if hypervolume_2d([(p["val"], p["latency_ms"]) for p in pts[: i + 1]], ref) >= target - 1e-12:
                        reach = pts[i]["t"]
                        break
            within = [p["test_accuracy"] for p in r["retrained"] if bound is not None and p["latency_ms"] <= bound]
            rows.append({
                "best_test_accuracy": max((p["test_accuracy"] for p in r["retrained"]), default=None),
                "test_accuracy_at_bound": max(within, default=None),
                "hypervolume_test": hypervolume_2d([(p["test_accuracy"], p["latency_ms"]) for p in r["retrained"]], ref),
                "hypervolume_val": hypervolume_2d([(p["val"], p["latency_ms"]) for p in pts], ref),
                "time_to_random_hv_s": reach, "wall_s": r["wall_s"], "trials": r["trials"],
                "complete": r.get("complete"),
                "overhead_per_trial_s": r["overhead_per_trial_s"], "peak_rss_mb": r["peak_rss_mb"]})
        per[s] = {k: _mean_sd([row[k] for row in rows]) for k, _, _ in METRICS}
        per[s]["per_seed"] = [{"seed": r["seed"], **row} for r, row in zip(rs, rows)]  # the raw figures behind the means
        per[s]["seeds"] = len(rs)
        per[s]["estimates"] = _mean_sd([r.get("estimates") for r in rs])
        per[s]["best_estimate_val"] = _mean_sd([r.get("best_estimate_val") for r in rs])
        per[s]["reached_random_hv"] = sum(row["time_to_random_hv_s"] is not None for row in rows)
    # ties: within the larger seed spread of the best strategy and this one
    ties: dict[str, list[str]] = {}
    for k, _, higher in METRICS:
        vals = {s: m[k] for s, m in per.items() if m.get(k)}
        if not vals:
            continue
        best = (max if higher else min)(vals, key=lambda s: vals[s]["mean"])
        ties[k] = [s for s, v in vals.items()
                   if abs(v["mean"] - vals[best]["mean"]) <= max(v["sd"], vals[best]["sd"]) or s == best]
    return per, {"reference_point": {"accuracy": ref[0], "latency_ms": ref[1]}, "latency_bound_ms": bound,
                 "ties_with_best": ties}


def _plot(runs: dict[str, list[dict]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s, rs in runs.items():
        pts = [(p["latency_ms"], p["test_accuracy"]) for r in rs if "error" not in r for p in r["retrained"]]
        if pts:
            xs, ys = zip(*sorted(pts))
            ax.scatter(xs, ys, label=s, s=22)
    ax.set_xlabel("latency ms (search objective)")
    ax.set_ylabel("test accuracy (retrained)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(m: dict | None, k: str) -> str:
    if m is None:
        return "-"
    digits = 4 if "acc" in k or "hyper" in k else (3 if "overhead" in k else 1)
    return f"{m['mean']:.{digits}f} ± {m['sd']:.{digits}f}"


def _json_object(p: argparse.ArgumentParser, flag: str, text: str, example: str) -> dict:
    """``text`` parsed as a JSON object, or the parser's usage error naming ``flag``."""
    try:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        p.error(f"{flag} must be a JSON object, e.g. '{example}' ({e})")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="sparse_mbv2")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="cap on training samples")
    p.add_argument("--budget-minutes", type=float, default=5.0, help="wall-clock budget of each search")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2, help="epochs per trained architecture (search, retrain, supernet)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--top", type=int, default=3, help="front architectures retrained per run")
    p.add_argument("--latency-bound-ms", type=float, default=None)
    p.add_argument("--oneshot-trials", type=int, default=50, help="architectures a one-shot strategy ranks")
    p.add_argument("--options", default="{}", metavar="JSON",
                   help='more strategy options, each passed to the strategies that declare it, e.g. {"budget_share": 0.15}')
    p.add_argument("--strategies", default=None, help=f"comma list (default: {','.join(OURS + NNI)}); a "
                   f"multi-trial strategy with a pruner as STRATEGY+PRUNER: {', '.join(PRUNED)}")
    p.add_argument("--pruner-args", default="{}", metavar="JSON",
                   help='settings of the pruner of STRATEGY+PRUNER runs, e.g. {"reduction_factor": 3, "min_epochs": 1}')
    p.add_argument("--python", default=sys.executable, help="interpreter of the child runs (one with nni for NNI's)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the retrained fronts here")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--nni-service-overhead", action="store_true",
                   help="also time NNI's own training-service engine (a process per trial) on a tiny model")
    p.add_argument("--child-search", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-baselines", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_search or args.child_baselines:
        out = child_search(json.loads(args.child_search)) if args.child_search else \
            child_baselines(json.loads(args.child_baselines))
        print(json.dumps(out))
        return 0

    names = args.strategies.split(",") if args.strategies else list(OURS + NNI)
    if "random" not in names:
        names.insert(0, "random")  # the baseline every other is measured against
    # one-shot strategies retrain for the same epochs as every trial; their supernet epochs and how many
    # architectures they retrain they size from the budget themselves (what a user's --timeout gets)
    extra = _json_object(p, "--options", args.options, '{"budget_share": 0.15}')
    options = {"retrain_epochs": args.epochs, **extra}
    pruner_args = _json_object(p, "--pruner-args", args.pruner_args, '{"reduction_factor": 3}')
    skipped = {s: why for s, why in _applicable(names, args, options).items() if why}
    names = [s for s in names if s not in skipped]
    storage = f"sqlite:///{tempfile.mkdtemp(prefix='compare_strategies_')}/bench.db"
    from sparsenas.runtimes import DEFAULT_RUNTIME

    base = dict(space=args.space, dataset=args.dataset, input_size=args.input_size, limit=args.limit,
                storage=storage, epochs=args.epochs, batch_size=args.batch_size, top=args.top, runtime=DEFAULT_RUNTIME,
                budget_s=args.budget_minutes * 60, options=options, pruner_args=pruner_args)
    runs: dict[str, list[dict]] = {s: [] for s in names}
    load_before = os.getloadavg()
    t_all = time.perf_counter()
    for seed in range(args.seeds):  # seeds outermost: machine load drifts over the run, not per strategy
        for s in names:
            # multi-trial strategies run until the budget ends; for one-shot ones, trials = architectures
            # they rank on the supernet (entangled, nni:random-one-shot)
            trials = 100_000 if split_name(s)[0] in MULTI_TRIAL else args.oneshot_trials
            r = _run_child("search", {**base, "strategy": s, "seed": seed, "study": f"{s}-seed{seed}",
                                      "trials": trials, "options": options_for(s, options)}, args.python)
            r.update(strategy=s, seed=seed)
            runs[s].append(r)
            if not args.json:
                print(f"{s} seed {seed}: " + (r.get("error") or
                      f"{r['trials']} trials ({r['complete']} complete) in {r['wall_s']:.0f} s, best retrained test acc "
                      f"{max((x['test_accuracy'] for x in r['retrained']), default=float('nan')):.3f}"), flush=True)
    baselines = []
    for r in runs.get("random", []):
        if r.get("best_arch"):
            baselines.append(_run_child("baselines", {**base, "seed": r["seed"], "arch": r["best_arch"]}, args.python))
    per, extra = summarize(runs, args.latency_bound_ms)
    base_summary = {k: {m: _mean_sd([b[k][m] for b in baselines if "error" not in b])
                        for m in ("test_accuracy", "nnz", "latency_ms")}
                    for k in ("dense_parent", "random_masks", "random_search_best")} if baselines else {}
    out = {"space": args.space, "dataset": args.dataset, "input_size": args.input_size, "limit": args.limit,
           "runtime": base["runtime"],
           "pruner_args": pruner_args,
           "budget_minutes": args.budget_minutes, "seeds": args.seeds, "epochs": args.epochs, "top": args.top,
           "machine": {"cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
                       "torch_threads": 1},
           "total_wall_s": round(time.perf_counter() - t_all, 1), "strategies": per, **extra,
           "skipped": skipped, "errors": {s: [r["error"] for r in rs if "error" in r] for s, rs in runs.items()
                                          if any("error" in r for r in rs)},
           "baselines": base_summary,
           "nni": {s: [r.get("nni") for r in rs if r.get("nni")] for s, rs in runs.items() if s.startswith("nni:")}}
    if args.nni_service_overhead:
        out["nni_training_service"] = nni_service_overhead(args.python)
    if args.plot:
        _plot(runs, args.plot, f"{args.space} on {args.dataset}: {args.budget_minutes} min/search, {args.seeds} seeds")
        out["plot"] = args.plot
    _print(out)
    if args.json:
        print(json.dumps(out, default=float))
    return 0


def _print(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(200, Console().width))
    t = Table(title=f"{out['space']} on {out['dataset']}: {out['budget_minutes']} min per search, {out['seeds']} "
                    f"seed(s), mean ± sd; ~ = tie with the best (difference < seed spread); latency bound "
                    f"{out['latency_bound_ms'] or 0:.3f} ms")
    t.add_column("strategy")
    for _, label, _ in METRICS:
        t.add_column(label, justify="right")
    for s, m in out["strategies"].items():
        cells = []
        for k, _, _ in METRICS:
            mark = "~" if s in out["ties_with_best"].get(k, []) else ""
            cells.append(mark + _fmt(m.get(k), k))
        t.add_row(s, *cells)
    console.print(t)
    if out["baselines"]:
        b = Table(title="baselines on random search's best architecture (retrained, same epochs)")
        for c in ("network", "test acc", "non-zeros", f"latency ms (measured, {out['runtime']})"):
            b.add_column(c, justify="right")
        for k, v in out["baselines"].items():
            b.add_row(k, _fmt(v["test_accuracy"], "acc"), _fmt(v["nnz"], "n"), _fmt(v["latency_ms"], "overhead"))
        console.print(b)
    if "nni_training_service" in out:
        ts = out["nni_training_service"]
        console.print(f"NNI training-service engine, tiny model: " + (ts.get("error") or
                      f"{ts['trials']} trials, {ts['overhead_per_trial_s']:.1f} s overhead per trial "
                      f"(trial durations {', '.join(f'{d:.1f}' for d in ts['trial_s'])} s)"))
    for s, why in out["skipped"].items():
        console.print(f"skipped {s}: {why}")
    for s, errs in out["errors"].items():
        console.print(f"[red]{s} failed[/red]: {errs[0]}")


if __name__ == "__main__":
    sys.exit(main())
