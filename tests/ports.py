"""Ports for test servers (S3, the service, torch's rendezvous) started by tests, fixtures and
their child processes.

A port found free and bound later can be taken in between (another test, another helper on
this machine). Where the server can bind port 0 itself, tests do that and read the port back
(the S3 fixture); torch's rendezvous uses a FileStore (no port at all); the service needs its
port before it starts (direct ingress listens on a fixed port), so `start_on_free_port` starts
it and, on "cannot listen", tries again on another port.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_on_free_port(start: Callable[[int], T], attempts: int = 5, host: str = "127.0.0.1") -> T:
    """`start(port)` on a free port; again on another port while it fails with a port taken
    since it was found ("cannot listen", the service's ConfigError, or EADDRINUSE)."""
    for i in range(attempts):
        try:
            return start(free_port(host))
        except Exception as e:  # noqa: BLE001 - only port conflicts are retried, the rest re-raised
            text = str(e)
            if i == attempts - 1 or not ("cannot listen" in text or "in use" in text.lower()):
                raise
    raise AssertionError("unreachable")
