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
