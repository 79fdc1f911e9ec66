"""`nas report`: plots of a search and one self-contained HTML page.

- ``pareto.png``: validation accuracy against the latency objective for every completed trial, the
  Pareto front highlighted, and the space's reference architecture (``default_arch``; for
  sparse_mbv2 the dense MobileNetV2) marked: as a point when the study holds it or when
  ``baseline="train"`` trains it with the search's budget, else as a vertical line at its latency
  (computed with the study's latency evaluator; its accuracy is then not known and not drawn);
- ``progress.png``: accuracy per trial and best-so-far against the trial number;
- ``alpha.png``: architecture-weight evolution, when the study or its trials carry ``alpha_history``
  (gradient strategies);
- ``latency.png``: predicted against measured latency, when trials carry both;
- plots of Optuna's analyses, when the study has the data: ``optuna_importance_<objective>.png``
  (which choices matter, per objective: Optuna's fANOVA importances, the 15 largest drawn and the
  rest summed), ``optuna_hypervolume.png`` (multi-objective: hypervolume of the front against
  trials), ``optuna_timeline.png`` (when each trial ran, and its state), ``optuna_intermediate.png``
  (validation accuracy per epoch of each trial); every axis says what it shows and every legend
  sits off the data;
- ``report.html``: all of the above embedded as base64, with the study summary and front table.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import SparseNASError

__all__ = ["BASELINE_MODES", "Report", "make_report", "alpha_series"]

BASELINE_MODES = ("auto", "train", "latency", "none")


@dataclass
class Report:
    out: str
    files: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "files": self.files, **self.figures, "notes": self.notes}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------- data from the study
def study_runtime(config: dict[str, Any], trials: Any = ()) -> str:
    """The runtime a study's latencies belong to: its trials', its config's, or torch (studies from
    before runtimes were timed in PyTorch eager)."""
    from .runtimes import PRE_RUNTIME
    from .tracking import trial_record

    for t in trials:
        if runtime := trial_record(t).runtime:
            return str(runtime)
    return str(config.get("runtime") or PRE_RUNTIME)


def _latency(t: Any, axis: str = "objective") -> float | None:
    from .tracking import trial_record

    r = trial_record(t)
    return r.measured_latency_cpu_ms if axis == "cpu" else r.latency_ms


def _front(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Non-dominated (latency down, accuracy up) points, sorted by latency."""
    front, best = [], -math.inf
    for lat, acc, n in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((lat, acc, n))
            best = acc
    return front


def _softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def alpha_series(history: Any) -> dict[str, list[list[float]]]:
    """Normalise an ``alpha_history`` attr to {decision: [probabilities per step]}.

    Accepts {decision: [[...] per step]} or [{decision: [...]} per step] (or their JSON text); rows
    that are not probabilities (negative, or not summing to 1) are taken as logits and softmaxed.
    """
    if isinstance(history, str):
        try:
            history = json.loads(history)
        except json.JSONDecodeError:
            return {}
    series: dict[str, list[list[float]]] = {}
    if isinstance(history, dict):
        for k, rows in history.items():
            if isinstance(rows, list) and rows and all(isinstance(r, list) for r in rows):
                series[str(k)] = rows
    elif isinstance(history, list):
        for step in history:
            if isinstance(step, dict):
                for k, row in step.items():
                    if isinstance(row, list):
                        series.setdefault(str(k), []).append(row)
    out: dict[str, list[list[float]]] = {}
    for k, rows in series.items():
        try:
            rows = [[float(v) for v in r] for r in rows if r]
        except (TypeError, ValueError):
            continue
        if rows:
            out[k] = [r if min(r) >= 0 and abs(sum(r) - 1) < 1e-3 else _softmax(r) for r in rows]
    return out


def _baseline(study: Any, space: Any, task: Any, mode: str, trials: list[Any],
              log: Callable[[str], None] | None, axis: str = "objective") -> dict[str, Any] | None:
    """The reference architecture's point (or latency), as the mode allows; None when there is none."""
    from .evaluators import LATENCY
    from .tracking import study_record, trial_record

    if mode == "none" or not hasattr(space, "default_arch"):
        return None
    arch = space.default_arch(task)
    doc = (type(space).default_arch.__doc__ or "").strip().split(":")[0].split(".")[0]
    label = f"{doc} ({space.name} default_arch)" if doc else f"{space.name} default_arch"
    for t in trials:
        if trial_record(t).arch_digest == arch.digest() and _latency(t, axis) is not None:
            return {"label": label, "how": f"trial {t.number} of the study", "trial": t.number,
                    "accuracy": float(t.values[0]), "latency_ms": _latency(t, axis)}
    rec = study_record(study)
    config = rec.config
    # the evaluator the trials were judged by ("auto" resolves per search): their latency_source says
    sources = {str(trial_record(t).latency_source or "") for t in trials}
    kind = "table" if any(x.startswith("table") for x in sources) else "measured"
    latency_of = LATENCY.get(kind)(hw=config.get("hw"), runtime=study_runtime(config, trials))
    if mode == "train":
        from .export import retrain, search_budget

        budget = search_budget(config)
        if log:
            log(f"training the baseline ({label}) with the search's budget ({budget['epochs']} epochs"
                + (f", {budget['seconds']} s" if budget["seconds"] else "") + ")")
        model, task, fig = retrain(arch, dataset=str(rec.dataset), measure=False, **budget)
        lat = latency_of(arch, model, task)
        return {"label": label, "how": f"trained here with the search's budget ({fig['epochs']} epochs)",
                "accuracy": float(fig["accuracy"]), "test_accuracy": fig["test_accuracy"], "latency_ms": _lat_ms(lat, axis),
                "latency_source": lat.source}
    import torch

    torch.manual_seed(0)
    model = space.build(arch, task).eval()
    lat = latency_of(arch, model, task)
    return {"label": label, "how": f"latency only ({lat.source}); its accuracy was not evaluated",
            "accuracy": None, "latency_ms": _lat_ms(lat, axis), "latency_source": lat.source}


def _lat_ms(lat: Any, axis: str) -> float:
    if axis == "cpu":
        if "measured_latency_cpu_ms" not in lat.attrs:
            raise SparseNASError("--latency-axis cpu needs measured latencies; this study's evaluator records none")
        return float(lat.attrs["measured_latency_cpu_ms"])
    return float(lat.ms)


# ---------------------------------------------------------------- plots
def _legend_below(ax: Any, ncol: int = 3) -> None:
    """The legend under the axes, never on the data."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol, frameon=False)


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, bbox_inches="tight")  # "tight" keeps a legend placed outside the axes in the image
    _plt().close(fig)


def objective_label(name: str, runtime: str) -> str:
    """What an objective's values are, for an axis."""
    return {"accuracy": "validation accuracy", "latency_ms": f"latency in {runtime} (ms, batch 1)",
            "model_bytes": f"weights in {runtime}'s smallest encoding (bytes)"}.get(name, name)


def _plot_importance(path: Path, importances: dict[str, float], target: str, top: int = 15) -> None:
    """The ``top`` most important choices as bars, the rest summed in one bar, largest on top."""
    plt = _plt()
    items = sorted(importances.items(), key=lambda kv: -kv[1])
    shown, rest = items[:top], items[top:]
    if rest:
        shown.append((f"the other {len(rest)} choices (summed)", sum(v for _, v in rest)))
    names, vals = [n for n, _ in shown][::-1], [v for _, v in shown][::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.3 * len(shown) + 1.4), dpi=120)
    colours = ["#9aa5b1" if n.startswith("the other") else "#1f77b4" for n in names]
    ax.barh(names, vals, color=colours)
    for y, v in enumerate(vals):
        ax.annotate(f"{v:.2f}", (v, y), textcoords="offset points", xytext=(3, -3), fontsize=7)
    ax.set_xlabel(f"importance for {target} (fANOVA, share of variance; all choices sum to 1)")
    ax.set_xlim(0, max(vals) * 1.15 if vals else 1)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(f"which architecture choices matter for {target}"
                 + (f" (top {top} of {len(items)})" if rest else ""), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def _plot_intermediate(path: Path, trials: list[Any], title: str, legend_max: int = 12) -> None:
    """Validation accuracy after each epoch, one line per trial; a legend only when it stays short."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    drawn = [t for t in trials if t.intermediate_values]
    cmap = plt.get_cmap("viridis")
    finals = [float(t.values[0]) for t in drawn]
    lo, hi = (min(finals), max(finals)) if finals else (0.0, 1.0)
    for t in drawn:
        steps = sorted(t.intermediate_values)
        colour = cmap((float(t.values[0]) - lo) / (hi - lo) if hi > lo else 0.5)
        ax.plot(steps, [t.intermediate_values[s] for s in steps], marker="o", ms=3, lw=1.2, color=colour,
                label=f"trial {t.number}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title + ("" if len(drawn) <= legend_max else " (colour: final accuracy)"), fontsize=10)
    ax.grid(alpha=0.3)
    if len(drawn) <= legend_max:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    _save(fig, path)


def _relabel(ax: Any, xlabel: str, ylabel: str, title: str) -> Any:
    """Name the axes of one of Optuna's plots for what they show here."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return ax


def _plot_pareto(path: Path, points: list[tuple[float, float, int]], front: list[tuple[float, float, int]],
                 baseline: dict[str, Any] | None, title: str, xlabel: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=22, c="#9aa5b1", label="trial", zorder=2)
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", c="#d62728", lw=1.2, alpha=0.7, zorder=3)
    ax.scatter([p[0] for p in front], [p[1] for p in front], s=46, c="#d62728", edgecolors="k", linewidths=0.5,
               label=f"Pareto front ({len(front)})", zorder=4)
    for lat, acc, n in front:
        ax.annotate(str(n), (lat, acc), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if baseline is not None:
        if baseline.get("accuracy") is not None:
            ax.scatter([baseline["latency_ms"]], [baseline["accuracy"]], marker="*", s=220, c="#1f77b4",
                       edgecolors="k", linewidths=0.6, zorder=5, label=f"{baseline['label']} ({baseline['how']})")
        else:
            ax.axvline(baseline["latency_ms"], ls="--", c="#1f77b4", lw=1.4, zorder=1,
                       label=f"{baseline['label']}: latency only, accuracy not evaluated")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(0.08)
    _legend_below(ax)
    _save(fig, path)


def _plot_progress(path: Path, trials: list[Any], title: str) -> None:
    plt = _plt()
    nums = [t.number for t in trials]
    accs = [float(t.values[0]) for t in trials]
    best, run = [], -math.inf
    for a in accs:
        run = max(run, a)
        best.append(run)
    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=120)
    ax.scatter(nums, accs, s=16, c="#9aa5b1", label="trial accuracy")
    ax.step(nums, best, where="post", c="#2ca02c", lw=1.6, label="best so far")
    ax.set_xlabel("trial number")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    _legend_below(ax)
    _save(fig, path)


def _plot_alpha(path: Path, series: dict[str, list[list[float]]], title: str, limit: int = 16) -> int:
    plt = _plt()
    names = list(series)[:limit]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows + 0.8), dpi=110, squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        rows_ = series[name]
        for j in range(len(rows_[0])):
            ax.plot(range(len(rows_)), [r[j] if j < len(r) else float("nan") for r in rows_], lw=1.2, label=f"op {j}")
        ax.set_title(name, fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=10)
    fig.supxlabel("search step", fontsize=8)
    fig.supylabel("probability of each candidate op (softmax of alpha)", fontsize=8)
    fig.tight_layout()
    fig.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=min(8, len(labels)),
               frameon=False)
    _save(fig, path)
    return len(names)


def _plot_latency(path: Path, pairs: list[tuple[float, float]], title: str, runtime: str) -> dict[str, float]:
    plt = _plt()
    pred, meas = [p for p, _ in pairs], [m for _, m in pairs]
    err = [abs(p - m) / m for p, m in pairs if m > 0]
    mape = 100 * sum(err) / max(1, len(err))
    within = 100 * sum(e <= 0.10 for e in err) / max(1, len(err))
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    ax.scatter(meas, pred, s=18, c="#1f77b4")
    lo, hi = min(pred + meas), max(pred + meas)
    ax.plot([lo, hi], [lo, hi], c="k", lw=1, label="predicted = measured")
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="k", alpha=0.08, label="±10%")
    ax.set_xlabel(f"measured latency in {runtime} (ms, batch 1)")
    ax.set_ylabel(f"predicted latency in {runtime} (ms, hardware profile)")
    ax.set_title(f"{title}\nMAPE {mape:.1f}%, {within:.0f}% within ±10% (n={len(pairs)})", fontsize=9)
    ax.grid(alpha=0.3)
    _legend_below(ax, ncol=2)
    _save(fig, path)
    return {"latency_mape_pct": mape, "latency_within_10pct": within}


# ---------------------------------------------------------------- the report
def make_report(storage: str, study_name: str | None, out: str | os.PathLike, *, baseline: str = "auto",
                latency_axis: str = "objective", log: Callable[[str], None] | None = None) -> Report:
    """Write the plots and ``report.html`` of a study into ``out``; returns what was written."""
    from optuna.trial import TrialState

    from .search_spaces import get_space
    from .task import Task
    from .tracking import load_study, study_record, trial_record

    if latency_axis not in ("objective", "cpu"):
        raise SparseNASError(f"unknown latency axis '{latency_axis}'; allowed: objective, cpu")
    if baseline not in BASELINE_MODES:
        raise SparseNASError(f"unknown baseline mode '{baseline}'; allowed: {', '.join(BASELINE_MODES)}")
    study = load_study(storage, study_name)
    rec = study_record(study)
    all_trials = study.get_trials(deepcopy=False)
    trials = [t for t in all_trials if t.state == TrialState.COMPLETE and t.values]
    if not trials:
        raise SparseNASError(f"study '{study.study_name}' has no completed trial to report on")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SparseNASError(f"--out {out} is a file; pass a folder")
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(str(out))
    states: dict[str, int] = {}
    for t in all_trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    title = f"{study.study_name}: {len(trials)} completed trials"
    space, why = None, ""
    for name in dict.fromkeys([rec.space, rec.config.get("space")]):  # own name, then as searched
        try:
            space = get_space(name) if name else None
        except SparseNASError as e:
            why = str(e)  # the last is the plug-in's import path: it names the module that is missing
            continue
        if space is not None:
            break
    if space is None and rec.space is not None:
        rep.notes.append(f"space '{rec.space}' cannot be loaded here ({why}): no baseline")
    task = Task.from_dict(rec.task) if rec.task is not None else None
    records = {t.number: trial_record(t) for t in trials}
    source = next((r.latency_source for r in records.values() if r.latency_source), None)
    runtime = study_runtime(rec.config, trials)
    xlabel = f"latency in {runtime} at search time (ms, batch 1{', ' + source if source else ''})"
    if latency_axis == "cpu":  # thread CPU time: robust to other processes loading the machine
        xlabel = f"latency in {runtime}, thread CPU time at search time (ms, batch 1, measured)"

    points = [(lat, float(t.values[0]), t.number) for t in trials if (lat := _latency(t, latency_axis)) is not None]
    front = _front(points)
    base = None
    if points:
        if space is not None and task is not None:
            try:
                base = _baseline(study, space, task, baseline, trials, log, latency_axis)
            except SparseNASError as e:
                rep.notes.append(f"baseline not drawn: {e}")
        elif baseline != "none":
            rep.notes.append("baseline not drawn: the study records no space/task")
        _plot_pareto(out / "pareto.png", points, front, base, title, xlabel)
        rep.files.append("pareto.png")
    else:
        rep.notes.append("no trial records a latency: no Pareto plot")
    if base is not None:
        rep.notes.append(f"baseline: {base['label']}, {base['how']}; latency {base['latency_ms']:.4f} ms"
                         + (f", accuracy {base['accuracy']:.4f}" if base.get("accuracy") is not None else ""))
    _plot_progress(out / "progress.png", trials, f"{study.study_name}: search progress")
    rep.files.append("progress.png")

    history = rec.alpha_history
    hist_from = "study"
    if history is None:
        for t in all_trials:
            if (trial_history := trial_record(t).alpha_history) is not None:
                history, hist_from = trial_history, f"trial {t.number}"
                break
    series = alpha_series(history) if history is not None else {}
    if series:
        shown = _plot_alpha(out / "alpha.png", series, f"architecture weights over the search ({hist_from})")
        rep.files.append("alpha.png")
        if shown < len(series):
            rep.notes.append(f"alpha plot shows {shown} of {len(series)} decisions")

    pairs = []
    for r in records.values():
        # compare like with like: the measurement in the statistic the profile predicts
        pred, meas = r.predicted_latency_ms, r.measured()
        if pred is not None and meas is not None:
            pairs.append((pred, meas))
    if pairs:
        rep.figures.update(_plot_latency(out / "latency.png", pairs, "predicted vs measured latency", runtime))
        rep.files.append("latency.png")

    _optuna_plots(study, out, trials, rep)

    front_trials = sorted((t for t in trials if t.number in {n for _, _, n in front}), key=lambda t: -t.values[0])
    rep.figures.update({"study": study.study_name, "states": states, "completed": len(trials),
                        "front": [t.number for t in front_trials],
                        "best_accuracy": max(float(t.values[0]) for t in trials), "baseline": base})
    from .tracking import mask_url

    (out / "report.html").write_text(_html(study, mask_url(storage), rep, front_trials, states))
    rep.files.append("report.html")
    return rep


OPTUNA_CAPTIONS = {
    "optuna_hypervolume.png": "Hypervolume of the Pareto front against trials (Optuna); reference point: accuracy 0 "
                              "and 1.1x the slowest latency.",
    "optuna_timeline.png": "When each trial ran and how it ended (Optuna's timeline).",
    "optuna_intermediate.png": "Validation accuracy per epoch of each trial (Optuna's intermediate values).",
}


def _optuna_plots(study: Any, out: Path, trials: list[Any], rep: Report) -> None:
    """Optuna's matplotlib plots that fit the study; one that cannot be drawn (too few trials, no
    intermediate values...) becomes a note, never an error."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as ovm

    from .log import optuna_verbosity

    from .tracking import study_record

    objectives = list(study_record(study).objectives)
    runtime = study_runtime(study_record(study).config, trials)
    plots: list[tuple[str, Callable[[], Any], str]] = []
    if len({tuple(sorted(t.params.items())) for t in trials}) >= 2:
        for i, name in enumerate(objectives):
            label = objective_label(name, runtime)
            plots.append((f"optuna_importance_{name}.png",
                          lambda i=i, label=label, name=name: _plot_importance(
                              out / f"optuna_importance_{name}.png",
                              optuna.importance.get_param_importances(study, target=lambda t: t.values[i]), label),
                          f"Importance of the architecture choices for {label} (Optuna's fANOVA evaluator; the "
                          "15 most important, the rest summed)."))
    if len(objectives) > 1:
        worst = [0.0 if d == optuna.study.StudyDirection.MAXIMIZE else
                 1.1 * max(float(t.values[i]) for t in trials) for i, d in enumerate(study.directions)]
        plots.append(("optuna_hypervolume.png", lambda: _relabel(
            ovm.plot_hypervolume_history(study, worst), "trial number",
            "hypervolume (objective space the front dominates)", "hypervolume of the Pareto front after each trial"),
            ""))
    if any(t.datetime_start is not None for t in study.get_trials(deepcopy=False)):
        plots.append(("optuna_timeline.png", lambda: _relabel(ovm.plot_timeline(study), "time (local clock)",
                                                               "trial number", "when each trial ran, and its state"),
                      ""))
    if any(t.intermediate_values for t in trials):
        plots.append(("optuna_intermediate.png",
                      lambda: _plot_intermediate(out / "optuna_intermediate.png", trials,
                                                 "validation accuracy after each epoch, per trial"), ""))
    plt = _plt()
    for name, draw, caption in plots:
        try:
            # rc_context: Optuna switches matplotlib to its ggplot style; keep that out of the process
            with warnings.catch_warnings(), optuna_verbosity(optuna.logging.ERROR), plt.rc_context():
                warnings.simplefilter("ignore")  # these plots are "experimental" in Optuna's terms
                ax = draw()
            if ax is not None:  # one of Optuna's own plots (ours save themselves)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.set_size_inches(7.5, 4.5)
                fig.set_dpi(120)
                fig.tight_layout()
                _save(fig, out / name)
        except Exception as e:  # Optuna refuses some studies (e.g. a single distinct architecture)
            rep.notes.append(f"Optuna plot {name} not drawn: {type(e).__name__}: {e}")
            plt.close("all")
            continue
        rep.files.append(name)
        OPTUNA_CAPTIONS.setdefault(name, caption)


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _html(study: Any, storage: str, rep: Report, front: list[Any], states: dict[str, int]) -> str:
    e = html.escape
    from .tracking import study_record, trial_record

    rec = study_record(study)
    runtime = study_runtime(rec.config, front)
    out = Path(rep.out)
    summary = {"storage": storage, "space": rec.space, "dataset": rec.dataset,
               "strategy": rec.strategy, "objectives": ", ".join(rec.objectives),
               "trials": ", ".join(f"{k} {v}" for k, v in states.items())}
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in summary.items())

    def cell(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    front_rows = "".join(
        f"<tr><td>{t.number}</td><td>{t.values[0]:.4f}</td><td>{cell((r := trial_record(t)).test_accuracy, '.4f')}</td>"
        f"<td>{cell(r.latency_ms, '.4f')}</td><td>{cell(r.params, ',')}</td><td>{cell(r.nnz, ',')}</td>"
        f"<td><code>nas export --storage {e(storage)} --study {e(study.study_name)} --trial {t.number} --out found-{t.number}/</code></td></tr>"
        for t in front)
    captions = {"pareto.png": "Accuracy against latency; red: the Pareto front (numbers are trials).",
                "progress.png": "Accuracy of each trial and the best so far.",
                "alpha.png": "Architecture weights (softmax of alpha) per decision over the search.",
                "latency.png": "Latency predicted by the hardware profile against latency measured here.",
                **OPTUNA_CAPTIONS}
    figures = "".join(f"<figure><img src='{_img(out / f)}' alt='{e(f)}'><figcaption>{e(captions[f])}</figcaption></figure>"
                      for f in rep.files if f.endswith(".png"))
    notes = "".join(f"<li>{e(n)}</li>" for n in rep.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sparsenas report: {e(study.study_name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left;font-size:14px}}
figure{{margin:1.5em 0}}img{{max-width:100%}}figcaption{{color:#555;font-size:13px}}code{{font-size:12px}}</style></head>
<body><h1>Search report: {e(study.study_name)}</h1>
<table>{rows}</table>
<h2>Pareto front</h2>
<table><tr><th>trial</th><th>val acc</th><th>test acc</th><th>latency ms ({e(runtime)}, at search time)</th><th>params</th><th>non-zeros</th><th>export</th></tr>
{front_rows}</table>
{figures}
<h2>Notes</h2><ul>{notes or '<li>none</li>'}</ul>
</body></html>
"""
