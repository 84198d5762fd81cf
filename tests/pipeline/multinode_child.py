"""Child process of test_multinode.py: a Ray cluster of a head and three worker nodes on this
machine (`ray.cluster_utils.Cluster`, each node its own raylet and workers), with a 0-CPU head
so that every input task and codec actor lands on a worker node.

    python multinode_child.py JOB.json RESULT.json [--kill-node] [--submit]

Runs the tokenize job of JOB.json (input and output on the test S3 server) on that cluster and
writes RESULT.json: the job summary and, with --kill-node, which node was removed and what ran
on it. --kill-node removes a worker node (its raylet and every worker process on it, like a
machine dying) as soon as the first input is committed while that node runs an input task or a
codec actor. --submit runs the job through the Jobs API (`ray job submit`) instead of in this
process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from tests.ports import free_port


def busy_titles(node) -> list[str]:
    """Process titles of the Ray workers of one node (children of its raylet, read from /proc)
    that are running something (Ray titles a worker `ray::<task or actor>`, `ray::IDLE` when idle)."""
    raylet = node.all_processes["raylet"][0].process.pid
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != raylet:
                continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        if title.startswith("ray::") and "IDLE" not in title:
            out.append(title.split()[0])
    return out


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    job_path, result_path = sys.argv[1], sys.argv[2]
    kill, submit = "--kill-node" in sys.argv, "--submit" in sys.argv
    cfg = json.loads(open(job_path).read())
    cluster = Cluster(
        initialize_head=True,
        # Its own dashboard and agent ports: another Ray on this machine may hold the defaults
        # (8265, 52365), and then the head has no job agent ("No available agent").
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": submit,
            **({"dashboard_port": free_port(), "dashboard_agent_listen_port": free_port()} if submit else {}),
        },
    )
    workers = [cluster.add_node(num_cpus=1, resources={"worker": 4}) for _ in range(3)]
    cluster.wait_for_nodes()
    result: dict = {"nodes": 1 + len(workers)}
    t0 = time.monotonic()
    if submit:
        dash = ray.init(address=cluster.address, logging_level="warning").dashboard_url
        ray.shutdown()
        env = {k: os.environ[k] for k in os.environ if k.startswith(("TRIMODAL_", "AWS_", "RAY_AUTH"))}
        cmd = [
            *(sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", f"http://{dash}"),
            *("--runtime-env-json", json.dumps({"env_vars": env}), "--"),
            *(sys.executable, "-m", "trimodal.jobs.tokenize", job_path.replace(".json", ".yaml"), "--json"),
        ]
        deadline = time.monotonic() + 120
        while True:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            # The head's job agent answers some seconds after the cluster is up.
            if "No available agent" not in proc.stdout + proc.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
        result["submit_rc"] = proc.returncode
        result["submit_tail"] = (proc.stdout + proc.stderr)[-3000:]
    else:
        ray.init(address=cluster.address, logging_level="warning")
        from trimodal.pipeline.job import run_tokenize

        killed: dict = {}
        if kill:

            def killer():
                from trimodal.dataset.storage import resolve

                progress = resolve(cfg["output"]["uri"]).join("_progress")
                while not killed:
                    if len([p for p in _list(progress) if not p.endswith("job.json")]) >= 1:
                        for node in workers:
                            titles = busy_titles(node)
                            if titles:
                                killed.update({"titles": titles, "at_s": round(time.monotonic() - t0, 1)})
                                cluster.remove_node(node, allow_graceful=False)
                                return
                    time.sleep(0.05)

            threading.Thread(target=killer, daemon=True).start()
        result["summary"] = run_tokenize(cfg, quiet=True)
        result["killed"] = killed
    result["wall_s"] = round(time.monotonic() - t0, 1)
    with open(result_path, "w") as f:
        json.dump(result, f)
    ray.shutdown()
    cluster.shutdown()


def _list(loc) -> list[str]:
    import pyarrow.fs as pafs

    sel = pafs.FileSelector(loc.path, recursive=False, allow_not_found=True)
    return [i.path for i in loc.fs.get_file_info(sel)]


if __name__ == "__main__":
    main()
