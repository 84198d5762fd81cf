"""Run a child process (a Ray cluster, the demo, a CLI) from a test with a timeout shorter than
pytest-timeout's (600 s, pyproject.toml), and tear its whole process tree down when it runs over.

`subprocess.run(timeout=...)` kills only the direct child: a child that started Ray leaves its
raylets, GCS and workers behind, and a timeout longer than pytest-timeout's never fires at all
(pytest kills the test first and the cluster is orphaned). Here the child leads its own process
group, and on timeout the group gets SIGTERM, then SIGKILL; the test then fails with the child's
output tail. Ray's own daemons that left the group (none on this Ray) would outlive it.
"""

from __future__ import annotations

import os
import signal
import subprocess

# Below pytest-timeout's 600 s, so that the child, not the test, times out first.
CHILD_TIMEOUT_S = 480


class ChildTimeout(AssertionError):
    pass


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(cmd: list[str], timeout: float = CHILD_TIMEOUT_S, **kw) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True, **kw)` in a new process group; after
    `timeout` seconds the group is killed and ChildTimeout raised with the output tail."""
    assert timeout < 600, "a child's timeout must stay below pytest-timeout's 600 s"
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise ChildTimeout(
            f"{cmd[:4]}... ran over {timeout} s; its process group was killed\n{(out + err)[-4000:]}"
        ) from None
    finally:
        if proc.poll() is None:  # interrupted (KeyboardInterrupt, pytest-timeout): take the tree down too
            _kill_group(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
