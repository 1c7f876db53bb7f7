"""Asymmetric tokens end to end: RS256 and ES256 keys from a JWKS that the test serves.

Each test starts its own gRPC server (`running_server`) whose `JWT_JWKS_URL` points at a
JWKS served by the test on 127.0.0.1, from a thread. The endpoint counts the requests it
receives and its keys can change while the server runs; it is stopped when its test
ends, also when the test fails. Every server has its own JWKS cache, so a test passes
alone and in any order. Nothing waits a fixed time: a test waits for an event (an answer
that changed, a request the endpoint received), polling with a deadline.

The servers run with JWKS keys only (no `JWT_SECRET`), and every token is new, so the
server's cache of verified tokens never answers in place of the JWKS.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import types
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.conftest import Stack, stack_settings
from tests.e2e.guards import assert_serving
from tests.e2e.helpers import captured_logs, error_reason, logged
from tests.tokens import b64, claims, hand_signed, signed
from trainingfiles.v1 import service_pb2, service_pb2_grpc
from trainingfiles_server import auth
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.auth import (
    JWKS_FETCH_TIMEOUT_SECONDS,
    JWKS_UNKNOWN_KID_REFRESH_SECONDS,
    VERIFIED_TOKEN_SECONDS,
    Authenticator,
)
from trainingfiles_server.errors import Unauthenticated
from trainingfiles_server.storage import Storage

pytestmark = pytest.mark.timeout(120)

CALL_TIMEOUT = 30.0
# How long a test waits for the server's answer to change (a key published or removed,
# the cache expired, the endpoint gone): far above the 1 s cache lifetime it uses.
CHANGE_DEADLINE = 20.0
POLL_INTERVAL = 0.05
SHORT_CACHE_SECONDS = 1.0

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


# ----------------------------------------------------------------- keys and tokens


@dataclass(frozen=True)
class SigningKey:
    """A private key the test signs with, and the JWK it publishes for it."""

    kid: str
    algorithm: str  # "RS256" or "ES256"
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            fields = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            fields = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**fields, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def token(self, *, kid: str | None = None, without_kid: bool = False, **overrides: Any) -> str:
        """A new user token (a random user unless `sub` is given), signed with this key.

        Its header names `kid` if given, this key's kid otherwise, or none at all.
        """
        headers = {} if without_kid else {"kid": kid or self.kid}
        return jwt.encode(
            claims(uuid.uuid4(), **overrides), self.private, self.algorithm, headers=headers
        )


# ----------------------------------------------------------------- the JWKS endpoint


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def do_GET(self) -> None:
        self.server.endpoint.answer(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test counts the requests itself."""


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, endpoint: JwksEndpoint) -> None:
        self.endpoint = endpoint
        super().__init__(("127.0.0.1", port), _Handler)


class JwksEndpoint:
    """A JWKS served over HTTP on 127.0.0.1 from a thread.

    It serves `{"keys": [...]}` of the keys it was given (or a set `status` and `body`
    instead), records when each request arrived, and, when `hang` is set, holds every
    request without answering until the endpoint stops.
    """

    def __init__(self, keys: list[SigningKey], port: int = 0) -> None:
        self._lock = threading.Lock()
        self._keys = list(keys)
        self._requests: list[float] = []  # time.monotonic() of each request
        self._status = 200
        self._body: bytes | None = None
        self._hang = False
        self._released = threading.Event()
        self._stopped = False
        self._http = _HttpServer(port, self)
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        port: int = self._http.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/auth/v1/.well-known/jwks.json"

    @property
    def requests(self) -> list[float]:
        with self._lock:
            return list(self._requests)

    @property
    def fetches(self) -> int:
        return len(self.requests)

    def publish(self, *keys: SigningKey) -> None:
        """Serve these keys from now on."""
        with self._lock:
            self._keys = list(keys)

    def misbehave(
        self, *, status: int = 200, body: bytes | None = None, hang: bool = False
    ) -> None:
        """Answer `status` with `body` (or hold requests unanswered) instead of the keys."""
        with self._lock:
            self._status, self._body, self._hang = status, body, hang

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self._requests.append(time.monotonic())
            status, body, hang = self._status, self._body, self._hang
            if body is None:
                body = orjson.dumps({"keys": [key.jwk() for key in self._keys]})
        if hang:
            self._released.wait(CALL_TIMEOUT)
            return
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def stop(self) -> None:
        """Stop serving and close the port: connections to it are refused from now on."""
        if self._stopped:
            return
        self._stopped = True
        self._released.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(CALL_TIMEOUT)


@contextlib.contextmanager
def serving_jwks(*keys: SigningKey, port: int = 0) -> Iterator[JwksEndpoint]:
    endpoint = JwksEndpoint(list(keys), port)
    try:
        yield endpoint
    finally:
        endpoint.stop()


# ----------------------------------------------------------------- the server


@dataclass(frozen=True)
class Server:
    running: RunningServer
    stub: service_pb2_grpc.TrainingFileServiceStub

    async def call(self, token: str) -> grpc.aio.AioRpcError | None:
        """A ListTrainingFiles with this bearer token: None if it was let through."""
        try:
            await self.stub.ListTrainingFiles(
                service_pb2.ListTrainingFilesRequest(),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as error:
            return error
        return None

    async def accepts(self, token: str) -> None:
        error = await self.call(token)
        assert error is None, f"refused: {error.code().name}: {error.details()}"

    async def refuses(self, token: str, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
        error = await self.call(token)
        assert error is not None, "the token was accepted"
        assert error.code() == code, f"{error.code().name}: {error.details()}"
        return error


@contextlib.asynccontextmanager
async def jwks_server(stack: Stack, jwks_url: str, **overrides: Any) -> AsyncIterator[Server]:
    """A server that trusts only the JWKS at `jwks_url` (no HS256 secret)."""
    settings = stack_settings(
        stack.postgres, stack.seaweed, jwt_secret=None, jwt_jwks_url=jwks_url, **overrides
    )
    async with (
        running_server(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield Server(running, service_pb2_grpc.TrainingFileServiceStub(channel))
        await assert_serving(running.port)  # whatever the JWKS did, the server serves


def assert_refused_for(error: grpc.aio.AioRpcError, reason: str, message: str) -> None:
    assert error_reason(error) == reason, error.details()
    assert error.details() == message


async def poll(
    server: Server,
    token_for: Callable[[], str],
    done: Callable[[grpc.aio.AioRpcError | None], bool],
    failure: str,
) -> grpc.aio.AioRpcError | None:
    """Call with a new token from `token_for()` until `done(error)`; returns that error.

    Fails the test with `failure` if that has not happened within CHANGE_DEADLINE.
    """
    deadline = time.monotonic() + CHANGE_DEADLINE
    while True:
        error = await server.call(token_for())
        if done(error):
            return error
        assert time.monotonic() < deadline, f"{failure} after {CHANGE_DEADLINE} s"
        await asyncio.sleep(POLL_INTERVAL)


# ----------------------------------------------------------------- accepted tokens


async def test_rs256_and_es256_tokens_are_accepted_with_the_key_their_kid_names(
    stack: Stack, storage: Storage
) -> None:
    rsa_key, ec_key = SigningKey.rsa("rsa-2026-01"), SigningKey.ec("ec-2026-01")
    with serving_jwks(rsa_key, ec_key) as jwks:
        async with jwks_server(stack, jwks.url) as server:
            await server.accepts(rsa_key.token())
            await server.accepts(ec_key.token())
            # A service token, like Supabase's service key, without a subject.
            await server.accepts(rsa_key.token(role="service_role", sub=None))
            await server.accepts(ec_key.token(role="service_role", sub=None))

            # The claims are checked as for HS256 tokens.
            now = int(time.time())
            expired = rsa_key.token(iat=now - 7200, exp=now - 3600)
            error = await server.refuses(expired, UNAUTHENTICATED)
            assert error_reason(error) == "TOKEN_EXPIRED"
            error = await server.refuses(ec_key.token(aud="anon"), UNAUTHENTICATED)
            assert error_reason(error) == "TOKEN_AUDIENCE"
            error = await server.refuses(
                rsa_key.token(role="anon"), grpc.StatusCode.PERMISSION_DENIED
            )
            assert error_reason(error) == "ROLE_NOT_ALLOWED"

            # With a JWKS alone, HS256 tokens are not accepted at all.
            error = await server.refuses(signed(claims()), UNAUTHENTICATED)
            assert error_reason(error) == "TOKEN_ALGORITHM_NOT_ALLOWED"
        assert jwks.fetches == 1


async def test_a_token_whose_algorithm_is_not_its_keys_is_refused(
    stack: Stack, storage: Storage
) -> None:
    """The key a kid names fixes the algorithm; the token's `alg` does not choose it."""
    rsa_key, ec_key = SigningKey.rsa("rsa-key"), SigningKey.ec("ec-key")
    with serving_jwks(rsa_key, ec_key) as jwks:
        async with jwks_server(stack, jwks.url) as server:
            for signer, named in ((rsa_key, ec_key), (ec_key, rsa_key)):
                error = await server.refuses(signer.token(kid=named.kid), UNAUTHENTICATED)
                assert_refused_for(
                    error,
                    "TOKEN_ALGORITHM_NOT_ALLOWED",
                    f"the token's algorithm {signer.algorithm!r} is not the algorithm of "
                    "its signing key",
                )
            # The classic confusion: HS256 with the published RSA public key as the secret.
            pem = (
                rsa_key.private.public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode()
            )
            header = orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid})
            confused = hand_signed(header, orjson.dumps(claims()), secret=pem)
            error = await server.refuses(confused, UNAUTHENTICATED)
            assert error_reason(error) == "TOKEN_ALGORITHM_NOT_ALLOWED"
            # The right pairs still work.
            await server.accepts(rsa_key.token())
            await server.accepts(ec_key.token())


# ----------------------------------------------------------------- refused keys


async def test_a_kid_that_is_not_in_the_jwks_is_unauthenticated(
    stack: Stack, storage: Storage
) -> None:
    """Unknown kids are refused, and a burst of them does not make the server hammer it."""
    published = SigningKey.rsa("published")
    with serving_jwks(published) as jwks:
        async with jwks_server(stack, jwks.url) as server:
            for index in range(20):
                token = published.token(kid=f"made-up-{index}")
                error = await server.refuses(token, UNAUTHENTICATED)
                assert_refused_for(error, "TOKEN_SIGNATURE", "the token's signing key is unknown")
            error = await server.refuses(published.token(without_kid=True), UNAUTHENTICATED)
            assert_refused_for(error, "TOKEN_SIGNATURE", "the token's signing key is unknown")
            # The first call fetched the JWKS; the unknown kids, all within the 30 s
            # between forced fetches, were answered from it.
            assert jwks.fetches == 1
            await server.accepts(published.token())
            assert jwks.fetches == 1


async def test_a_token_signed_by_another_key_under_a_known_kid_is_unauthenticated(
    stack: Stack, storage: Storage
) -> None:
    rsa_key, ec_key = SigningKey.rsa("rsa-key"), SigningKey.ec("ec-key")
    with serving_jwks(rsa_key, ec_key) as jwks:
        async with jwks_server(stack, jwks.url) as server:
            # Keys of the right type under the published kids, but never published.
            for impostor in (SigningKey.rsa(rsa_key.kid), SigningKey.ec(ec_key.kid)):
                error = await server.refuses(impostor.token(), UNAUTHENTICATED)
                assert_refused_for(
                    error, "TOKEN_SIGNATURE", "the token's signature does not verify"
                )
            # A genuine token whose payload was changed after signing.
            header, _, signature = rsa_key.token().split(".")
            forged = f"{header}.{b64(orjson.dumps(claims()))}.{signature}"
            error = await server.refuses(forged, UNAUTHENTICATED)
            assert_refused_for(error, "TOKEN_SIGNATURE", "the token's signature does not verify")
            await server.accepts(rsa_key.token())


# ----------------------------------------------------------------- rotation


async def test_a_key_added_to_the_jwks_is_used_and_a_removed_one_stops_working(
    stack: Stack, storage: Storage
) -> None:
    old, new = SigningKey.rsa("2026-01"), SigningKey.ec("2026-02")
    with serving_jwks(old) as jwks:
        async with jwks_server(
            stack, jwks.url, jwt_jwks_cache_seconds=SHORT_CACHE_SECONDS
        ) as server:
            await server.accepts(old.token())
            assert jwks.fetches == 1

            # The new key is published; a token naming it is accepted once it is fetched.
            jwks.publish(old, new)
            refusals: list[grpc.aio.AioRpcError] = []

            def accepted_or_kept(error: grpc.aio.AioRpcError | None) -> bool:
                if error is not None:
                    refusals.append(error)
                return error is None

            await poll(server, new.token, accepted_or_kept, "the new key was not used")
            assert jwks.fetches >= 2
            for error in refusals:  # before that: an unknown key, nothing else
                assert error.code() == UNAUTHENTICATED, error.details()
                assert error_reason(error) == "TOKEN_SIGNATURE"
            # Both keys are published: both work.
            await server.accepts(old.token())
            await server.accepts(new.token())

            # The old key is retired: once the JWKS is fetched again, it is refused.
            fetched_before = jwks.fetches
            jwks.publish(new)
            error = await poll(
                server, old.token, lambda error: error is not None, "the old key still works"
            )
            assert error is not None
            assert error.code() == UNAUTHENTICATED, error.details()
            assert_refused_for(error, "TOKEN_SIGNATURE", "the token's signing key is unknown")
            assert jwks.fetches > fetched_before
            await server.accepts(new.token())
            error = await server.refuses(new.token(kid="2026-03"), UNAUTHENTICATED)
            assert error_reason(error) == "TOKEN_SIGNATURE"


# ----------------------------------------------------------------- the cache


async def test_tokens_naming_the_same_kid_fetch_the_jwks_once(
    stack: Stack, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default lifetime (10 minutes), every token is checked against one fetch."""
    monkeypatch.delenv("JWT_JWKS_CACHE_SECONDS", raising=False)
    rsa_key, ec_key = SigningKey.rsa("rsa-key"), SigningKey.ec("ec-key")
    with serving_jwks(rsa_key, ec_key) as jwks:
        settings = stack_settings(stack.postgres, stack.seaweed, jwt_jwks_url=jwks.url)
        assert settings.jwt_jwks_cache_seconds == 600
        async with jwks_server(stack, jwks.url) as server:
            assert jwks.fetches == 0  # fetched on first use, not at start
            for _ in range(5):
                await server.accepts(rsa_key.token())
                await server.accepts(ec_key.token())
            assert jwks.fetches == 1


async def test_the_jwks_is_fetched_again_once_the_cache_lifetime_has_passed(
    stack: Stack, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JWT_JWKS_CACHE_SECONDS=1: calls within a second use the cache, the next one fetches."""
    monkeypatch.setenv("JWT_JWKS_CACHE_SECONDS", str(SHORT_CACHE_SECONDS))
    key = SigningKey.rsa("only-key")
    with serving_jwks(key) as jwks:
        async with jwks_server(stack, jwks.url) as server:
            await server.accepts(key.token())
            assert jwks.fetches == 1
            calls = 1

            def fetched_again(error: grpc.aio.AioRpcError | None) -> bool:
                nonlocal calls
                calls += 1
                assert error is None, f"refused: {error.code().name}: {error.details()}"
                return jwks.fetches > 1

            await poll(server, key.token, fetched_again, "the JWKS was not fetched again")
            first, second = jwks.requests[:2]
            assert second - first >= SHORT_CACHE_SECONDS
            assert calls > 2, "no call was answered from the cache in between"
            assert jwks.fetches == 2


# ----------------------------------------------------------------- an unreachable JWKS


UNREACHABLE = "the signing keys cannot be fetched; retry later"
UNREADABLE = "the signing keys cannot be read; retry later"


async def test_a_jwks_on_a_closed_port_is_unavailable(stack: Stack, storage: Storage) -> None:
    key = SigningKey.rsa("key")
    with serving_jwks(key) as jwks:
        url = jwks.url
    # The endpoint is stopped: its port is closed.
    async with jwks_server(stack, url) as server:
        for token in (key.token(), key.token()):
            error = await server.refuses(token, UNAVAILABLE)
            assert_refused_for(error, "UNAVAILABLE", UNREACHABLE)


async def test_a_jwks_outage_is_unavailable_once_the_cache_expires_and_recovers(
    stack: Stack, storage: Storage
) -> None:
    key = SigningKey.ec("key")
    with serving_jwks(key) as jwks:
        port, url = jwks.port, jwks.url
        async with jwks_server(stack, url, jwt_jwks_cache_seconds=SHORT_CACHE_SECONDS) as server:
            await server.accepts(key.token())
            jwks.stop()
            # While the cached JWKS is fresh the outage goes unnoticed; then it shows.
            error = await poll(
                server,
                key.token,
                lambda error: error is not None,
                "the outage was not noticed after the cache expired",
            )
            assert error is not None
            assert error.code() == UNAVAILABLE, error.details()
            assert_refused_for(error, "UNAVAILABLE", UNREACHABLE)

            # The JWKS is back on the same address: the next call fetches it again.
            with serving_jwks(key, port=port) as back:
                await server.accepts(key.token())
                assert back.fetches == 1


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, b'{"message":"internal error"}', UNREACHABLE),
        (404, b"not found", UNREACHABLE),
        (200, b"<html><body>Bad gateway</body></html>", UNREADABLE),
        (200, b'{"keys": [{"kty": "RSA", ', UNREADABLE),
        (200, b"\xff\xfe\x00{", UNREADABLE),
    ],
    ids=["http-500", "http-404", "html", "truncated-json", "not-utf8"],
)
async def test_a_jwks_that_answers_no_keys_is_unavailable(
    stack: Stack, storage: Storage, status: int, body: bytes, message: str
) -> None:
    key = SigningKey.rsa("key")
    with serving_jwks(key) as jwks:
        jwks.misbehave(status=status, body=body)
        async with jwks_server(stack, jwks.url) as server:
            error = await server.refuses(key.token(), UNAVAILABLE)
            assert_refused_for(error, "UNAVAILABLE", message)
            # Nothing broken was cached: once the JWKS answers keys, the token is accepted.
            jwks.misbehave()
            await server.accepts(key.token())


async def test_a_jwks_that_never_answers_is_unavailable_after_the_fetch_timeout(
    stack: Stack, storage: Storage
) -> None:
    key = SigningKey.rsa("key")
    with serving_jwks(key) as jwks:
        jwks.misbehave(hang=True)
        async with jwks_server(stack, jwks.url) as server:
            started = time.monotonic()
            error = await server.refuses(key.token(), UNAVAILABLE)
            elapsed = time.monotonic() - started
            assert_refused_for(error, "UNAVAILABLE", UNREACHABLE)
            assert jwks.fetches == 1
            assert JWKS_FETCH_TIMEOUT_SECONDS <= elapsed < JWKS_FETCH_TIMEOUT_SECONDS + 5


# ----------------------------------------------------------------- more on the cache


async def test_an_outage_goes_unnoticed_while_the_cached_jwks_is_fresh(
    stack: Stack, storage: Storage
) -> None:
    key = SigningKey.ec("key")
    with serving_jwks(key) as jwks:
        async with jwks_server(stack, jwks.url) as server:  # the default lifetime: 600 s
            await server.accepts(key.token())
            jwks.stop()
            for _ in range(3):
                await server.accepts(key.token())
            assert jwks.fetches == 1


async def test_a_key_just_published_is_fetched_on_demand_at_most_every_30_seconds(
    stack: Stack, storage: Storage
) -> None:
    """With the default 10-minute lifetime, a token naming a new key makes the server
    fetch the JWKS again instead of waiting out the cache, but no sooner than 30 s after
    the last fetch, however many such tokens come: the time passing is what is tested."""
    old, new = SigningKey.rsa("2026-01"), SigningKey.ec("2026-02")
    with serving_jwks(old) as jwks:
        async with jwks_server(stack, jwks.url) as server:
            await server.accepts(old.token())
            jwks.publish(old, new)
            refused = 0
            deadline = time.monotonic() + JWKS_UNKNOWN_KID_REFRESH_SECONDS + CHANGE_DEADLINE
            while (error := await server.call(new.token())) is not None:
                assert error.code() == UNAUTHENTICATED, error.details()
                assert error_reason(error) == "TOKEN_SIGNATURE"
                refused += 1
                assert time.monotonic() < deadline, "the new key was never fetched"
                await asyncio.sleep(0.5)
            first, second = jwks.requests
            assert second - first >= JWKS_UNKNOWN_KID_REFRESH_SECONDS
            assert refused > 10, "the tokens naming the new key did not keep coming"
            await server.accepts(old.token())
            assert jwks.fetches == 2


async def test_a_jwks_beside_a_secret_accepts_both_kinds_of_token(
    stack: Stack, storage: Storage
) -> None:
    """During a key rotation both are set: HS256 tokens and the JWKS's tokens pass."""
    key = SigningKey.rsa("rotating")
    with serving_jwks(key) as jwks:
        settings = stack_settings(stack.postgres, stack.seaweed, jwt_jwks_url=jwks.url)
        assert settings.jwt_secret is not None
        async with (
            running_server(settings) as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            server = Server(running, service_pb2_grpc.TrainingFileServiceStub(channel))
            await server.accepts(signed(claims()))
            await server.accepts(key.token())
            error = await server.refuses(signed(claims(), secret="x" * 48), UNAUTHENTICATED)
            assert error_reason(error) == "TOKEN_SIGNATURE"


@pytest.mark.parametrize(
    ("body", "logged_as"),
    [(None, "signing keys cannot be fetched"), (b"<html></html>", "signing keys cannot be read")],
    ids=["closed-port", "not-json"],
)
async def test_a_jwks_that_cannot_be_used_is_logged_with_its_cause(
    stack: Stack, storage: Storage, body: bytes | None, logged_as: str
) -> None:
    key = SigningKey.rsa("key")
    with serving_jwks(key) as jwks:
        url = jwks.url
        if body is None:
            jwks.stop()
        else:
            jwks.misbehave(body=body)
        with captured_logs() as records:
            async with jwks_server(stack, url) as server:
                await server.refuses(key.token(), UNAVAILABLE)

    (cause,) = logged(records, logged_as)
    assert cause["error"]


async def test_a_verified_token_is_trusted_for_at_most_a_minute(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key removed from the JWKS stops working once the JWKS is fetched again, except
    for tokens already verified, which are trusted for one more minute at most. The
    minute is not waited out: the authenticator's clock is moved past it."""
    key = SigningKey.rsa("retired")
    with serving_jwks(key) as jwks:
        settings = stack_settings(
            stack.postgres,
            stack.seaweed,
            jwt_secret=None,
            jwt_jwks_url=jwks.url,
            jwt_jwks_cache_seconds=SHORT_CACHE_SECONDS,
        )
        authenticator = Authenticator(settings)

        async def verdict(token: str) -> str:
            try:
                await authenticator.authenticate([("authorization", f"Bearer {token}")])
            except Unauthenticated as refused:
                return refused.reason
            return "OK"

        verified = key.token()
        assert await verdict(verified) == "OK"
        jwks.publish()  # the key is removed
        deadline = time.monotonic() + CHANGE_DEADLINE
        while await verdict(key.token()) == "OK":  # a new token: refused once fetched again
            assert time.monotonic() < deadline, "the removed key still works"
            await asyncio.sleep(POLL_INTERVAL)
        assert await verdict(key.token()) == "TOKEN_SIGNATURE"
        assert await verdict(verified) == "OK"  # verified before: still trusted

        later = time.time() + VERIFIED_TOKEN_SECONDS + 1
        monkeypatch.setattr(auth, "time", types.SimpleNamespace(time=lambda: later))
        assert await verdict(verified) == "TOKEN_SIGNATURE"
