"""Starting or joining Ray (trimodal/cluster.py). Checked on the arguments it gives `ray.init`,
without starting Ray: the runtime env forwards storage, offline mode and faults to the workers
of a joined cluster, never credentials, and every command goes through this one function. One
slow test joins the session's Ray from a subprocess and asks a worker what it sees."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from trimodal.cluster import FORWARD_ENV, ensure_ray, forwarded_env, init_kwargs

ENV = {
    "TRIMODAL_S3_ENDPOINT": "http://10.0.0.5:9000",
    "AWS_REGION": "eu-west-1",
    "HF_HUB_OFFLINE": "1",
    "TRIMODAL_FAULTS": json.dumps({"kill_before_marker": 3}),
    "AWS_ACCESS_KEY_ID": "key",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_ENDPOINT_URL": "",  # set but empty: not forwarded
}
FORWARDED = {k: ENV[k] for k in ("TRIMODAL_S3_ENDPOINT", "AWS_REGION", "HF_HUB_OFFLINE", "TRIMODAL_FAULTS")}


def test_joining_a_cluster_forwards_the_env_to_its_workers():
    kw = init_kwargs("10.0.0.1:6379", num_cpus=4, environ=ENV)
    assert kw["address"] == "10.0.0.1:6379"
    assert kw["runtime_env"] == {"env_vars": FORWARDED}
    # Ray refuses resources when joining; the cluster has its own
    assert "num_cpus" not in kw and "include_dashboard" not in kw


def test_ray_address_from_the_environment_joins_too():
    kw = init_kwargs(environ=dict(ENV, RAY_ADDRESS="ray://head:10001"))
    assert kw["address"] == "ray://head:10001"
    assert kw["runtime_env"]["env_vars"]["TRIMODAL_S3_ENDPOINT"] == "http://10.0.0.5:9000"
    # an explicit address wins over RAY_ADDRESS
    assert init_kwargs("10.0.0.1:6379", environ=dict(ENV, RAY_ADDRESS="x:1"))["address"] == "10.0.0.1:6379"


def test_credentials_are_never_forwarded():
    env = forwarded_env(ENV)
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} & set(env)
    assert set(FORWARD_ENV) >= set(env)


def test_without_an_address_a_local_ray_starts_and_its_workers_inherit_the_env():
    kw = init_kwargs(num_cpus=2, logging_level="error", log_to_driver=False, environ=dict(ENV, RAY_ADDRESS=""))
    # "local", not None: ray.init(address=None) would join a cluster left by `ray start`
    assert kw["address"] == "local"
    assert kw["num_cpus"] == 2 and kw["include_dashboard"] is True
    assert kw["logging_level"] == "error" and kw["log_to_driver"] is False
    assert "runtime_env" not in kw  # inherited from the raylet this process spawns


def test_nothing_to_forward_means_no_runtime_env():
    assert "runtime_env" not in init_kwargs("h:1", environ={"AWS_SECRET_ACCESS_KEY": "s"})


def test_a_submitted_jobs_own_env_vars_are_left_to_it():
    # `ray job submit --runtime-env-json` puts the job's env vars in the driver's environment
    # too; passing them again would make Ray refuse to merge the two runtime envs
    job = {"runtime_env": {"env_vars": {"TRIMODAL_S3_ENDPOINT": "http://other:9000"}}}
    env = forwarded_env(dict(ENV, RAY_JOB_CONFIG_JSON_ENV_VAR=json.dumps(job)))
    assert "TRIMODAL_S3_ENDPOINT" not in env
    assert env["TRIMODAL_FAULTS"] == ENV["TRIMODAL_FAULTS"]


def test_ensure_ray_inits_once_with_these_arguments(monkeypatch):
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: bool(calls))
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("TRIMODAL_FAULTS", '{"kill_before_marker": 1}')
    assert ensure_ray("10.0.0.1:6379", 2) is True
    assert ensure_ray("10.0.0.1:6379", 2) is False  # already initialized: reused, not started again
    assert len(calls) == 1
    assert calls[0]["address"] == "10.0.0.1:6379"
    assert calls[0]["runtime_env"]["env_vars"]["TRIMODAL_FAULTS"] == '{"kill_before_marker": 1}'


def test_every_command_starts_ray_through_cluster_py():
    root = pathlib.Path(__file__).resolve().parents[1] / "trimodal"
    callers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if re.search(r"\bray\.init\(", p.read_text()))
    assert callers == ["cluster.py"]


_CHILD = """
import json, os, sys
import ray
from trimodal.cluster import ensure_ray
assert ensure_ray(sys.argv[1]) is True
@ray.remote(num_cpus=0.1)
def env():
    return {k: os.environ.get(k) for k in ("TRIMODAL_FAULTS", "AWS_ENDPOINT_URL_S3")}
print(json.dumps(ray.get(env.remote())))
"""


@pytest.mark.slow  # joins the session Ray from a subprocess
def test_workers_of_a_joined_cluster_see_the_drivers_env(ray_cluster):
    # The session cluster was started without these variables, so only the runtime env can
    # bring them to its workers. The child also runs as `ray job submit` would start it, with
    # the job's own runtime env setting one of them: Ray refuses to merge two runtime envs that
    # set the same variable, so that one must be left to the job.
    job = {"runtime_env": {"env_vars": {"AWS_ENDPOINT_URL_S3": "http://job:9000"}}}
    env = dict(
        os.environ,
        TRIMODAL_FAULTS='{"probe": 1}',
        AWS_ENDPOINT_URL_S3="http://job:9000",
        RAY_JOB_CONFIG_JSON_ENV_VAR=json.dumps(job),
        RAY_ADDRESS="",
    )
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, ray_cluster], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"TRIMODAL_FAULTS": '{"probe": 1}', "AWS_ENDPOINT_URL_S3": "http://job:9000"}
