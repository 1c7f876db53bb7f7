"""Hostile and broken bearer tokens, built by hand where PyJWT would refuse to.

Shared by the unit tests of `trainingfiles_server.auth` and the end-to-end identity tests.
Every token here is signed with `TEST_JWT_SECRET` unless its case is about the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import TEST_JWT_SECRET

OTHER_SECRET = secrets.token_urlsafe(48)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(user_id: uuid.UUID | None = None, **overrides: Any) -> dict[str, Any]:
    """Claims of a valid user token; an override of None removes the claim."""
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": str(user_id or uuid.uuid4()),
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + 3600,
        **overrides,
    }
    return {key: value for key, value in values.items() if value is not None}


def signed(
    payload: dict[str, Any], *, secret: str = TEST_JWT_SECRET, algorithm: str = "HS256"
) -> str:
    return jwt.encode(payload, secret, algorithm=algorithm)


def hand_signed(header: bytes, payload: bytes, *, secret: str = TEST_JWT_SECRET) -> str:
    """An HS256 token over raw header and payload bytes (for JSON PyJWT would not write)."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def unsigned(payload: dict[str, Any], alg: str = "none") -> str:
    """`alg: none`: a header, the payload and an empty signature."""
    header = orjson.dumps({"alg": alg, "typ": "JWT"})
    return f"{b64(header)}.{b64(orjson.dumps(payload))}."


@cache
def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rs256(payload: dict[str, Any]) -> str:
    """A token signed with an RSA key the server has never heard of."""
    return jwt.encode(payload, _rsa_key(), algorithm="RS256")


@dataclass(frozen=True)
class BadToken:
    """An `authorization` value (None: no header at all) and how the server must answer."""

    name: str
    authorization: str | None
    code: str  # a grpc.StatusCode name
    reason: str | None  # the ErrorInfo reason; None when gRPC itself answers

    def metadata(self) -> list[tuple[str, str]]:
        return [] if self.authorization is None else [("authorization", self.authorization)]


def bad_tokens(user_id: uuid.UUID) -> list[BadToken]:
    """Every way a token must be refused, for a user who would otherwise be allowed."""
    now = int(time.time())
    good = signed(claims(user_id))

    def bearer(token: str) -> str:
        return f"Bearer {token}"

    unauthenticated = "UNAUTHENTICATED"
    return [
        BadToken("missing", None, unauthenticated, "TOKEN_MISSING"),
        BadToken("empty", "", unauthenticated, "TOKEN_MALFORMED"),
        BadToken("basic-scheme", "Basic dXNlcjpwYXNzd29yZA==", unauthenticated, "TOKEN_MALFORMED"),
        BadToken("no-scheme", good, unauthenticated, "TOKEN_MALFORMED"),
        BadToken("bearer-without-token", "Bearer", unauthenticated, "TOKEN_MALFORMED"),
        BadToken("not-a-jwt", "Bearer not-a-jwt", unauthenticated, "TOKEN_MALFORMED"),
        BadToken(
            "expired",
            bearer(signed(claims(user_id, iat=now - 7200, exp=now - 3600))),
            unauthenticated,
            "TOKEN_EXPIRED",
        ),
        BadToken(
            "not-yet-valid",
            bearer(signed(claims(user_id, nbf=now + 3600))),
            unauthenticated,
            "TOKEN_NOT_YET_VALID",
        ),
        BadToken(
            "issued-in-the-future",
            bearer(signed(claims(user_id, iat=now + 3600))),
            unauthenticated,
            "TOKEN_NOT_YET_VALID",
        ),
        BadToken(
            "other-key",
            bearer(signed(claims(user_id), secret=OTHER_SECRET)),
            unauthenticated,
            "TOKEN_SIGNATURE",
        ),
        BadToken(
            "alg-none",
            bearer(unsigned(claims(user_id))),
            unauthenticated,
            "TOKEN_ALGORITHM_NOT_ALLOWED",
        ),
        BadToken(
            "alg-none-capitalised",
            bearer(unsigned(claims(user_id), alg="None")),
            unauthenticated,
            "TOKEN_ALGORITHM_NOT_ALLOWED",
        ),
        BadToken(
            "hs384-right-secret",
            bearer(signed(claims(user_id), algorithm="HS384")),
            unauthenticated,
            "TOKEN_ALGORITHM_NOT_ALLOWED",
        ),
        BadToken(
            "hs512-right-secret",
            bearer(signed(claims(user_id), algorithm="HS512")),
            unauthenticated,
            "TOKEN_ALGORITHM_NOT_ALLOWED",
        ),
        BadToken(
            "rs256-without-jwks",
            bearer(rs256(claims(user_id))),
            unauthenticated,
            "TOKEN_ALGORITHM_NOT_ALLOWED",
        ),
        # An HS256 signature is 43 characters of base64. Cut to 40 it still decodes (to
        # 30 bytes) but is not the mac; cut to 41 it is not base64 at all (41 = 4k + 1).
        BadToken("truncated-signature", bearer(good[:-3]), unauthenticated, "TOKEN_SIGNATURE"),
        BadToken(
            "truncated-signature-padding",
            bearer(good[:-2]),
            unauthenticated,
            "TOKEN_MALFORMED",
        ),
        BadToken(
            "truncated-to-two-segments",
            bearer(good.rsplit(".", 1)[0]),
            unauthenticated,
            "TOKEN_MALFORMED",
        ),
        BadToken(
            "truncated-in-the-payload",
            bearer(good[: good.index(".") + 10]),
            unauthenticated,
            "TOKEN_MALFORMED",
        ),
        BadToken(
            "wrong-audience",
            bearer(signed(claims(user_id, aud="anon"))),
            unauthenticated,
            "TOKEN_AUDIENCE",
        ),
        BadToken(
            "no-audience",
            bearer(signed(claims(user_id, aud=None))),
            unauthenticated,
            "TOKEN_CLAIM_MISSING",
        ),
        BadToken(
            "no-expiry",
            bearer(signed(claims(user_id, exp=None))),
            unauthenticated,
            "TOKEN_CLAIM_MISSING",
        ),
        BadToken(
            "expiry-not-a-number",
            bearer(signed(claims(user_id, exp="tomorrow"))),
            unauthenticated,
            "TOKEN_MALFORMED",
        ),
        BadToken(
            "expiry-infinite",
            bearer(
                hand_signed(
                    b'{"alg":"HS256","typ":"JWT"}',
                    b'{"sub":"%s","role":"authenticated","aud":"authenticated","exp":Infinity}'
                    % str(user_id).encode(),
                )
            ),
            unauthenticated,
            "TOKEN_MALFORMED",
        ),
        BadToken(
            "payload-not-an-object",
            bearer(hand_signed(b'{"alg":"HS256","typ":"JWT"}', b"[1,2,3]")),
            unauthenticated,
            "TOKEN_MALFORMED",
        ),
        BadToken(
            "sub-not-a-uuid",
            bearer(signed(claims(user_id, sub="not-a-uuid"))),
            unauthenticated,
            "TOKEN_SUBJECT",
        ),
        BadToken(
            "sub-missing",
            bearer(signed(claims(user_id, sub=None))),
            unauthenticated,
            "TOKEN_SUBJECT",
        ),
        BadToken(
            "role-anon",
            bearer(signed(claims(user_id, role="anon"))),
            "PERMISSION_DENIED",
            "ROLE_NOT_ALLOWED",
        ),
        BadToken(
            "role-missing",
            bearer(signed(claims(user_id, role=None))),
            "PERMISSION_DENIED",
            "ROLE_NOT_ALLOWED",
        ),
        BadToken(
            "role-supabase-admin",
            bearer(signed(claims(user_id, role="supabase_admin"))),
            "PERMISSION_DENIED",
            "ROLE_NOT_ALLOWED",
        ),
        # gRPC refuses metadata above its hard limit (16 KiB) before any handler runs.
        BadToken("one-megabyte", bearer("a" * (1024 * 1024)), "RESOURCE_EXHAUSTED", None),
    ]
