"""tests/ports.py: a server started on a port taken since it was found starts again on another."""

import socket

import pytest

from tests.ports import start_on_free_port
from trimodal.errors import ConfigError


def test_a_port_taken_in_between_is_retried_on_another():
    tried = []

    def start(port):
        tried.append(port)
        if len(tried) == 1:  # someone took it between free_port() and our bind
            raise ConfigError(f"serve.port: cannot listen on 127.0.0.1:{port} (Address already in use)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
        return port

    assert start_on_free_port(start) == tried[-1] and len(tried) == 2


def test_other_errors_are_not_retried():
    tried = []

    def start(port):
        tried.append(port)
        raise ConfigError("serve.text: no tokenizer")

    with pytest.raises(ConfigError, match="no tokenizer"):
        start_on_free_port(start)
    assert len(tried) == 1


def test_it_gives_up_after_its_attempts():
    with pytest.raises(OSError, match="in use"):
        start_on_free_port(lambda port: (_ for _ in ()).throw(OSError(98, "Address already in use")), attempts=3)
