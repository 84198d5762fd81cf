"""A free TCP port on the loopback interface, for test servers (S3, the service, torch's
rendezvous) started by tests, fixtures and their child processes."""

import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
