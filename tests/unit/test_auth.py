"""Identity settings, token verification and ownership rules, without a server."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.conftest import TEST_JWT_SECRET
from tests.tokens import bad_tokens, claims, signed
from trainingfiles_dev.token import DEVELOPMENT_JWT_SECRET, mint_token
from trainingfiles_server.app import running_server
from trainingfiles_server.auth import (
    MAX_TOKEN_CHARS,
    MIN_SECRET_BYTES,
    Authenticator,
    ConfigurationError,
    check_settings,
)
from trainingfiles_server.config import Settings
from trainingfiles_server.errors import (
    InvalidArgument,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
)
from trainingfiles_server.models import Caller

USER = uuid.UUID("00000000-0000-4000-8000-00000000a001")
OTHER = uuid.UUID("00000000-0000-4000-8000-00000000b002")


def settings(**values: Any) -> Settings:
    values.setdefault("jwt_jwks_url", None)
    # Nothing listens on port 1: a server that got past the identity check would fail
    # to connect instead, which the tests below would notice.
    values.setdefault("database_url", "postgresql://nobody@127.0.0.1:1/none")
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# ----------------------------------------------------------------- settings


def test_a_missing_secret_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="JWT_SECRET"):
        check_settings(settings(jwt_secret=None))


@pytest.mark.parametrize("length", [1, 16, MIN_SECRET_BYTES - 1])
def test_a_secret_shorter_than_32_bytes_is_refused(length: int) -> None:
    secret = "s" * length
    with pytest.raises(ConfigurationError, match="at least 32 bytes") as refused:
        check_settings(settings(jwt_secret=secret))
    if length >= 16:
        assert secret not in str(refused.value)


def test_a_secret_of_32_bytes_is_accepted_and_length_counts_bytes() -> None:
    check_settings(settings(jwt_secret="s" * MIN_SECRET_BYTES))
    check_settings(settings(jwt_secret="é" * (MIN_SECRET_BYTES // 2)))  # 16 chars, 32 bytes
    with pytest.raises(ConfigurationError):
        check_settings(settings(jwt_secret="é" * (MIN_SECRET_BYTES // 2 - 1)))


def test_the_development_secret_is_refused_outside_development_mode() -> None:
    with pytest.raises(ConfigurationError, match="development secret") as refused:
        check_settings(settings(jwt_secret=DEVELOPMENT_JWT_SECRET, development_mode=False))
    assert DEVELOPMENT_JWT_SECRET not in str(refused.value)


def test_development_mode_accepts_the_development_secret() -> None:
    check_settings(settings(jwt_secret=DEVELOPMENT_JWT_SECRET, development_mode=True))


def test_development_mode_still_refuses_a_short_secret() -> None:
    with pytest.raises(ConfigurationError):
        check_settings(settings(jwt_secret="short", development_mode=True))


def test_a_jwks_url_alone_is_enough() -> None:
    check_settings(settings(jwt_secret=None, jwt_jwks_url="https://example.invalid/jwks"))


def test_the_authenticator_checks_the_settings_too() -> None:
    with pytest.raises(ConfigurationError):
        Authenticator(settings(jwt_secret="short"))


@pytest.mark.parametrize(
    "values",
    [
        {"jwt_secret": None},
        {"jwt_secret": "x" * 31},
        {"jwt_secret": DEVELOPMENT_JWT_SECRET},
    ],
    ids=["missing", "short", "development"],
)
async def test_running_server_refuses_to_start_with_a_bad_secret(values: dict[str, Any]) -> None:
    """Refused before the pool, the S3 client or the port are opened."""
    with pytest.raises(ConfigurationError):
        async with running_server(settings(**values)):
            pytest.fail("the server started")


# ----------------------------------------------------------------- tokens


@pytest.fixture
def authenticator() -> Authenticator:
    return Authenticator(settings(jwt_secret=TEST_JWT_SECRET))


def _metadata(authorization: str | None) -> list[tuple[str, str]]:
    return [] if authorization is None else [("authorization", authorization)]


async def test_a_valid_user_token_gives_the_user(authenticator: Authenticator) -> None:
    token = mint_token(TEST_JWT_SECRET, user_id=USER)
    caller = await authenticator.authenticate(_metadata(f"Bearer {token}"))
    assert caller == Caller("authenticated", USER)
    assert not caller.sees_everything()


async def test_a_service_token_acts_for_the_system(authenticator: Authenticator) -> None:
    token = mint_token(TEST_JWT_SECRET, user_id=USER, role="service_role")
    caller = await authenticator.authenticate(_metadata(f"Bearer {token}"))
    assert caller == Caller("service_role", None)
    assert caller.sees_everything()
    # Like Supabase's service key: no subject at all.
    no_sub = signed(claims(role="service_role", sub=None))
    assert await authenticator.authenticate(_metadata(f"Bearer {no_sub}")) == Caller()


async def test_the_scheme_is_case_insensitive_and_bytes_values_work(
    authenticator: Authenticator,
) -> None:
    token = mint_token(TEST_JWT_SECRET, user_id=USER)
    assert (await authenticator.authenticate(_metadata(f"bearer {token}"))).user_id == USER
    raw: list[tuple[str, Any]] = [("authorization", f"Bearer {token}".encode())]
    assert (await authenticator.authenticate(raw)).user_id == USER


async def test_an_expiry_within_the_leeway_is_accepted(authenticator: Authenticator) -> None:
    now = int(time.time())
    token = signed(claims(USER, exp=now - 10, nbf=now + 10))
    assert (await authenticator.authenticate(_metadata(f"Bearer {token}"))).user_id == USER


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": -20}, None),
        ({"exp": -40}, "TOKEN_EXPIRED"),
        ({"nbf": 20}, None),
        ({"nbf": 40}, "TOKEN_NOT_YET_VALID"),
        ({"iat": 20}, None),
        ({"iat": 40}, "TOKEN_NOT_YET_VALID"),
    ],
    ids=lambda value: repr(value),
)
async def test_the_default_clock_skew_is_30_seconds(
    overrides: dict[str, int], reason: str | None
) -> None:
    """`exp`, `nbf` and `iat` are checked 30 s either way by default (JWT_LEEWAY_SECONDS)."""
    authenticator = Authenticator(settings(jwt_secret=TEST_JWT_SECRET))
    now = int(time.time())
    token = signed(claims(USER, **{claim: now + offset for claim, offset in overrides.items()}))
    metadata = _metadata(f"Bearer {token}")

    if reason is None:
        assert (await authenticator.authenticate(metadata)).user_id == USER
    else:
        with pytest.raises(Unauthenticated) as refused:
            await authenticator.authenticate(metadata)
        assert refused.value.reason == reason


@pytest.mark.parametrize("case", bad_tokens(USER), ids=lambda case: case.name)
async def test_every_bad_token_is_refused_with_its_reason(
    authenticator: Authenticator, case: Any
) -> None:
    if case.reason is None:
        # Refused by gRPC itself on the wire; here, the length check refuses it.
        expected: tuple[type[ServiceError], str] = (Unauthenticated, "TOKEN_MALFORMED")
    else:
        expected = (
            PermissionDenied if case.code == "PERMISSION_DENIED" else Unauthenticated,
            case.reason,
        )
    with pytest.raises(ServiceError) as refused:
        await authenticator.authenticate(case.metadata())
    assert (type(refused.value), refused.value.reason) == expected
    token = (case.authorization or "").partition(" ")[2] or case.authorization or ""
    if len(token) >= 16:
        assert token not in refused.value.message
    assert TEST_JWT_SECRET not in refused.value.message


async def test_a_token_just_above_the_length_limit_is_refused(
    authenticator: Authenticator,
) -> None:
    with pytest.raises(Unauthenticated, match="too long") as refused:
        await authenticator.authenticate(_metadata("Bearer " + "a" * (MAX_TOKEN_CHARS + 1)))
    assert refused.value.reason == "TOKEN_MALFORMED"


async def test_two_authorization_headers_are_refused(authenticator: Authenticator) -> None:
    token = mint_token(TEST_JWT_SECRET, user_id=USER)
    metadata = [("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")]
    with pytest.raises(Unauthenticated) as refused:
        await authenticator.authenticate(metadata)
    assert refused.value.reason == "TOKEN_MALFORMED"


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": ["other", "authenticated"]},  # a list naming the audience is fine
        {"exp": float(int(time.time()) + 3600)},
        {"iss": "https://project.supabase.co/auth/v1", "email": "a@example.com"},
    ],
)
async def test_acceptable_claim_variations(
    authenticator: Authenticator, overrides: dict[str, Any]
) -> None:
    token = signed(claims(USER, **overrides))
    assert (await authenticator.authenticate(_metadata(f"Bearer {token}"))).user_id == USER


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": 5},
        {"aud": ["other"]},
        {"nbf": "soon"},
        {"iat": "then"},
        {"exp": None, "nbf": 0},
        {"role": ["service_role"]},
        {"role": {"name": "service_role"}},
        {"sub": 12},
        {"sub": {"id": str(USER)}},
        {"sub": ""},
    ],
    ids=repr,
)
async def test_odd_claim_types_are_refused_cleanly(
    authenticator: Authenticator, overrides: dict[str, Any]
) -> None:
    """Whatever the claims hold, the answer is UNAUTHENTICATED or PERMISSION_DENIED."""
    token = signed(claims(USER, **overrides))
    with pytest.raises(ServiceError) as refused:
        await authenticator.authenticate(_metadata(f"Bearer {token}"))
    assert type(refused.value) in (Unauthenticated, PermissionDenied)


# ----------------------------------------------------------------- ownership


def test_a_user_owns_what_they_create() -> None:
    assert Caller("authenticated", USER).owner_for("") == USER
    assert Caller("authenticated", USER).owner_for(str(USER)) == USER


def test_a_user_cannot_act_on_behalf_of_someone_else() -> None:
    with pytest.raises(PermissionDenied) as refused:
        Caller("authenticated", USER).owner_for(str(OTHER))
    assert refused.value.reason == "ON_BEHALF_OF_NOT_ALLOWED"


def test_a_service_creates_for_the_system_or_on_behalf_of_a_user() -> None:
    assert Caller("service_role", None).owner_for("") is None
    assert Caller("service_role", None).owner_for(str(OTHER)) == OTHER


@pytest.mark.parametrize("role", ["authenticated", "service_role"])
def test_a_malformed_on_behalf_of_is_invalid_argument(role: Any) -> None:
    with pytest.raises(InvalidArgument) as refused:
        Caller(role, USER if role == "authenticated" else None).owner_for("not-a-uuid")
    assert [v.subject for v in refused.value.violations] == ["on_behalf_of"]
