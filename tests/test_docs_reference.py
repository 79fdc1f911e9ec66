"""docs/reference.md is generated from the declarations (config keys, strategy options, registries,
the Python API): the generator's output must be what the repository holds."""
from sparsenas.docs_reference import main, render


def test_docs_reference_is_up_to_date():
    assert main(["--check"]) == 0, "docs/reference.md is out of date: run python -m sparsenas.docs_reference"


def test_reference_lists_every_config_key_and_strategy_option():
    from sparsenas.api import SearchConfig
    from sparsenas.config import INTERNAL_FIELDS
    from sparsenas.strategies import STRATEGIES

    text = render()
    for name in SearchConfig.__dataclass_fields__:
        if name not in INTERNAL_FIELDS and not name.endswith("_args") and name not in ("options", "sampler", "pruner"):
            assert f"| `{name}` |" in text, name
    for _, cls in STRATEGIES.items():
        for o in cls.options:
            assert f"| `{o.name}` |" in text and f"`{o.flag}`" in text, (cls.name, o.name)
    assert "worker`" not in text.replace("workers`", "")

