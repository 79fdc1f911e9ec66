"""The house's rules, read from the source: who may touch trial attributes, and that the schema
table in docs/architecture.md is the one the schema generates."""
import ast
from pathlib import Path

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
