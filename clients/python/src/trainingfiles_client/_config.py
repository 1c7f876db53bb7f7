"""Where to connect and how: target, token and transport security, plus the channel options.

Each setting comes from the client's argument, else its environment variable, else a
default that suits `make run`:

=====================  ===================  ==========================================
argument               variable             default
=====================  ===================  ==========================================
``target``             TRAININGFILES_TARGET  ``127.0.0.1:50051``
``token``              TRAININGFILES_TOKEN   none (the server answers UNAUTHENTICATED)
``tls`` / credentials  TRAININGFILES_TLS     plaintext for loopback targets, TLS otherwise
=====================  ===================  ==========================================

The channel options live here too; the retry policies they carry (gRPC service config)
come from the table of methods in `_methods`.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc

DEFAULT_TARGET: Final = "127.0.0.1:50051"
TARGET_ENV: Final = "TRAININGFILES_TARGET"
TOKEN_ENV: Final = "TRAININGFILES_TOKEN"
TLS_ENV: Final = "TRAININGFILES_TLS"


def channel_options(
    service_config: Mapping[str, Any], extra: Sequence[tuple[str, Any]] = ()
) -> list[tuple[str, Any]]:
    """Options for every channel the clients open, with this service config; `extra` wins."""
    options: dict[str, Any] = {
        "grpc.enable_retries": 1 if service_config.get("methodConfig") else 0,
        "grpc.service_config": json.dumps(service_config),
        # The service config above, not one a resolver (DNS TXT record) might supply.
        "grpc.service_config_disable_resolution": 1,
        # Match the server's default message limit (MAX_MESSAGE_BYTES, 4 MiB).
        "grpc.max_receive_message_length": 4 * 1024 * 1024,
        # The server keeps its status details under 8 KiB (gRPC's default limit); a
        # larger limit still reads the details of a server that does not.
        "grpc.max_metadata_size": 4 * 1024 * 1024,
        "grpc.absolute_max_metadata_size": 4 * 1024 * 1024,
        # The server accepts keepalive pings every 10 s; 30 s keeps long streams alive
        # through proxies without ever being rejected as abusive.
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 10_000,
        "grpc.primary_user_agent": "trainingfiles-client-python",
    }
    options.update(dict(extra))
    return list(options.items())


@dataclass(frozen=True, slots=True)
class Connection:
    """The resolved settings of one client."""

    target: str
    token: str | None
    credentials: Any  # grpc.ChannelCredentials, or None for plaintext

    @property
    def secure(self) -> bool:
        return self.credentials is not None

    def metadata(
        self, extra: Sequence[tuple[str, str | bytes]] | None
    ) -> list[tuple[str, str | bytes]]:
        """`extra`, plus the bearer token unless `extra` already authorizes the call."""
        metadata = list(extra or ())
        if self.token and not any(key.lower() == "authorization" for key, _ in metadata):
            metadata.append(("authorization", f"Bearer {self.token}"))
        return metadata


def resolve(
    target: str | None = None,
    *,
    token: str | None = None,
    tls: bool | None = None,
    credentials: Any = None,
    environ: Mapping[str, str] | None = None,
) -> Connection:
    """Arguments first, then the environment, then the defaults (see the module doc)."""
    env = os.environ if environ is None else environ
    target = target or env.get(TARGET_ENV) or DEFAULT_TARGET
    token = token or env.get(TOKEN_ENV) or None
    if credentials is None:
        if tls is None:
            tls = _flag(env.get(TLS_ENV, ""))
        if tls is None:
            tls = not is_loopback(target)
        if tls:
            credentials = grpc.ssl_channel_credentials()
    return Connection(target, token, credentials)


def is_loopback(target: str) -> bool:
    """Whether a gRPC target names this machine (plaintext is then the default)."""
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme) :]
            break
    else:
        if target.startswith(("unix:", "unix-abstract:")):
            return True
    host = target.rsplit(":", 1)[0] if target.count(":") == 1 or "]" in target else target
    host = host.strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _flag(value: str) -> bool | None:
    normalized = value.strip().lower()
    if not normalized:
        return None
    if normalized in ("1", "true", "yes", "on"):
        return True
    if normalized in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{TLS_ENV} must be 1 or 0 (true/false), not {value!r}")
