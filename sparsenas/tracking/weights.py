"""Trained weights saved with a study: the artifact folder beside a file storage (or --artifact-dir),
uploading a trial's state_dict as an Optuna artifact, and loading it back; supernet checkpoint folders."""
from __future__ import annotations

import os
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from ..errors import SparseNASError
from .records import study_record, summary_artifact_dir, trial_record
from .storage import _file_path, open_storage


def default_artifact_dir(storage_url: str) -> str | None:
    """``<file stem>-artifacts/`` beside a sqlite or journal file; None for database servers."""
    if not isinstance(storage_url, str) or "://" not in storage_url:
        return None
    path = _file_path(storage_url)
    if path is None:
        return None
    return os.path.splitext(path)[0] + "-artifacts"


def checkpoint_dir_for(storage_url: str, study_name: str, checkpoint_dir: str | None = None) -> str | None:
    """The folder of a study's supernet checkpoints: ``<checkpoint_dir>/<study>/`` when given, else
    ``<file stem>-checkpoints/<study>/`` beside a sqlite or journal file; None for database servers."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_name) or "study"
    if checkpoint_dir:
        return os.path.join(checkpoint_dir, safe)
    artifacts = default_artifact_dir(storage_url)
    return None if artifacts is None else os.path.join(artifacts[:-len("-artifacts")] + "-checkpoints", safe)


class _AtomicFileStore(optuna.artifacts.FileSystemArtifactStore):
    """Optuna's file artifact store, writing each artifact under a temporary name and renaming it: a
    write cut short (a full disk) leaves no partial weights file under the artifact's name."""

    def write(self, artifact_id: str, content_body: Any) -> None:
        import shutil

        from ..atomic import write_atomic

        # Optuna's check that the id stays inside the folder
        write_atomic(self._get_filepath(artifact_id), lambda f: shutil.copyfileobj(content_body, f))


def artifact_store(path: str, *, create: bool = False) -> optuna.artifacts.FileSystemArtifactStore:
    if create:
        os.makedirs(path, exist_ok=True)
    return _AtomicFileStore(path)


def artifact_dir_for(storage_url: str, artifact_dir: str | None = None,
                     study: optuna.Study | None = None) -> str | None:
    """Where the artifacts of ``storage_url`` live: ``artifact_dir`` when given, else the folder the
    search recorded in the study (``artifact_dir`` study attr), else the default beside a file storage."""
    if artifact_dir:
        return artifact_dir
    if study is not None and study_record(study).artifact_dir:
        return str(study_record(study).artifact_dir)
    return default_artifact_dir(storage_url)


def storage_artifact_dir(storage_url: str, artifact_dir: str | None = None) -> str | None:
    """The existing artifact folder of a storage, for optuna-dashboard: ``artifact_dir`` when given,
    else the default beside a file storage, else the one folder its studies recorded; None if none."""
    if artifact_dir:
        if not os.path.isdir(artifact_dir):
            raise SparseNASError(f"artifact folder {artifact_dir} does not exist; pass the --artifact-dir the search "
                                 "wrote its weights to")
        return artifact_dir
    path = default_artifact_dir(storage_url)
    if path is None or not os.path.isdir(path):
        st = open_storage(storage_url, heartbeat=False, must_exist=True)
        recorded = {summary_artifact_dir(s) for s in optuna.get_all_study_summaries(st)} - {None}
        path = next(iter(recorded)) if len(recorded) == 1 else path
    return path if path and os.path.isdir(path) else None


def artifact_store_for(storage_url: str, artifact_dir: str | None = None) -> optuna.artifacts.FileSystemArtifactStore | None:
    """The file artifact store of a storage (see :func:`storage_artifact_dir`), or None."""
    path = storage_artifact_dir(storage_url, artifact_dir)
    return artifact_store(path) if path else None


def load_weights(storage_url: str, study: optuna.Study, trial: FrozenTrial,
                 artifact_dir: str | None = None) -> dict[str, Any] | None:
    """The trained state_dict saved for ``trial`` (None when the trial has none), loaded with
    ``torch.load(weights_only=True)``."""
    import tempfile

    import torch

    artifact_id = trial_record(trial).weights_artifact
    if artifact_id is None:
        return None
    path = artifact_dir_for(storage_url, artifact_dir, study)
    if path is None or not os.path.isdir(path):
        raise SparseNASError(f"trial {trial.number} has saved weights (artifact {artifact_id}), but the artifact folder "
                             f"{path or '(unknown for this storage)'} is missing; pass --artifact-dir DIR, or --train "
                             "to retrain the architecture")
    with tempfile.TemporaryDirectory() as tmp:
        dst = os.path.join(tmp, "weights.pt")
        try:
            optuna.artifacts.download_artifact(artifact_store=artifact_store(path), artifact_id=artifact_id, file_path=dst)
        except Exception as e:  # the store raises ArtifactNotFound, OSError...
            raise SparseNASError(f"cannot read the weights of trial {trial.number} (artifact {artifact_id}) from {path}: "
                                 f"{type(e).__name__}: {e}; pass --train to retrain the architecture") from None
        try:
            state = torch.load(dst, weights_only=True)
        except Exception as e:  # a damaged file in the artifact folder
            state = e
        if not isinstance(state, dict):
            what = f"{type(state).__name__}: {str(state).splitlines()[0] if str(state) else ''}" \
                if isinstance(state, Exception) else f"it holds a {type(state).__name__}, not a state_dict"
            raise SparseNASError(f"the weights of trial {trial.number} ({os.path.join(path, artifact_id)}) cannot be "
                                 f"read ({what}); pass --train to retrain the architecture") from None
        return state



def upload_weights(store: optuna.artifacts.FileSystemArtifactStore, trial: optuna.Trial | FrozenTrial,
                   state_dict: dict[str, Any], storage: optuna.storages.BaseStorage | None = None) -> str:
    """Upload ``state_dict`` to the file artifact ``store`` as an artifact of the RUNNING
    ``trial`` (Optuna refuses artifacts on finished trials; ``storage``: a FrozenTrial's); returns
    the artifact id. Tensors are
    copied, so a view into a larger network (an extracted child) saves only its own values."""
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"trial-{trial.number}-weights.pt")
        torch.save({k: v.detach().cpu().clone() for k, v in state_dict.items()}, path)
        return optuna.artifacts.upload_artifact(artifact_store=store, file_path=path, study_or_trial=trial,
                                                storage=storage, mimetype="application/x-pytorch")

