"""Who is calling: Supabase-style JWTs verified with PyJWT.

Every `TrainingFileService` call carries `authorization: Bearer <JWT>`. The token is
checked against an explicit algorithm allow-list (HS256 with the project's secret; RS256
or ES256 through a JWKS URL when configured; `none` never), with `exp` required,
`exp`, `nbf` and `aud` checked with a small clock skew, and `sub` a UUID (required for
users; a service token, like Supabase's service key, may have none).

Roles (the `role` claim):

* `authenticated`: a user. Sees and changes only their own files (another user's file is
  NOT_FOUND, never "forbidden", so its existence is not revealed), and may only use
  conversations whose `created_by` is theirs (others are reported like unknown ids).
* `service_role`: acts for the system. Sees every file and every conversation; files it
  creates have no `created_by` unless it names a user with `on_behalf_of`, in which case
  the file belongs to that user and must be built from that user's conversations.

Any other role is PERMISSION_DENIED. Failure messages tell the caller what to fix
(expired, not yet valid, wrong audience, bad signature, malformed) and never echo the
token or the secret.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import jwt

from .config import Settings
from .errors import PermissionDenied, Unauthenticated, Unavailable
from .models import Caller

# Only the development secret's SHA-256: the secret itself stays in the dev tooling, not shipped.
DEVELOPMENT_JWT_SECRET_SHA256 = "315422da5515583982c34d656b6dbc51a016a04e450a0e3b05f2e745d7ab3c4c"
MIN_SECRET_BYTES = 32
# Supabase tokens are well under 2 KiB; anything near this size is not a token.
MAX_TOKEN_CHARS = 8192
SYMMETRIC_ALGORITHMS = ("HS256",)
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")


log = logging.getLogger("trainingfiles.auth")

# The JWKS (asymmetric keys) is fetched again once it is older than
# JWT_JWKS_CACHE_SECONDS. A token whose `kid` the cached set lacks makes it fetched at
# once (a key just published), but at most every JWKS_UNKNOWN_KID_REFRESH_SECONDS (or
# once per cache lifetime, if shorter): tokens with made-up kids cannot make the server
# hammer the endpoint. A JWKS that does not answer within JWKS_FETCH_TIMEOUT_SECONDS
# fails the call with UNAVAILABLE instead of holding it.
JWKS_UNKNOWN_KID_REFRESH_SECONDS = 30.0
JWKS_FETCH_TIMEOUT_SECONDS = 5.0

# Tokens already verified: a caller's next calls with the same token cost a dict look-up
# instead of two base64 decodes, two JSON parses and an HMAC (a tenth of a Get's server
# CPU). An entry is trusted until the token's own expiry, and never for longer than
# VERIFIED_TOKEN_SECONDS; at most VERIFIED_TOKENS entries are kept.
VERIFIED_TOKENS = 1024
VERIFIED_TOKEN_SECONDS = 60.0


SYSTEM = Caller()
current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("current_caller")


class ConfigurationError(RuntimeError):
    """The identity settings are unsafe or incomplete; the server does not start."""


def check_settings(settings: Settings) -> None:
    """Refuse to start with a missing, short or development secret outside development."""
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    if secret is None and not settings.jwt_jwks_url:
        raise ConfigurationError("JWT_SECRET (or JWT_JWKS_URL) must be set")
    if secret is not None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        digest = hashlib.sha256(secret.encode()).hexdigest()
        development = hmac.compare_digest(digest, DEVELOPMENT_JWT_SECRET_SHA256)
        if development and not settings.development_mode:
            raise ConfigurationError(
                "JWT_SECRET is the development secret; set a real one, or DEVELOPMENT_MODE=1"
            )


class Authenticator:
    """Verifies bearer tokens into `Caller`s."""

    def __init__(self, settings: Settings) -> None:
        check_settings(settings)
        self._secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._jwks = (
            jwt.PyJWKClient(
                settings.jwt_jwks_url,
                # No per-kid cache on top of the set's: it never expires, so a key
                # removed from the JWKS would stay trusted until the process restarts.
                cache_keys=False,
                lifespan=settings.jwt_jwks_cache_seconds,
                cooldown_duration=min(
                    JWKS_UNKNOWN_KID_REFRESH_SECONDS, settings.jwt_jwks_cache_seconds
                ),
                timeout=JWKS_FETCH_TIMEOUT_SECONDS,
            )
            if settings.jwt_jwks_url
            else None
        )
        self._verified: dict[str, tuple[Caller, float]] = {}  # token -> (caller, until)

    async def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> Caller:
        token = _bearer_token(metadata)
        verified = self._verified.get(token)
        if verified is not None:
            if time.time() < verified[1]:
                return verified[0]
            del self._verified[token]
        caller, expires = await self._verify(token)
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        until = min(expires + self._leeway, time.time() + VERIFIED_TOKEN_SECONDS)
        self._verified[token] = (caller, until)
        return caller

    async def _verify(self, token: str) -> tuple[Caller, float]:
        """The caller a token names and its expiry (`exp`), or the reason it is refused."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the token is malformed", reason="TOKEN_MALFORMED") from None
        algorithm = header.get("alg")
        if algorithm in SYMMETRIC_ALGORITHMS and self._secret is not None:
            key: Any = self._secret
        elif algorithm in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            key = await self._signing_key(token)
        else:
            raise Unauthenticated(
                f"the token's algorithm {str(algorithm)[:16]!r} is not accepted",
                reason="TOKEN_ALGORITHM_NOT_ALLOWED",
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated(
                "the token is not valid yet", reason="TOKEN_NOT_YET_VALID"
            ) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                f"the token's audience is not {self._audience!r}", reason="TOKEN_AUDIENCE"
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                "the token's signature does not verify", reason="TOKEN_SIGNATURE"
            ) from None
        except jwt.InvalidAlgorithmError:
            # Only for JWKS keys: an RS256 token naming an EC key, or the reverse.
            raise Unauthenticated(
                f"the token's algorithm {algorithm!r} is not the algorithm of its signing key",
                reason="TOKEN_ALGORITHM_NOT_ALLOWED",
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(
                f"the token has no {exc.claim!r} claim", reason="TOKEN_CLAIM_MISSING"
            ) from None
        except jwt.PyJWTError:
            raise Unauthenticated("the token is malformed", reason="TOKEN_MALFORMED") from None
        return _caller(claims), float(claims["exp"])

    async def _signing_key(self, token: str) -> jwt.PyJWK:
        """The JWKS key the token's `kid` names; it also fixes the algorithm that verifies.

        The key is returned as a `PyJWK`, not as the bare public key: PyJWT then refuses a
        token whose `alg` is not the key's (with a bare key, an RS256 token naming an EC
        key made the RSA verifier fail with a TypeError, an INTERNAL error).
        """
        assert self._jwks is not None
        try:
            # PyJWKClient fetches with urllib (blocking) and caches: keep it off the loop.
            return await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("signing keys cannot be fetched", extra={"fields": {"error": str(exc)}})
            raise Unavailable("the signing keys cannot be fetched; retry later") from None
        except jwt.PyJWTError:
            raise Unauthenticated(
                "the token's signing key is unknown", reason="TOKEN_SIGNATURE"
            ) from None
        except (OSError, ValueError, RecursionError) as exc:
            # The JWKS answered something that is not JSON, or the connection broke
            # while it answered (urllib lets these through unwrapped).
            log.warning("signing keys cannot be read", extra={"fields": {"error": repr(exc)}})
            raise Unavailable("the signing keys cannot be read; retry later") from None


def _bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str:
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        raise Unauthenticated(
            "missing `authorization: Bearer <token>` metadata", reason="TOKEN_MISSING"
        )
    if len(values) > 1:
        raise Unauthenticated("more than one authorization header", reason="TOKEN_MALFORMED")
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, token = str(value).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be `Bearer <token>`", reason="TOKEN_MALFORMED")
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated("the token is too long", reason="TOKEN_MALFORMED")
    return token


def _caller(claims: dict[str, Any]) -> Caller:
    role = claims.get("role")
    if role not in ("authenticated", "service_role"):
        raise PermissionDenied(
            "the token's role must be 'authenticated' or 'service_role'", reason="ROLE_NOT_ALLOWED"
        )
    subject = claims.get("sub")
    if subject is None and role == "service_role":
        return Caller("service_role", None)  # Supabase's service key carries no subject
    try:
        UUID(str(subject))
    except ValueError:
        raise Unauthenticated("the token's subject is not a UUID", reason="TOKEN_SUBJECT") from None
    if role == "service_role":
        return Caller("service_role", None)
    return Caller("authenticated", UUID(str(subject)))
