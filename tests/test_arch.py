import json

import pytest

from sparsenas.arch import Arch
from sparsenas.errors import InvalidArch, SparseNASError
from sparsenas.search_spaces import get_space
from sparsenas.task import Task

TASK = Task("digits", (1, 16, 16), 10)


def test_round_trip_and_digest_are_stable():
    a = Arch("sparse_mbv2", 1, {"b": [1, 2], "a": 0.5, "c": "x"})
    b = Arch.from_json(a.to_json())
    assert a == b and a.digest() == b.digest() and hash(a) == hash(b)
    # key order does not change identity
    assert Arch("sparse_mbv2", 1, {"c": "x", "a": 0.5, "b": (1, 2)}).digest() == a.digest()
    assert a.replace(a=0.7).digest() != a.digest()
    assert json.loads(a.to_json())["choices"]["b"] == [1, 2]


def test_arch_is_frozen():
    a = Arch("s", 1, {"k": 1})
    with pytest.raises(TypeError):
        a.choices["k"] = 2  # type: ignore[index]
    with pytest.raises(Exception):
        a.space = "t"  # type: ignore[misc]


@pytest.mark.parametrize("text,needle", [
    ("{not json", "malformed architecture JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"space": "s", "version": "x", "choices": {}}', "'version' must be an integer"),
    ('{"space": "s", "version": 1, "choices": {"k": {"nested": 1}}}', "choice 'k'"),
])
def test_malformed_json_is_a_clear_error(text, needle):
    with pytest.raises(SparseNASError, match=needle):
        Arch.from_json(text)


def test_validation_names_bad_key_and_allowed_values():
    space = get_space("sparse_mbv2")
    arch = space.default_arch(TASK)
    space.validate(arch, TASK)
    with pytest.raises(InvalidArch) as e:
        space.validate(arch.replace(s2b1_kernel=4), TASK)
    assert "s2b1_kernel" in str(e.value) and "[3, 5, 7]" in str(e.value)
    with pytest.raises(InvalidArch, match="no such choice"):
        space.validate(arch.replace(bogus=1), TASK)
    missing = Arch(arch.space, arch.version, {k: v for k, v in arch.choices.items() if k != "head_sparsity"})
    with pytest.raises(InvalidArch, match="head_sparsity"):
        space.validate(missing, TASK)
    with pytest.raises(SparseNASError, match="version 9"):
        space.validate(Arch(arch.space, 9, arch.choices), TASK)
