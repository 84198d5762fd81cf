"""Child process of test_train_multinode.py: `trimodal train` (Ray Train, 2 workers of 1 CPU) on a
Ray cluster of this machine (`ray.cluster_utils.Cluster`: a 0-CPU head and one-CPU worker
nodes), losing the node of a Train worker mid-run.

    python train_multinode_child.py TRAIN.json RESULT.json MODE

MODE: ``spare`` (3 worker nodes: the group restarts on the spare one), ``comeback`` (2 worker
nodes: after the loss the group waits, a new node joins once the old group is gone, and the run
finishes), ``never`` (2 worker nodes, none comes back: the run must fail within node_wait_s with
a message that says so).

The run pauses after step N (TRIMODAL_FAULTS `train_pause_at_step`, set by the test), so the node
is removed at a known step and never by a timer: a thread here waits for both workers' pause
markers in `output` (after the step-N checkpoint), finds the node of rank 1 from its pid, and
removes it like a machine dying. RESULT.json: the summary or the error, and what was removed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import traceback


def node_of(pid: int, nodes: list):
    """The cluster node whose raylet started worker process `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    for n in nodes:
        if n.all_processes["raylet"][0].process.pid == ppid:
            return n
    raise LookupError(f"pid {pid} (parent {ppid}) is no Ray worker of this cluster")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(pred, what: str, timeout: float = 240.0, poll: float = 0.1) -> None:
    """Poll a condition on cluster or storage state; `timeout` only bounds a hang."""
    tick, deadline = threading.Event(), time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        tick.wait(poll)


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    from trimodal.dataset.storage import resolve
    from trimodal.faults import faults_from_env
    from trimodal.jobs.train import run_train

    cfg_path, result_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    cfg = json.loads(open(cfg_path).read())
    at = faults_from_env()["train_pause_at_step"]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3 if mode == "spare" else 2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="warning")
    result: dict = {"mode": mode, "nodes": 1 + len(workers)}
    out = resolve(cfg["output"])

    def drill():
        try:
            markers = [out.join(f".paused-at-{at}.rank{r}") for r in range(2)]
            wait_for(lambda: all(m.exists() for m in markers), f"both workers paused after step {at}")
            pids = [int(m.read_bytes()) for m in markers]
            victim = node_of(pids[1], workers)
            result["removed"] = {"rank": 1, "pid": pids[1], "at_s": round(time.monotonic() - t0, 1)}
            result["survivor_same_node"] = node_of(pids[0], workers) is victim
            cluster.remove_node(victim, allow_graceful=False)
            if mode == "comeback":
                # the group is torn down (its surviving worker gone) before a node comes back
                wait_for(lambda: not alive(pids[0]), "the old worker group to be torn down")
                # A new machine joins as users add one: `ray start --address`. (Cluster.add_node
                # cannot run here: Ray installs signal handlers, main thread only.) --block keeps
                # it in the foreground, and it stops its raylet when terminated at the end.
                cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--address", cluster.address]
                joined.append(subprocess.Popen([*cmd, "--num-cpus", "1", "--block"], stdout=subprocess.DEVNULL))
                result["added_back_at_s"] = round(time.monotonic() - t0, 1)
        except Exception:  # reported in RESULT.json; the run's own outcome still decides
            result["drill_error"] = traceback.format_exc()

    joined: list[subprocess.Popen] = []
    t0 = time.monotonic()
    threading.Thread(target=drill, daemon=True).start()
    try:
        result["summary"] = run_train(cfg)
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    result["wall_s"] = round(time.monotonic() - t0, 1)
    with open(result_path, "w") as f:
        json.dump(result, f, default=str)
    ray.shutdown()
    for p in joined:
        p.terminate()
        p.wait(timeout=60)
    cluster.shutdown()


if __name__ == "__main__":
    main()
