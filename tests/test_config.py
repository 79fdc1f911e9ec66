"""Search configs in TOML: --print-config round trip, flags over the file, the study keeps the config;
strategy options declared once give the flags and the errors for unknown or mistyped options."""
import json

import pytest

from sparsenas.api import SearchConfig
from sparsenas.config import config_from_dict, config_to_toml, read_config
from sparsenas.strategies import STRATEGIES

from _small_study import run_cli

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib


def _print_config(args):
    rc, out, err = run_cli(["search", *args, "--print-config"])
    assert rc == 0, err
    return out


def test_print_config_round_trip(tmp_path):
    first = _print_config(["--space", "g2g_mlp", "--strategy", "entangled", "--mixing", "dirichlet",
                           "--search-epochs", "3", "--trials", "7", "--epochs", "2", "--objective", "accuracy",
                           "--max-latency-ms", "1.5", "--no-hw-anchor", "--pruner", "hyperband"])
    path = tmp_path / "search.toml"
    path.write_text(first)
    second = _print_config(["--config", str(path)])
    assert second == first
    config = SearchConfig(**read_config(path, SearchConfig))
    assert config == SearchConfig(space="g2g_mlp", strategy="entangled", trials=7, epochs=2, objective="accuracy",
                                  max_latency_ms=1.5, hw_anchor=False, pruner="hyperband",
                                  options={"mixing": "dirichlet", "search_epochs": 3})
    # every field survives, tables included
    full = SearchConfig(strategy="tpe", dataset="mnist1d", time_budget=2.5, sampler="nsga3",
                        sampler_args={"population_size": 6, "crossover_prob": 0.8},
                        options={"fixed": {"s1_depth": 1, "s2b1_conn": "g2g"}})
    assert SearchConfig(**config_from_dict(tomllib.loads(config_to_toml(full)), SearchConfig)) == full


@pytest.mark.parametrize("strategy", ["tpe", "dass", "entangled"])
def test_print_config_hints_are_valid_toml_when_uncommented(strategy):
    text = _print_config(["--strategy", strategy])
    assert "worker =" not in text  # internal: set by the worker runner, never by a user
    for key in ("study", "timeout", "[sampler]"):
        assert f"# {key}" in text, key
    # uncomment every hint: the file still parses and every key is one a config may hold, typed right
    uncommented = "\n".join(line[2:] if line.startswith("# ") and (" = " in line or line.startswith("# [")) else line
                            for line in text.splitlines())
    kw = config_from_dict(tomllib.loads(uncommented), SearchConfig)
    assert {"study", "timeout", "sampler", "dataset"} <= set(kw)
    STRATEGIES.get(strategy).resolve_options(kw["options"])


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('trials = 30\nepochs = 3\n[options]\nfixed = { s1_depth = 1 }\n[sampler]\nname = "gp"\n'
                    'n_startup_trials = 4\n')
    data = tomllib.loads(_print_config(["--config", str(path), "--trials", "5", "--fixed", "s1_depth=2"]))
    assert data["trials"] == 5 and data["epochs"] == 3
    assert data["options"] == {"fixed": {"s1_depth": 2}}
    assert data["sampler"] == {"name": "gp", "n_startup_trials": 4}


@pytest.mark.parametrize("text,message", [
    ("trails = 3\n", "unknown key 'trails'; allowed keys: artifact_dir, batch_size"),
    ("trials = 'many'\n", "config key 'trials' must be int"),
    ("[options]\nmixing = 'x'\n", "strategy 'tpe' does not take option(s) mixing; it takes: fixed"),
    ("strategy = 'dass'\n[options]\nsearch_epochs = 'two'\n", "option search_epochs (--search-epochs) must be an integer"),
    ("strategy = 'dass'\n[options]\nphases = [0.5, 'x', 0.2]\n", "option phases (--phases) must be a number"),
    ("trials = [\n", "is not valid TOML"),
])
def test_bad_config_is_exit_2(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    rc, out, err = run_cli(["search", "--config", str(path), "--print-config"])
    assert rc == 2 and message in err, err
    assert "Traceback" not in err


def test_unknown_option_for_the_strategy_is_exit_2_naming_the_allowed_ones(tmp_path):
    db = tmp_path / "x.db"
    rc, out, err = run_cli(["search", "--strategy", "tpe", "--cells", "3", "--storage", f"sqlite:///{db}"])
    assert rc == 2 and "strategy 'tpe' does not take option(s) cells; it takes: fixed" in err, err
    rc, out, err = run_cli(["search", "--strategy", "balanced", "--mixing", "dirichlet", "--storage", f"sqlite:///{db}"])
    assert rc == 2 and "strategy 'balanced' does not take option(s) mixing" in err
    assert "supernets, search_epochs, retrain_top, retrain_epochs, fix" in err
    assert not db.exists()


def test_mistyped_flag_is_an_argparse_error(capsys):
    from sparsenas.cli import main

    with pytest.raises(SystemExit) as e:
        main(["search", "--strategy", "entangled", "--finetune-steps", "many"])
    assert e.value.code == 2 and "--finetune-steps: expected N, got 'many'" in capsys.readouterr().err


def test_every_option_is_declared_once_and_agrees_across_strategies():
    seen = {}
    for name, cls in STRATEGIES.items():
        names = [o.name for o in cls.options]
        assert len(names) == len(set(names)), name
        for o in cls.options:
            assert o.help, (name, o.name)
            if o.name in seen:  # one flag serves every strategy that has the option: same type
                assert seen[o.name].type is o.type, o.name
            seen[o.name] = o
    # the options that were Python-only are flags now
    assert {"mixing", "sandwich_epochs", "arch_lr", "order", "phases", "weight_lr", "fixed", "fix"} <= set(seen)
    # dass's declared defaults are its config's defaults
    from sparsenas.strategies.dass import DassConfig

    dass = STRATEGIES.get("dass")
    resolved = DassConfig.from_options(dass.resolve_options({}))
    assert resolved == DassConfig()


def test_help_shows_strategy_options_and_examples():
    import contextlib
    import io

    from sparsenas.cli import build_parser

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        build_parser(["search", "--help"]).parse_args(["search", "--help"])
    text = buf.getvalue()
    assert "strategy entangled (--strategy entangled):" in text and "--mixing {softmax,dirichlet}" in text
    assert "strategy dass (--strategy dass):" in text and "--order {first,second}" in text
    assert text.rstrip().splitlines()[-1].strip().startswith("nas search")


def test_the_study_stores_the_config_it_ran_with(tmp_path, monkeypatch):
    from pathlib import Path

    import optuna

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    db = tmp_path / "s.db"
    path = tmp_path / "s.toml"
    path.write_text(f'space = "tiny_space:TinyMLP"\ndataset = "synthetic"\ntrials = 1\nepochs = 1\n'
                    f'latency = "measured"\nstorage = "sqlite:///{db}"\n[sampler]\nname = "random"\n')
    rc, out, err = run_cli(["search", "--config", str(path), "--seed", "3", "--no-progress", "-q"])
    assert rc == 0, err
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{db}")
    stored = SearchConfig(**summary.user_attrs["config"])
    assert stored == SearchConfig(**{**read_config(path, SearchConfig), "seed": 3})
    # and it prints back as the config the file and flags resolve to
    assert tomllib.loads(config_to_toml(stored)) == tomllib.loads(_print_config(["--config", str(path), "--seed", "3"]))
