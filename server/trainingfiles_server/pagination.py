"""Opaque, tamper-checked page tokens for keyset pagination (AIP-158).

A token is `base64url(payload) "." base64url(mac)`, where the payload holds the keyset
position (the sort key of the last item returned) and a fingerprint of the query it
belongs to (the rpc and its filters), and the mac is an HMAC-SHA256 under the server's
`PAGE_TOKEN_SECRET`. A garbage, truncated or forged token, or one from another query,
is `INVALID_ARGUMENT`. Keyset positions (not offsets) keep pages stable while files are
added: every item is listed exactly once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

from .errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_MAC_BYTES = 16
_MAX_TOKEN_CHARS = 1024


def page_size(requested: int) -> int:
    """AIP-158: 0 means the default, above the maximum is coerced, negative is an error."""
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    """Issues and checks page tokens under one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, query: str, position: list[Any]) -> str:
        payload = orjson.dumps({"q": query, "p": position})
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def position(self, query: str, token: str) -> list[Any] | None:
        """The keyset position in `token`, or None for the first page."""
        if not token:
            return None
        invalid = InvalidArgument.field(
            "page_token", "is not a page token returned by this query", "INVALID_PAGE_TOKEN"
        )
        if len(token) > _MAX_TOKEN_CHARS or token.count(".") != 1:
            raise invalid
        encoded_payload, encoded_mac = token.split(".")
        try:
            payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
        except (binascii.Error, ValueError):
            raise invalid from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise invalid
        decoded = orjson.loads(payload)
        if decoded.get("q") != query or not isinstance(decoded.get("p"), list):
            raise invalid
        position: list[Any] = decoded["p"]
        return position
