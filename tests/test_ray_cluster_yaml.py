"""ray_cluster.yaml is a valid Ray cluster launcher config (Ray's own schema and checks, no
network), with the node groups, S3 access and setup the project relies on."""

import copy
import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _schema():
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())


def test_valid_for_ray(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(config, _schema())  # the file as written, before defaults are merged
    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` does before launching
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"


def test_the_schema_check_catches_mistakes(config):
    bad = copy.deepcopy(config)
    bad["setup_comands"] = ["typo"]
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        jsonschema.validate(bad, _schema())
    bad = copy.deepcopy(config)
    bad["available_node_types"]["gpu"]["min_workers"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _schema())


def test_node_groups_s3_access_and_setup(config):
    types = config["available_node_types"]
    assert set(types) == {"head", "cpu", "gpu"} and config["head_node_type"] == "head"
    assert types["gpu"]["resources"].get("GPU", 0) >= 1 and "GPU" not in types["cpu"]["resources"]
    assert sum(t.get("max_workers", 0) for t in types.values()) <= config["max_workers"]
    for name, t in types.items():
        # S3 through instance roles: every node gets a profile, no keys anywhere in the file.
        assert t["node_config"]["IamInstanceProfile"]["Name"], name
    text = (ROOT / "ray_cluster.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret" not in text.lower()
    # The package is installed on every node the way `make install` installs it locally.
    assert config["file_mounts"] == {"~/trimodal": "."}
    assert any("make install" in c for c in config["setup_commands"])
    assert "install:" in (ROOT / "Makefile").read_text()
