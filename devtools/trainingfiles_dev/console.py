"""The web console beside `make run`'s server: its own process, stopped with the server."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request

from .embedded import free_port, port_free


class ConsoleError(Exception):
    """The console could not be started (its port is taken, or it did not answer)."""


def start_console(
    listen_address: str, target: str, *, development_sign_in: bool
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m trainingfiles_web` for `target`; its process and its URL."""
    host, _, port_text = listen_address.rpartition(":")
    port = int(port_text) if port_text.isdigit() else -1
    if not host or port < 0:
        raise ConsoleError(f"WEB_LISTEN_ADDRESS {listen_address!r} is not host:port")
    if port == 0:
        port = free_port()
    elif not port_free(port):
        raise ConsoleError(f"{host}:{port} is in use (set WEB_LISTEN_ADDRESS, or `off`)")
    command = [sys.executable, "-m", "trainingfiles_web", "--target", target]
    command += ["--host", host, "--port", str(port)]
    if development_sign_in:
        command.append("--development-sign-in")
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConsoleError(f"the web console exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/signin", timeout=1):
                return process, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    stop_console(process)
    raise ConsoleError("the web console did not answer within 20 s")


def stop_console(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
