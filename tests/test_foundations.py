"""The shared walk, tensor and YAML helpers every stage uses."""

import pytest
import torch

from snnconv.errors import UsageError
from snnconv.tensors import like
from snnconv.walk import reader_counts, walk


def test_walk_frees_values_after_their_last_reader_and_keeps_what_is_asked():
    items = [("a", ["x"]), ("b", ["a"]), ("c", ["a", "b"]), ("d", ["c"])]
    seen = []

    def step(it, env):
        seen.append(sorted(env))
        return sum(env[s] for s in it[1]) + 1

    env = walk(items, step, name=lambda it: it[0], sources=lambda it: it[1], env={"x": 0},
               keep={"b"})
    assert env == {"b": 2, "d": 5}
    assert seen == [["x"], ["a"], ["a", "b"], ["b", "c"]]
    assert reader_counts(items, lambda it: it[1]) == {"x": 1, "a": 2, "b": 1, "c": 1}


def test_like_takes_dtype_and_device_of_the_reference():
    ref = torch.zeros(2, dtype=torch.float32)
    assert like([1, 2], ref).dtype == torch.float32
    assert like(torch.ones(2, dtype=torch.float64), ref).dtype == torch.float32


def test_yaml_errors_name_the_file(tmp_path):
    from snnconv.yamlfile import load_mapping

    with pytest.raises(UsageError, match="not found"):
        load_mapping(tmp_path / "no.yaml", "profile", {"a"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1\n")
    with pytest.raises(UsageError, match="bad.yaml: not valid YAML"):
        load_mapping(bad, "profile", {"a"})
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(UsageError, match="mapping"):
        load_mapping(lst, "profile", {"a"})
    unk = tmp_path / "unk.yaml"
    unk.write_text("a: 1\nweight-bits: 2\nzz: 3\n")
    with pytest.raises(UsageError, match="unknown profile keys: zz") as e:
        load_mapping(unk, "profile", {"a", "weight_bits"})
    assert "weight_bits" in e.value.hint
    assert load_mapping(unk, "profile", {"a", "weight_bits"}, extra={"zz"}) == {
        "a": 1, "weight_bits": 2, "zz": 3}
