"""The console's settings: where the service is, where to listen, development sign-in."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WebSettings:
    # The Training File Service's gRPC target (plaintext on loopback, TLS otherwise,
    # as the client decides).
    target: str = "127.0.0.1:50051"
    # `/signin/link?token=…` signs in with a token in the URL: for `make run` only.
    development_sign_in: bool = False
    # Cookies marked Secure: on whenever the console is served over HTTPS.
    secure_cookies: bool = False
    # Signs the CSRF tokens; random per process (a restart only asks forms to reload).
    csrf_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    # How long a finished build's progress stays readable by its page, in seconds.
    build_retention_seconds: float = 600.0
