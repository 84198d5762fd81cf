"""Typed config loading: unknown keys, wrong types and missing keys are named by dotted path."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from trimodal.config import from_dict, from_yaml, load_yaml, to_dict
from trimodal.errors import ConfigError


@dataclass
class Inner:
    name: str
    kind: Literal["text", "image_text"] = "text"
    share: float = 1.0

    def validate(self):
        if self.share <= 0:
            raise ConfigError(f"share must be > 0, got {self.share}")


@dataclass
class Outer:
    sources: list[Inner]
    seq_len: int = 128
    note: str | None = None
    extra: dict[str, int] = field(default_factory=dict)


def test_round_trip():
    cfg = from_dict(Outer, {"sources": [{"name": "a", "share": 2}], "extra": {"x": 1}})
    assert cfg.sources[0].share == 2.0 and isinstance(cfg.sources[0].share, float)
    assert to_dict(cfg)["sources"][0] == {"name": "a", "kind": "text", "share": 2.0}


@pytest.mark.parametrize(
    "data, match",
    [
        ({"sources": [{"name": "a", "knd": "text"}]}, r"sources\[0\]\.knd: unknown key \(did you mean 'kind'\?\)"),
        ({"sources": [{"name": "a", "kind": "video"}]}, r"sources\[0\]\.kind: 'video' is not one of"),
        ({"sources": [{"kind": "text"}]}, r"sources\[0\]\.name: required key is missing"),
        ({"sources": [], "seq_len": "long"}, r"seq_len: expected an integer"),
        ({"sources": [{"name": "a", "share": -1}]}, r"sources\[0\]: share must be > 0"),
        ({"sources": {"name": "a"}}, r"sources: expected a list"),
        ({"sources": [], "extra": {"x": "y"}}, r"extra\.x: expected an integer"),
    ],
)
def test_errors_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Outer, data)


def test_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        from_yaml(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        from_yaml(Outer, bad)
    good = tmp_path / "good.yaml"
    good.write_text("sources:\n  - name: a\nseq_len: 64\n")
    assert from_yaml(Outer, good).seq_len == 64


def test_yaml_reads_exponent_floats_as_numbers(tmp_path):
    # PyYAML alone reads `1e6` as a string; configs write horizons and learning rates that way.
    p = tmp_path / "c.yaml"
    p.write_text("horizon: 1e10\nlr: 3e-4\nsteps: 100\nname: 1e\n")
    data = load_yaml(p)
    assert data == {"horizon": 1e10, "lr": 3e-4, "steps": 100, "name": "1e"}
    assert isinstance(data["horizon"], float) and isinstance(data["steps"], int)


@dataclass
class Counted:
    n: int = 0
    calls = []  # every validate() call, across instances

    def validate(self):
        Counted.calls.append(self.n)
        if self.n < 0:
            raise ConfigError(f"n: must be >= 0, got {self.n}")


@dataclass
class Holder:
    inner: Counted = field(default_factory=Counted)
    items: list[Counted] = field(default_factory=list)


def test_each_validate_runs_once_nested_or_top_level(tmp_path):
    Counted.calls.clear()
    from_dict(Holder, {"inner": {"n": 1}, "items": [{"n": 2}, {"n": 3}]})
    assert sorted(Counted.calls) == [1, 2, 3]
    # A top-level `where` with dots in it (a file name) is not mistaken for a nested key: the
    # top-level config is validated once, by from_dict, its errors prefixed with `where`.
    Counted.calls.clear()
    p = tmp_path / "c.yaml"
    p.write_text("n: 4\n")
    from_yaml(Counted, p)
    assert Counted.calls == [4]
    p.write_text("n: -1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: n: must be >= 0, got -1"):
        from_yaml(Counted, p)
    with pytest.raises(ConfigError) as e:
        from_dict(Counted, {"n": -1})
    assert str(e.value) == "n: must be >= 0, got -1"  # no `where`: no prefix
    with pytest.raises(ConfigError, match=r"^train: n: must be >= 0"):
        from_dict(Counted, {"n": -1}, where="train")


def test_nested_validation_errors_carry_the_key():
    with pytest.raises(ConfigError, match=r"^Holder\.inner: n: must be >= 0, got -5$"):
        from_dict(Holder, {"inner": {"n": -5}})
    with pytest.raises(ConfigError, match=r"^job\.yaml\.items\[1\]: n: must be >= 0, got -2$"):
        from_dict(Holder, {"items": [{"n": 0}, {"n": -2}]}, where="job.yaml")


def _halve(value, key):
    if not isinstance(value, int) or value % 2:
        raise ConfigError(f"{key}: expected an even integer, got {value!r}")
    return value // 2


@dataclass
class WithConverter:
    half: int = field(default=0, metadata={"convert": _halve})


def test_a_field_can_name_its_converter():
    assert from_dict(WithConverter, {"half": 8}).half == 4
    with pytest.raises(ConfigError, match=r"^w\.half: expected an even integer, got 3$"):
        from_dict(WithConverter, {"half": 3}, where="w")
