"""Sign-in cookie, CSRF tokens and the security headers of every response.

The caller's bearer token lives in an HttpOnly, SameSite=Strict cookie and goes to the
service unchanged as the call's `authorization` metadata: the console holds no identity
of its own, so a user sees exactly what the API lets them see.

CSRF: a signed double-submit token. A random value sits in its own HttpOnly,
SameSite=Strict cookie; each form carries HMAC(secret, value); a POST whose form token
does not match its cookie is refused with 403 before anything runs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "tf_session"
CSRF_COOKIE = "tf_csrf"
CSRF_FIELD = "csrf_token"
# Supabase access tokens are well under this; the service refuses longer ones anyway.
MAX_TOKEN_CHARS = 8192

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


class SecurityHeaders:
    """ASGI middleware adding the baseline headers (and no-store for pages) everywhere."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if not static:  # pages show a user's data: never cached
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def session_token(request: Request) -> str | None:
    token = request.cookies.get(SESSION_COOKIE, "")
    return token if 0 < len(token) <= MAX_TOKEN_CHARS else None


def set_session(response: Response, token: str, *, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/"
    )


def clear_session(response: Response, *, secure: bool) -> None:
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict", secure=secure)


class Csrf:
    def __init__(self, secret: bytes, *, secure: bool) -> None:
        self._secret = secret
        self._secure = secure

    def _sign(self, value: str) -> str:
        return hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()

    def token_for(self, request: Request) -> tuple[str, str | None]:
        """The form token for this request, and a new cookie value if it had none."""
        value = request.cookies.get(CSRF_COOKIE)
        if value and len(value) == 43:
            return self._sign(value), None
        value = secrets.token_urlsafe(32)
        return self._sign(value), value

    def remember(self, response: Response, new_value: str | None) -> None:
        if new_value is not None:
            response.set_cookie(
                CSRF_COOKIE,
                new_value,
                httponly=True,
                samesite="strict",
                secure=self._secure,
                path="/",
            )

    def valid(self, request: Request, submitted: object) -> bool:
        value = request.cookies.get(CSRF_COOKIE)
        if not value or not isinstance(submitted, str):
            return False
        return hmac.compare_digest(self._sign(value), submitted)
