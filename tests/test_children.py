"""tests/children.py: a child that runs over its timeout is killed with its whole process group."""

import sys

import pytest

from tests.children import ChildTimeout, run_child


def test_a_hung_child_and_its_own_children_are_killed(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    # the child starts a grandchild (as `ray.init` starts raylets) and then hangs
    code = (
        "import subprocess, sys, time;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid));"
        "time.sleep(600)"
    )
    # 8 s: time enough for the child to start its own child on a loaded machine
    with pytest.raises(ChildTimeout, match="ran over"):
        run_child([sys.executable, "-c", code], timeout=8)
    pid = int(pidfile.read_text())
    # reaped by nobody but killed: /proc shows it gone or a zombie
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        assert state == "Z", state
    except FileNotFoundError:
        pass


def test_a_child_that_ends_in_time_returns_its_output():
    proc = run_child([sys.executable, "-c", "print('hi')"], timeout=60)
    assert proc.returncode == 0 and proc.stdout == "hi\n"


def test_a_timeout_at_or_over_pytest_timeout_is_refused():
    with pytest.raises(AssertionError, match="pytest-timeout"):
        run_child([sys.executable, "-c", "pass"], timeout=900)
