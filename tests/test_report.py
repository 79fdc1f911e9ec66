"""nas report on a real search: plots, baseline marking, alpha and latency plots, one HTML page."""
import base64
import json
import re
import shutil

import matplotlib.image
import optuna
import pytest

import sparsenas
from sparsenas.report import alpha_series
from sparsenas.search_spaces import get_space

from _small_study import STUDY, run_cli, small_study


@pytest.fixture(scope="module")
def enriched(tmp_path_factory):
    """A copy of the small search plus what other strategies record: the dense reference
    architecture as a trial, a trial with predicted and measured latency, and an alpha history."""
    _, db = small_study(tmp_path_factory)
    copy = tmp_path_factory.mktemp("report") / "r.db"
    for suffix in ("", "-wal", "-shm"):  # a WAL database: its last commits may be in the -wal file still
        if db.with_name(db.name + suffix).exists():
            shutil.copy(db.with_name(db.name + suffix), copy.with_name(copy.name + suffix))
    url = f"sqlite:///{copy}"
    st = optuna.load_study(study_name=STUDY, storage=url)
    t0 = st.trials[0]
    task = sparsenas.Task.from_dict(st.user_attrs["task"])
    ref = get_space("sparse_mbv2").default_arch(task)
    st.add_trial(optuna.trial.create_trial(
        params=dict(ref.choices), distributions=t0.distributions, values=[0.5, 9.0],
        user_attrs={"arch": ref.to_json(), "arch_digest": ref.digest(), "latency_ms": 9.0,
                    "latency_source": "table:test-cpu", "measured_latency_ms": 9.9}))
    st.set_user_attr("alpha_history", {"s1b1_op": [[0.0, 0.0, 0.0], [1.0, 0.0, -1.0], [2.0, 0.0, -2.0]],
                                       "s2b1_op": [[0.5, 0.5], [0.7, 0.3], [0.9, 0.1]]})
    return url, st


def test_report_writes_plots_and_a_self_contained_page(enriched, tmp_path):
    url, st = enriched
    out = tmp_path / "rep"
    rc, stdout, err = run_cli(["report", "--storage", url, "--study", STUDY, "--out", str(out), "--json"])
    assert rc == 0, err
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["files"][:4] == ["pareto.png", "progress.png", "alpha.png", "latency.png"]
    # Optuna's own plots that fit a NAS study, beside ours (the reference trial has no start time)
    assert res["files"][4:] == ["optuna_importance_accuracy.png", "optuna_importance_latency_ms.png",
                                "optuna_hypervolume.png", "optuna_timeline.png", "optuna_intermediate.png",
                                "report.html"], res["notes"]
    for f in res["files"][:-1]:
        img = matplotlib.image.imread(out / f)
        assert img.shape[0] > 250 and img.shape[1] > 500
    # the front is Optuna's own Pareto front of the study
    assert sorted(res["front"]) == sorted(t.number for t in st.best_trials)
    # the dense reference is in the study: it is marked from its trial, not recomputed
    ref_trial = st.trials[-1].number
    assert res["baseline"]["trial"] == ref_trial and res["baseline"]["accuracy"] == 0.5
    assert "MobileNetV2" in res["baseline"]["label"]
    # the added trial had a table prediction (9.0) and a measurement (9.9): |9-9.9|/9.9; the searched
    # trials (measured, with the profile's prediction beside it) add their own pairs
    from sparsenas.tracking import trial_record
    recs = [trial_record(t) for t in st.get_trials(deepcopy=False)]
    pairs = [(r.predicted_latency_ms, r.measured()) for r in recs
             if r.predicted_latency_ms is not None and r.measured() is not None]
    assert (9.0, 9.9) in pairs
    assert res["latency_mape_pct"] == pytest.approx(100 * sum(abs(p - m) / m for p, m in pairs) / len(pairs))
    page = (out / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == len(res["files"]) - 1 and all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert "src='http" not in page and STUDY in page
    assert f"--trial {res['front'][0]}" in page


def test_alpha_history_forms_are_normalised():
    a = alpha_series({"x": [[0.0, 0.0], [1.0, -1.0]]})
    assert a["x"][0] == [0.5, 0.5] and a["x"][1][0] > 0.85  # logits are softmaxed
    b = alpha_series([{"x": [0.2, 0.8]}, {"x": [0.1, 0.9]}])
    assert b == {"x": [[0.2, 0.8], [0.1, 0.9]]}  # probabilities are kept, per-step dicts regrouped
    assert alpha_series(json.dumps({"x": [[0.3, 0.7]]})) == {"x": [[0.3, 0.7]]}
    assert alpha_series("not json") == {}


def test_report_errors_are_clear(enriched, tmp_path):
    url, _ = enriched
    rc, _, err = run_cli(["report", "--storage", url, "--study", "nope", "--out", str(tmp_path / "r")])
    assert rc == 2 and "no study 'nope'" in err
    empty = f"sqlite:///{tmp_path / 'e.db'}"
    optuna.create_study(storage=empty, study_name="empty")
    rc, _, err = run_cli(["report", "--storage", empty, "--out", str(tmp_path / "r")])
    assert rc == 2 and "no completed trial" in err
    assert not (tmp_path / "r").exists()


def test_cpu_latency_axis_uses_the_measured_thread_cpu_time(enriched, tmp_path):
    url, st = enriched
    rc, stdout, err = run_cli(["report", "--storage", url, "--study", STUDY, "--out", str(tmp_path / "c"),
                               "--latency-axis", "cpu", "--baseline", "none", "--json"])
    assert rc == 0, err
    res = json.loads(stdout.strip().splitlines()[-1])
    pts = [(t.user_attrs["measured_latency_cpu_ms"], t.values[0], t.number) for t in st.trials
           if t.user_attrs.get("measured_latency_cpu_ms") is not None]
    front = [n for lat, acc, n in pts if not any(l2 <= lat and a2 >= acc and (l2, a2) != (lat, acc) for l2, a2, _ in pts)]
    assert sorted(res["front"]) == sorted(front) and res["baseline"] is None
