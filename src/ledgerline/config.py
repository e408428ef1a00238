"""Configuration from LEDGERLINE_* environment variables, validated at start.
A bad value stops the process with one line naming the variable."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ledgerline.platform.client_address import IPNetwork
from ledgerline.platform.ratelimit import parse_limits

ENV_PREFIX = "LEDGERLINE_"
Port = Annotated[int, Field(ge=1, le=65535)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Unset: an embedded PostgreSQL under data_dir is started and migrated.
    database_url: str | None = None
    db_pool_min_size: Annotated[int, Field(ge=0, le=100)] = 2
    db_pool_max_size: Annotated[int, Field(ge=1, le=500)] = 10

    # Unset: payment locks are PostgreSQL advisory locks.
    redis_url: str | None = None
    # Longer than a payment takes; a holder paused past it loses the lock,
    # and the database transaction still keeps the payment single.
    payment_lock_ttl_ms: Annotated[int, Field(ge=50, le=600_000)] = 10_000
    idempotency_retention_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 24.0

    # Events: unset, they stay in the outbox for its retention (see
    # `ledgerline events tail`); set, the worker publishes them to NATS
    # JetStream (nats:// or tls://).
    event_bus_url: str | None = None
    event_stream: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "LEDGERLINE_EVENTS"
    event_subject_prefix: Annotated[
        str, Field(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", max_length=128)
    ] = "ledgerline.events"
    event_source: Annotated[str, Field(min_length=1, max_length=256)] = "/ledgerline"
    event_publish_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    outbox_retention_hours: Annotated[float, Field(gt=0, le=24 * 365)] = 24.0 * 7

    # The worker (`ledgerline worker`).
    worker_port: Port = 8001  # /healthz, /readyz and /metrics
    relay_batch_size: Annotated[int, Field(ge=1, le=10_000)] = 100  # aggregates a claim
    relay_concurrency: Annotated[int, Field(ge=1, le=1024)] = 32
    relay_max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    relay_lease_seconds: Annotated[float, Field(ge=1, le=3600)] = 30.0
    relay_idle_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    order_ttl: timedelta = timedelta(hours=24)
    order_expiry_interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    purge_interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 300.0

    # Abuse protection (platform/ratelimit.py): moving windows, in Redis when
    # redis_url is set (shared by every process), else in each process.
    # Several limits at once: "10/minute;60/hour", all of which apply.
    rate_limits_enabled: bool = True
    rate_limit_login_per_email: str = "10/minute;60/hour"
    rate_limit_login_per_address: str = "60/minute;600/hour"
    rate_limit_register_per_address: str = "10/minute;100/day"
    # How long a check may wait for Redis before the call passes unchecked.
    rate_limit_timeout_seconds: Annotated[float, Field(gt=0, le=5)] = 0.5
    # Deployments (or tests) that share one Redis keep their counts apart.
    rate_limit_key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = (
        "ledgerline:rate-limit"
    )
    # Proxies whose X-Forwarded-For is believed (addresses or CIDR
    # networks, comma-separated); none by default.
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = ()

    # Unset: a secret is made once and kept in data_dir.
    jwt_secret: SecretStr | None = None
    jwt_ttl_seconds: Annotated[int, Field(ge=60, le=86_400)] = 900

    http_host: str = "127.0.0.1"
    http_port: Port = 8000
    # What one serving process accepts from its clients (see protocol.py).
    http_max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 16 * 1024
    http_max_headers: Annotated[int, Field(ge=8, le=1000)] = 100
    http_header_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    http_keepalive_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 5
    http_max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 2048
    # Validated now so a bad value stops the process; served by a later release.
    grpc_port: Port = 50051
    data_dir: Path = Path(".data")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console", "auto"] = "auto"

    request_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    shutdown_timeout_seconds: Annotated[float, Field(ge=0, le=600)] = 20.0
    # How long readiness reports 503 before the listener closes, so that a
    # load balancer stops routing here first.
    shutdown_drain_seconds: Annotated[float, Field(ge=0, le=600)] = 0.0

    argon2_time_cost: Annotated[int, Field(ge=1, le=20)] = 2
    argon2_memory_kib: Annotated[int, Field(ge=8 * 1024, le=4 * 1024 * 1024)] = 19 * 1024
    argon2_parallelism: Annotated[int, Field(ge=1, le=16)] = 1
    # Threads that hash passwords; each hash holds argon2_memory_kib.
    hash_workers: Annotated[int, Field(ge=1, le=64)] = 2

    @field_validator("database_url", mode="before")
    @classmethod
    def _postgres_url(cls, value: object) -> object:
        if value == "":
            return None  # set but empty, as compose files do: the same as unset
        if isinstance(value, str) and not re.match(r"^postgres(ql)?://", value):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value: object) -> object:
        if value == "":
            return None
        if isinstance(value, str) and not re.match(r"^(rediss?|unix)://", value):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("event_bus_url", mode="before")
    @classmethod
    def _nats_url(cls, value: object) -> object:
        if value == "":
            return None
        if isinstance(value, str) and not re.match(r"^(nats|tls)://[^\s]+$", value):
            raise ValueError("must be a nats:// or tls:// URL")
        return value

    @field_validator(
        "rate_limit_login_per_email",
        "rate_limit_login_per_address",
        "rate_limit_register_per_address",
    )
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        parse_limits(value)  # ValueError names what is wrong
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        """Separated by commas or spaces: ``10.0.0.0/8, 192.0.2.7`` (a bare
        address is its own /32 or /128); host bits set under a prefix
        (``10.0.0.1/8``) are refused as a typo."""
        if not isinstance(value, str):
            return value
        networks: list[IPNetwork] = []
        for entry in value.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(entry))
            except ValueError as exc:  # "... has host bits set", "... does not appear to be ..."
                raise ValueError(f"not an IP address or network: {exc}") from None
        return tuple(networks)

    @field_validator("relay_lease_seconds")
    @classmethod
    def _lease_outlasts_publishes(cls, value: float, info: ValidationInfo) -> float:
        timeout = info.data.get("event_publish_timeout_seconds")
        if isinstance(timeout, float) and value < 4 * timeout:
            raise ValueError(
                f"must be at least 4 times LEDGERLINE_EVENT_PUBLISH_TIMEOUT_SECONDS ({timeout:g})"
            )
        return value

    @field_validator("order_ttl", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        """Seconds ("3600"), with a unit ("90s", "30m", "24h", "7d"), or ISO
        8601 ("PT24H")."""
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
            if match:
                unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}[match[2]]
                return timedelta(seconds=float(match[1]) * unit)
        return value

    @field_validator("order_ttl")
    @classmethod
    def _positive_ttl(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(days=365):
            raise ValueError("must be from 1 second to 365 days")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class ConfigError(Exception):
    """A configuration value is wrong; the message names the variable."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise ConfigError(f"{ENV_PREFIX}{field.upper()}: {first['msg']}") from exc
