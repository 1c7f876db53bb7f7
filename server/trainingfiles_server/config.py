"""Configuration, read once from environment variables (and an optional `.env` file).

Every variable is documented in `.env.example` at the project root. Secrets are
`SecretStr` so they never appear in a repr or a log line.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The service's settings; field names map to upper-case environment variables."""

    # Empty variables count as unset, so a copied `.env.example` means "the defaults".
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True
    )

    # --- gRPC server ---
    listen_address: str = "127.0.0.1:50051"
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    max_message_bytes: PositiveInt = 4 * 1024 * 1024
    max_concurrent_streams: PositiveInt = 100
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # host:port of the Prometheus metrics endpoint (GET /metrics); unset: no endpoint.
    metrics_address: str | None = None

    # --- PostgreSQL ---
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/trainingfiles")
    database_pool_min_size: int = Field(default=1, ge=0)
    database_pool_max_size: PositiveInt = 10
    # 0 turns asyncpg's prepared-statement cache off, as a transaction-mode pooler
    # (PgBouncer, Supabase's pooler on port 6543) requires.
    database_statement_cache_size: int = Field(default=100, ge=0)
    database_command_timeout_seconds: float = Field(default=30.0, gt=0)

    # --- S3-compatible object storage ---
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_conversations_bucket: str = "conversation-files"
    s3_training_bucket: str = "training-files"
    s3_max_attempts: PositiveInt = 4
    s3_max_pool_connections: PositiveInt = 32
    # Multipart uploads are cut into parts of at least this size. S3 (and every store
    # the service supports) refuses parts under 5 MiB but the last; larger parts cost
    # memory (two objects, two parts in flight each) and were no faster (`make bench`).
    s3_part_size_bytes: int = Field(default=5 * 1024 * 1024, ge=5 * 1024 * 1024)

    # --- health ---
    health_check_interval_seconds: float = Field(default=5.0, gt=0)
    health_check_timeout_seconds: float = Field(default=2.0, gt=0)

    # --- work limits ---
    fetch_concurrency: PositiveInt = 16
    max_conversations_per_request: PositiveInt = 10_000
    max_object_bytes: PositiveInt = 50 * 1024 * 1024
    # Conversations a selector may choose for one Create or Add (its `limit` may cap less).
    max_conversations_per_selector: PositiveInt = 100_000
    # Rows read at a time: a selector's cursor, and the eligibility of listed ids; what
    # a Create or an Add holds of its conversations as records before they are packed
    # into its targets.
    selector_page_size: PositiveInt = 1_000

    # --- token statistics (README: "Analytics") ---
    # Off: no token statistics for the versions built meanwhile (they cost CPU; see
    # docs/bench.md), the other analytics as usual.
    count_tokens: bool = True
    # A Hugging Face `tokenizer.json` to count tokens with (the open model being
    # fine-tuned); unset: OpenAI's cl100k_base, shipped with the service.
    tokenizer_json: str | None = None
    # The context length of the model being fine-tuned: pairs over it are warned about,
    # and a pair's billed tokens per epoch are capped at it. The default is the smallest
    # fine-tunable OpenAI chat model's (gpt-3.5-turbo: 16,385).
    context_length: PositiveInt = 16_385

    # --- crash safety (README: "Leases and the sweeper") ---
    # A build holds a lease on its file for this long, renewed every third of it; the
    # sweeper fails a build whose lease expired and removes what it stored.
    lease_seconds: float = Field(default=30.0, ge=1)
    sweep_interval_seconds: float = Field(default=10.0, gt=0)
    # How long running builds may take to clean up at shutdown, after the grace period,
    # before the pool and the S3 client close (what does not finish is the sweeper's).
    shutdown_cleanup_seconds: float = Field(default=10.0, ge=0)

    # --- versions ---
    # The objects of the last this-many versions of a file are kept (older versions keep
    # their metadata and are marked pruned; their objects go once no download link
    # handed out for the file can still be used).
    version_retention: PositiveInt = 5

    # Automatic refresh (README: "Versions"): a file is refreshed once none of its
    # changed conversations changed for this long (one refresh per burst of changes);
    # a failed refresh is tried again after 2^attempts times this (at most an hour).
    refresh_debounce_seconds: float = Field(default=5.0, ge=0)
    refresh_retry_seconds: float = Field(default=30.0, gt=0)

    # --- identity ---
    # HS256 secret of the Supabase project (at least 32 bytes). The development secret
    # is refused unless development_mode is on.
    jwt_secret: SecretStr | None = None
    # Optional JWKS endpoint for asymmetric (RS256/ES256) tokens.
    jwt_jwks_url: str | None = None
    # How long the fetched JWKS is trusted before it is fetched again (at most a day).
    jwt_jwks_cache_seconds: float = Field(default=600, gt=0, le=86_400)
    jwt_audience: str = "authenticated"
    jwt_leeway_seconds: float = Field(default=30, ge=0, le=300)
    # Development only: accept the development JWT secret (`make run` sets it).
    development_mode: bool = False

    # --- web console (started by `make run` only; the server itself never reads it) ---
    # Where `make run` serves the web console: host:port (port 0: any free one), or `off`.
    web_listen_address: str = "127.0.0.1:8080"

    # --- pagination ---
    # Signs page tokens. Unset: a random secret per process, so tokens do not survive a
    # restart and are not shared between replicas; set it when running several replicas.
    page_token_secret: SecretStr | None = None
