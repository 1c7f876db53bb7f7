"""`make run` reuses the ports saved in `.data/`: the probe that decides it.

When a server stops, the connections it closed first stay in TIME_WAIT on its port for
about a minute. Servers bind with SO_REUSEADDR and can listen there again at once; the
probe must say so too, or a second `make run` within that minute moves to new ports.
These tests put a port in TIME_WAIT for real (a listener, then PostgreSQL) and check
the probe, the reuse decision and a restart on the same port.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from trainingfiles_dev.embedded import EmbeddedPostgres, free_port_pair, port_free
from trainingfiles_dev.run import _reusable_port

TIMEOUT = 30.0


def _plain_bind_refused(port: int) -> bool:
    """Whether a bind without SO_REUSEADDR fails: the port has a socket in TIME_WAIT (or
    another state) that only a reusing bind may share."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _reusing_listener(port: int = 0) -> socket.socket:
    """A listener bound the way servers bind."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    return listener


def _close_after_the_server(client: socket.socket) -> None:
    """Read until the server has closed the connection, then close ours: the server's side
    (on the server's port) goes to TIME_WAIT."""
    client.settimeout(TIMEOUT)
    while client.recv(4096):
        pass
    client.close()


def test_a_port_in_time_wait_is_free_to_a_server() -> None:
    listener = _reusing_listener()
    port: int = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    accepted, _ = listener.accept()
    accepted.close()  # the server closes first
    _close_after_the_server(client)
    listener.close()

    assert _plain_bind_refused(port), "the port should have a connection in TIME_WAIT"
    assert port_free(port)
    # And a server can indeed listen there again.
    _reusing_listener(port).close()


def test_a_port_something_listens_on_is_not_free() -> None:
    with _reusing_listener() as listener:
        assert not port_free(listener.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        assert not port_free(plain.getsockname()[1])


def test_a_port_pair_for_seaweedfs_is_free() -> None:
    port = free_port_pair()
    assert port_free(port)
    assert port_free(port + 10_000)


def test_a_stopped_postgres_port_is_reused_by_the_next_run() -> None:
    with tempfile.TemporaryDirectory(prefix="trainingfiles-ports-") as directory:
        data_dir = Path(directory) / "postgres"
        postgres = EmbeddedPostgres.start(data_dir, durable=False)
        port = postgres.port
        try:
            client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        finally:
            postgres.stop()
        _close_after_the_server(client)

        assert _plain_bind_refused(port), "the port should have a connection in TIME_WAIT"
        assert port_free(port)
        assert _reusable_port(port) == port

        again = EmbeddedPostgres.start(data_dir, port=port, durable=False)
        try:
            assert again.port == port
        finally:
            again.stop()
