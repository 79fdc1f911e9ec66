"""The one place that talks to Optuna storage.

Every search is an Optuna study: one trial per evaluated architecture, params = the architecture's
choices, values = (accuracy, latency_ms) or (accuracy,), user attrs = architecture JSON and costs,
intermediate values = validation accuracy per epoch. Four jobs, one module each:

- :mod:`.storage`: storage URLs, opening a storage (sqlite, journal, servers, the gRPC proxy), loading a study;
- :mod:`.records`: the trial-record schema (every attribute: key, type, meaning) and its typed readers;
- :mod:`.writer`: :class:`Tracker`, the one writer every strategy records through;
- :mod:`.weights`: trained weights saved as Optuna artifacts, and checkpoint folders.
"""
from __future__ import annotations

from ..config import DEFAULT_STORAGE
from .records import (StudyRecord, TrialRecord, arch_of, pareto_front, schema, schema_table,
                      study_record, trial_record)
from .storage import (HEARTBEAT_GRACE, HEARTBEAT_INTERVAL, load_study, mask_url, open_storage, search_fault,
                      serve_storage_proxy)
from .overview import study_overview
from .weights import (artifact_dir_for, artifact_store_for, checkpoint_dir_for, default_artifact_dir, load_weights,
                      storage_artifact_dir)
from .writer import DIRECTIONS, StudySpec, Tracker

MULTI = ("accuracy", "latency_ms")
SINGLE = ("accuracy",)
OBJECTIVE_NAMES = {"accuracy": "accuracy", "latency": "latency_ms", "size": "model_bytes"}  # flag name -> field

__all__ = ["DEFAULT_STORAGE", "DIRECTIONS", "HEARTBEAT_GRACE", "HEARTBEAT_INTERVAL", "MULTI", "OBJECTIVE_NAMES",
           "SINGLE", "StudyRecord", "StudySpec", "Tracker", "TrialRecord", "arch_of",
           "artifact_dir_for", "artifact_store_for", "checkpoint_dir_for", "default_artifact_dir", "load_study",
           "load_weights", "mask_url", "open_storage", "pareto_front", "schema", "schema_table", "search_fault",
           "serve_storage_proxy",
           "storage_artifact_dir", "study_overview", "study_record", "trial_record"]
