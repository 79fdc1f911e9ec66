"""The studies of a storage at a glance (``nas studies``)."""
from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from .records import pareto_front, study_record
from .storage import open_storage


def study_overview(storage: str) -> list[dict[str, Any]]:
    """Each study of ``storage``: name, what it searched (space, dataset, strategy, runtime when
    recorded), trials by state and the best value of each objective. A sqlite or journal file that
    does not exist is an error, not a new empty storage."""
    st = open_storage(storage, heartbeat=False, must_exist=True)
    out = []
    for summary in optuna.get_all_study_summaries(st, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=st)
        rec = study_record(study)
        trials = study.get_trials(deepcopy=False)
        states: dict[str, int] = {}
        for t in trials:
            states[t.state.name] = states.get(t.state.name, 0) + 1
        best: dict[str, float] = {}
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
        for i, (name, direction) in enumerate(zip(rec.objectives, study.directions)):
            vals = [t.values[i] for t in done if len(t.values) > i]
            if vals:
                best[name] = max(vals) if direction == optuna.study.StudyDirection.MAXIMIZE else min(vals)
        front = pareto_front(study) if done else []
        out.append({"study": rec.name, "space": rec.space, "dataset": rec.dataset, "strategy": rec.strategy,
                    "sampler": rec.config.get("sampler"), "runtime": rec.runtime, "trials": len(trials),
                    "states": states, "best": best, "front": len(front),
                    "front_trials": [{"trial": t.number, **dict(zip(rec.objectives, t.values))} for t in front]})
    return out


