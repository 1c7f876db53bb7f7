"""`make token`: mint a development token (HS256, like Supabase's) and print it.

    make -s token                                   # the demo user, role authenticated
    make -s token USER_ID=<uuid> ROLE=service_role DAYS=1

Signs with JWT_SECRET when it is set, else with the development secret that `make run`
accepts. Long-lived tokens are for the development secret only.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from typing import Any
from uuid import UUID

import jwt

from trainingfiles_server.models import Role

from .demo import DEMO_USERS

# A development secret so that `make run` works out of the box; the server refuses it
# unless DEVELOPMENT_MODE is on (auth.py keeps only its SHA-256 digest, to recognise it).
DEVELOPMENT_JWT_SECRET = "trainingfiles-development-secret-never-use-in-production"
DEVELOPMENT_TOKEN_DAYS = 365


def mint_token(
    secret: str,
    *,
    user_id: UUID,
    role: Role = "authenticated",
    audience: str = "authenticated",
    lifetime_seconds: int = 3600,
    extra: dict[str, Any] | None = None,
) -> str:
    """An HS256 token like Supabase's (development and tests)."""
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "role": role,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime_seconds,
        **(extra or {}),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def development_token() -> str:
    """The token `make run` prints: the first demo user, valid for a year."""
    return mint_token(
        DEVELOPMENT_JWT_SECRET,
        user_id=DEMO_USERS[0],
        role="authenticated",
        lifetime_seconds=DEVELOPMENT_TOKEN_DAYS * 86400,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--user", type=uuid.UUID, default=DEMO_USERS[0], help="the sub claim")
    parser.add_argument(
        "--role", choices=("authenticated", "service_role"), default="authenticated"
    )
    parser.add_argument("--days", type=float, default=DEVELOPMENT_TOKEN_DAYS)
    args = parser.parse_args()
    secret = os.environ.get("JWT_SECRET") or DEVELOPMENT_JWT_SECRET
    print(
        mint_token(
            secret,
            user_id=args.user,
            role=args.role,
            audience=os.environ.get("JWT_AUDIENCE", "authenticated"),
            lifetime_seconds=int(args.days * 86400),
        )
    )


if __name__ == "__main__":
    main()
