"""The per-user profile cache: what a profile lacks is timed once on this machine, kept, and predicted."""
from __future__ import annotations

import json
import logging

import pytest

import sparsenas
from sparsenas.hwprofiles import default_profile_path
from sparsenas.hwprofiles.cache import CACHE_ENV, ProfileCache, cache_dir, cache_path
from sparsenas.hwprofiles.table import LatencyTable

# every sparse_mbv2 network on 8x8 grey images with 4 classes runs these two
STEM, HEAD = "conv2d:c1-16:k3:s1:g1:in8x8:sp0:b1", "linear:c320-4:sp0:b1"


def test_cache_dir_follows_the_override_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if cache_dir().parent == tmp_path / "xdg":  # Linux and the BSDs; macOS and Windows have their own place
        assert cache_dir() == tmp_path / "xdg" / "sparsenas"
    path = cache_path("onnxruntime", "1.32.0")
    assert path.parent.name == "onnxruntime-1.32.0" and path.suffix == ".json"


def _search(hw, url, study):
    return sparsenas.search(space="sparse_mbv2", strategy="random", dataset="synthetic", trials=2, epochs=1,
                            limit=32, batch_size=16, storage=url, study=study, hw=str(hw), runtime="onnxruntime",
                            hw_anchor=False, progress=False)


@pytest.mark.slow
def test_missing_kernels_are_timed_once_cached_and_predicted(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    shipped = json.loads(default_profile_path("onnxruntime").read_text())
    for k in (STEM, HEAD):
        del shipped["entries"][k]
    hw = tmp_path / "cut.json"
    hw.write_text(json.dumps(shipped))
    url = f"sqlite:///{tmp_path / 'nas.db'}"

    with caplog.at_level(logging.INFO, logger="sparsenas"):
        study = _search(hw, url, "first")
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 2
    name = shipped["name"]
    assert all(t.user_attrs["latency_source"] == f"table:{name}" for t in trials)  # predicted, not measured
    assert all(t.user_attrs["hw_cache_kernels"] == 2 for t in trials)
    cache = ProfileCache(LatencyTable.load(hw))
    assert set(json.loads(cache.path.read_text())["entries"]) == {STEM, HEAD}  # just those, timed here
    added = [r.getMessage() for r in caplog.records if "hardware-profile cache: timed" in r.getMessage()]
    assert len(added) == 1 and STEM in added[0] and HEAD in added[0] and " s (" in added[0], added
    assert json.loads(hw.read_text())["entries"].keys() == shipped["entries"].keys()  # the profile itself untouched

    caplog.clear()
    before = cache.path.read_text()
    with caplog.at_level(logging.INFO, logger="sparsenas"):
        again = _search(hw, url, "second")
    assert all(t.user_attrs["latency_source"] == f"table:{name}" for t in again.trials)
    assert not [r for r in caplog.records if "hardware-profile cache" in r.getMessage()]
    assert cache.path.read_text() == before  # nothing added, nothing rewritten
