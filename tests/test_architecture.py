"""The house's rules, read from the source: who may touch trial attributes, and that the schema
table in docs/architecture.md is the one the schema generates."""
import ast
from pathlib import Path
from typing import Any

import sparsenas
from sparsenas.tracking import records

PACKAGE = Path(sparsenas.__file__).parent
RAW_ATTRS = {"user_attrs", "system_attrs", "set_user_attr", "set_system_attr", "set_trial_user_attr",
             "set_trial_system_attr", "set_study_user_attr", "set_study_system_attr"}
RECORD_MODULE = PACKAGE / "tracking" / "records.py"
# mo-asha is an Optuna pruner that also runs in a plain Optuna study: its rung results are its own
# state in Optuna's system attrs (as Optuna's pruners keep theirs), and the objectives it ranks are
# read by the attribute names it is given; it sits below tracking (the writer asks it), so it cannot
# read through the record module without an import circle
OPTUNA_PRUNERS = PACKAGE / "pruners"


def _uses(path: Path, names: set[str]) -> list[str]:
    """``file:line name`` for every attribute, keyword or argument of ``path`` named one of ``names``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        name = (node.attr if isinstance(node, ast.Attribute) else node.arg if isinstance(node, (ast.keyword, ast.arg))
                else None)
        if name in names:
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name}")
    return found


def test_only_the_record_module_touches_trial_attributes():
    offenders = [use for path in sorted(PACKAGE.rglob("*.py")) if path != RECORD_MODULE
                 and OPTUNA_PRUNERS not in path.parents for use in _uses(path, RAW_ATTRS)]
    assert offenders == [], ("read and write trial/study attributes through sparsenas.tracking.records "
                             "(trial_record, study_record, Tracker), not Optuna's attrs:\n" + "\n".join(offenders))
    assert _uses(RECORD_MODULE, RAW_ATTRS), "the scan no longer sees the record module's own uses"


def test_every_schema_key_is_declared_once():
    for kind in (records.TrialRecord, records.StudyRecord):
        keys = [k for row in records.schema(kind) for k in (row["key"], *row["old"]) if k]
        assert len(keys) == len(set(keys)), kind.__name__
        assert all(row["meaning"] for row in records.schema(kind))


def test_the_schema_table_in_the_docs_is_the_generated_one():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    begin = doc.index("<!-- schema:begin")
    block = doc[doc.index("\n", begin) + 1:doc.index("<!-- schema:end -->")]
    assert block == records.schema_table(), "docs/architecture.md is out of date: run python docs/generate.py"


def test_supernets_are_looked_up_only_through_the_registry():
    """One registry keyed by (space, kind): no per-kind registry, no duck-typed space method, no dict of
    spaces beside it (the names the four old ways went by), and nobody reads its table directly."""
    registry = PACKAGE / "supernets" / "registry.py"
    old_ways = {"MIXED", "ENTANGLED", "LAYER_CHOICE_SPACES", "path_supernet", "_BUILDERS"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == registry:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            if name in old_ways:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name}")
    assert offenders == [], "look supernets up with sparsenas.supernets.registry (find_supernet, get_supernet):\n" + \
        "\n".join(offenders)


RUNTIMES_PACKAGE = PACKAGE / "runtimes"
# Where a runtime's name may stand as a default or be compared outside sparsenas/runtimes/, and why:
# (file, name) -> reason. Everything else takes the runtime it is given, or DEFAULT_RUNTIME through
# get_runtime(None); behaviour that differs by runtime is a method of the Runtime class.
RUNTIME_NAME_ALLOWED = {
    ("sparsenas/export.py", "mnn"): "'mnn' in formats: the export format (FORMATS), which bears its runtime's name",
    # the shipped profiles the script extends unless told which: a list of files, not a runtime chosen for the
    # user (MNN's profile, sparse_mbv2 only, is extended on request)
    ("benchmarks/extend_shipped_profiles.py", "onnxruntime"): "the shipped profiles it keeps extended",
    ("benchmarks/extend_shipped_profiles.py", "torch"): "the shipped profiles it keeps extended",
}


def _runtime_name_uses(path: Path, names: set[str]) -> list[str]:
    """``line what 'name'`` for every runtime name written as a default (a parameter's, a dataclass
    field's, argparse's ``default=``, ``x or 'name'``, ``... else 'name'``) or compared (==, !=, in)."""
    def named(node: ast.AST | None) -> list[str]:
        elts = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return [e.value for e in elts if isinstance(e, ast.Constant) and e.value in names]

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        hits: list[tuple[str, Any]] = []  # (what, the expression that may be a runtime's name)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            hits = [("default parameter", d) for d in (*node.args.defaults, *node.args.kw_defaults)]
        elif isinstance(node, ast.ClassDef):
            hits = [("default field", s.value) for s in node.body if isinstance(s, ast.AnnAssign)]
        elif isinstance(node, ast.keyword) and node.arg == "default":
            hits = [("default=", node.value)]
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            hits = [("'or' fallback", v) for v in node.values[1:]]
        elif isinstance(node, ast.IfExp):
            hits = [("conditional fallback", node.body), ("conditional fallback", node.orelse)]
        elif isinstance(node, ast.Compare):
            hits = [("comparison", o) for o in (node.left, *node.comparators)]
        found += [f"{e.lineno} {what} {n!r}" for what, e in hits if e is not None for n in named(e)]
    return found


def test_no_runtime_name_is_a_default_or_compared_outside_runtimes():
    """One default runtime (DEFAULT_RUNTIME), and what differs per runtime lives in its Runtime class."""
    from sparsenas.runtimes import RUNTIMES

    names = set(RUNTIMES.names())
    assert {"torch", "onnxruntime", "mnn"} <= names
    root = PACKAGE.parent
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if RUNTIMES_PACKAGE not in p.parents]
    files += sorted((root / "benchmarks").glob("*.py"))
    offenders = [f"{rel}:{use}" for path in files for rel in [path.relative_to(root).as_posix()]
                 for use in _runtime_name_uses(path, names)
                 if (rel, use.split(" ")[-1].strip("'")) not in RUNTIME_NAME_ALLOWED]
    assert offenders == [], ("take the runtime as an argument (None: sparsenas.runtimes.DEFAULT_RUNTIME through "
                             "get_runtime), and put what differs per runtime into its Runtime class:\n" + "\n".join(offenders))


def test_the_runtime_name_scan_sees_defaults_and_comparisons(tmp_path):
    src = tmp_path / "bad.py"
    src.write_text("from dataclasses import dataclass\n"
                   "def f(runtime='torch', *, other='mnn'): return runtime or 'onnxruntime'\n"
                   "@dataclass\nclass C:\n    runtime: str = 'torch'\n"
                   "def g(rt): return 1 if rt.name == 'torch' else 2\n"
                   "def h(rt): return rt in ('mnn', 'x')\n"
                   "def i(p, d): p.add_argument('--runtime', default='torch'); return d.get('k') if d else 'mnn'\n"
                   "def j(runtime='not a runtime'): return runtime == 'dense'\n")
    uses = _runtime_name_uses(src, {"torch", "onnxruntime", "mnn"})
    assert sorted(uses) == sorted(["2 default parameter 'torch'", "2 default parameter 'mnn'",
                                   "2 'or' fallback 'onnxruntime'", "5 default field 'torch'", "6 comparison 'torch'",
                                   "7 comparison 'mnn'", "8 default= 'torch'", "8 conditional fallback 'mnn'"])
