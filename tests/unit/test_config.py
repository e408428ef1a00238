"""Configuration from LEDGERLINE_* variables: defaults, and a clear error
naming the variable for every bad value."""

from __future__ import annotations

import os
from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path

import pytest

from ledgerline.config import ENV_PREFIX, ConfigError, load_settings

GOOD_SECRET = "s" * 32


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LEDGERLINE_* variable from the machine, and no dotenv file nearby."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_load_with_no_environment() -> None:
    settings = load_settings()

    assert settings.database_url is None
    assert settings.jwt_secret is None
    assert settings.http_host == "127.0.0.1"
    assert settings.http_port == 8000
    assert settings.data_dir == Path(".data")
    assert settings.log_level == "INFO"
    assert settings.log_format == "auto"
    assert settings.request_timeout_seconds == 10.0
    assert settings.jwt_ttl_seconds == 900


def test_rate_limits_are_on_by_default_and_trust_no_proxy() -> None:
    settings = load_settings()

    assert settings.rate_limits_enabled
    assert settings.rate_limit_login_per_email == "10/minute;60/hour"
    assert settings.rate_limit_login_per_address == "60/minute;600/hour"
    assert settings.rate_limit_register_per_address == "10/minute;100/day"
    assert settings.trusted_proxies == ()


GOOD_VALUES: dict[str, tuple[str, str, str, object]] = {
    # id: (variable, value, attribute, parsed)
    "http-port": ("LEDGERLINE_HTTP_PORT", "8080", "http_port", 8080),
    "http-port-lowest": ("LEDGERLINE_HTTP_PORT", "1", "http_port", 1),
    "http-port-highest": ("LEDGERLINE_HTTP_PORT", "65535", "http_port", 65535),
    "log-level-lower-case": ("LEDGERLINE_LOG_LEVEL", "debug", "log_level", "DEBUG"),
    "log-level-mixed-case": ("LEDGERLINE_LOG_LEVEL", "Warning", "log_level", "WARNING"),
    "log-format-json": ("LEDGERLINE_LOG_FORMAT", "json", "log_format", "json"),
    "database-url-postgresql": (
        "LEDGERLINE_DATABASE_URL",
        "postgresql://u:p@db:5432/ledgerline",
        "database_url",
        "postgresql://u:p@db:5432/ledgerline",
    ),
    "database-url-postgres": (
        "LEDGERLINE_DATABASE_URL",
        "postgres://db/ledgerline",
        "database_url",
        "postgres://db/ledgerline",
    ),
    "request-timeout-fraction": (
        "LEDGERLINE_REQUEST_TIMEOUT_SECONDS",
        "0.5",
        "request_timeout_seconds",
        0.5,
    ),
    "data-dir": (
        "LEDGERLINE_DATA_DIR",
        "/var/lib/ledgerline",
        "data_dir",
        Path("/var/lib/ledgerline"),
    ),
    "event-bus-nats": (
        "LEDGERLINE_EVENT_BUS_URL",
        "nats://bus:4222",
        "event_bus_url",
        "nats://bus:4222",
    ),
    "event-bus-tls": (
        "LEDGERLINE_EVENT_BUS_URL",
        "tls://bus:4222",
        "event_bus_url",
        "tls://bus:4222",
    ),
    "event-bus-empty-is-unset": ("LEDGERLINE_EVENT_BUS_URL", "", "event_bus_url", None),
    "event-stream": ("LEDGERLINE_EVENT_STREAM", "EVENTS_2", "event_stream", "EVENTS_2"),
    "event-subject-prefix": (
        "LEDGERLINE_EVENT_SUBJECT_PREFIX",
        "acme.ledger",
        "event_subject_prefix",
        "acme.ledger",
    ),
    "order-ttl-seconds": ("LEDGERLINE_ORDER_TTL", "3600", "order_ttl", timedelta(hours=1)),
    "order-ttl-minutes": ("LEDGERLINE_ORDER_TTL", "90m", "order_ttl", timedelta(minutes=90)),
    "order-ttl-hours": ("LEDGERLINE_ORDER_TTL", "24h", "order_ttl", timedelta(hours=24)),
    "order-ttl-days": ("LEDGERLINE_ORDER_TTL", "7d", "order_ttl", timedelta(days=7)),
    "order-ttl-iso-8601": ("LEDGERLINE_ORDER_TTL", "PT2H30M", "order_ttl", timedelta(hours=2.5)),
    "worker-port": ("LEDGERLINE_WORKER_PORT", "9001", "worker_port", 9001),
    "rate-limits-off": ("LEDGERLINE_RATE_LIMITS_ENABLED", "false", "rate_limits_enabled", False),
    "login-per-email": (
        "LEDGERLINE_RATE_LIMIT_LOGIN_PER_EMAIL",
        "5/minute",
        "rate_limit_login_per_email",
        "5/minute",
    ),
    "login-per-address-several": (
        "LEDGERLINE_RATE_LIMIT_LOGIN_PER_ADDRESS",
        "20/minute;200/hour",
        "rate_limit_login_per_address",
        "20/minute;200/hour",
    ),
    "register-per-address-in-words": (
        "LEDGERLINE_RATE_LIMIT_REGISTER_PER_ADDRESS",
        "3 per 10 minutes",
        "rate_limit_register_per_address",
        "3 per 10 minutes",
    ),
    "rate-limit-timeout": (
        "LEDGERLINE_RATE_LIMIT_TIMEOUT_SECONDS",
        "0.05",
        "rate_limit_timeout_seconds",
        0.05,
    ),
    "rate-limit-key-prefix": (
        "LEDGERLINE_RATE_LIMIT_KEY_PREFIX",
        "staging:rl",
        "rate_limit_key_prefix",
        "staging:rl",
    ),
    "trusted-proxies-one-address": (
        "LEDGERLINE_TRUSTED_PROXIES",
        "192.0.2.7",
        "trusted_proxies",
        (ip_network("192.0.2.7/32"),),
    ),
    "trusted-proxies-networks-and-ipv6": (
        "LEDGERLINE_TRUSTED_PROXIES",
        "10.0.0.0/8, 172.16.0.0/12 2001:db8::/32",
        "trusted_proxies",
        (ip_network("10.0.0.0/8"), ip_network("172.16.0.0/12"), ip_network("2001:db8::/32")),
    ),
    "trusted-proxies-empty": ("LEDGERLINE_TRUSTED_PROXIES", "", "trusted_proxies", ()),
}


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "parsed"),
    list(GOOD_VALUES.values()),
    ids=list(GOOD_VALUES),
)
def test_good_value_is_read(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, attribute: str, parsed: object
) -> None:
    monkeypatch.setenv(variable, value)

    assert getattr(load_settings(), attribute) == parsed


def test_jwt_secret_of_32_characters_is_kept_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGERLINE_JWT_SECRET", GOOD_SECRET)

    settings = load_settings()

    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == GOOD_SECRET
    assert GOOD_SECRET not in repr(settings)


BAD_VALUES: dict[str, tuple[str, str]] = {
    # id: (variable, value)
    "http-port-not-a-number": ("LEDGERLINE_HTTP_PORT", "abc"),
    "http-port-zero": ("LEDGERLINE_HTTP_PORT", "0"),
    "http-port-too-high": ("LEDGERLINE_HTTP_PORT", "70000"),
    "http-port-negative": ("LEDGERLINE_HTTP_PORT", "-1"),
    "jwt-secret-too-short": ("LEDGERLINE_JWT_SECRET", "s" * 31),
    "database-url-mysql": ("LEDGERLINE_DATABASE_URL", "mysql://x"),
    "database-url-not-a-url": ("LEDGERLINE_DATABASE_URL", "localhost:5432"),
    "log-level-unknown": ("LEDGERLINE_LOG_LEVEL", "loud"),
    "log-format-xml": ("LEDGERLINE_LOG_FORMAT", "xml"),
    "request-timeout-negative": ("LEDGERLINE_REQUEST_TIMEOUT_SECONDS", "-1"),
    "request-timeout-zero": ("LEDGERLINE_REQUEST_TIMEOUT_SECONDS", "0"),
    "request-timeout-not-a-number": ("LEDGERLINE_REQUEST_TIMEOUT_SECONDS", "soon"),
    "jwt-ttl-below-a-minute": ("LEDGERLINE_JWT_TTL_SECONDS", "59"),
    "event-bus-http": ("LEDGERLINE_EVENT_BUS_URL", "http://bus:4222"),
    "event-bus-no-scheme": ("LEDGERLINE_EVENT_BUS_URL", "bus:4222"),
    "event-stream-with-a-dot": ("LEDGERLINE_EVENT_STREAM", "LEDGER.EVENTS"),
    "event-subject-prefix-wildcard": ("LEDGERLINE_EVENT_SUBJECT_PREFIX", "ledger.>"),
    "event-subject-prefix-empty-token": ("LEDGERLINE_EVENT_SUBJECT_PREFIX", "ledger..events"),
    "order-ttl-zero": ("LEDGERLINE_ORDER_TTL", "0s"),
    "order-ttl-over-a-year": ("LEDGERLINE_ORDER_TTL", "400d"),
    "order-ttl-unknown-unit": ("LEDGERLINE_ORDER_TTL", "3w"),
    "relay-max-attempts-zero": ("LEDGERLINE_RELAY_MAX_ATTEMPTS", "0"),
    "relay-lease-under-a-second": ("LEDGERLINE_RELAY_LEASE_SECONDS", "0.5"),
    "worker-port-zero": ("LEDGERLINE_WORKER_PORT", "0"),
    "relay-lease-shorter-than-four-publish-timeouts": ("LEDGERLINE_RELAY_LEASE_SECONDS", "19"),
    "login-per-email-no-unit": ("LEDGERLINE_RATE_LIMIT_LOGIN_PER_EMAIL", "10"),
    "login-per-email-unknown-unit": ("LEDGERLINE_RATE_LIMIT_LOGIN_PER_EMAIL", "10/fortnight"),
    "login-per-address-zero": ("LEDGERLINE_RATE_LIMIT_LOGIN_PER_ADDRESS", "0/minute"),
    "register-per-address-empty": ("LEDGERLINE_RATE_LIMIT_REGISTER_PER_ADDRESS", ""),
    "register-per-address-trailing-separator": (
        "LEDGERLINE_RATE_LIMIT_REGISTER_PER_ADDRESS",
        "10/minute;",
    ),
    "rate-limits-enabled-not-a-bool": ("LEDGERLINE_RATE_LIMITS_ENABLED", "sometimes"),
    "rate-limit-timeout-zero": ("LEDGERLINE_RATE_LIMIT_TIMEOUT_SECONDS", "0"),
    "rate-limit-timeout-too-long": ("LEDGERLINE_RATE_LIMIT_TIMEOUT_SECONDS", "30"),
    "rate-limit-key-prefix-with-space": ("LEDGERLINE_RATE_LIMIT_KEY_PREFIX", "my prefix"),
    "trusted-proxies-hostname": ("LEDGERLINE_TRUSTED_PROXIES", "proxy.example.com"),
    "trusted-proxies-host-bits-set": ("LEDGERLINE_TRUSTED_PROXIES", "10.0.0.1/8"),
    "trusted-proxies-one-bad-of-two": ("LEDGERLINE_TRUSTED_PROXIES", "10.0.0.0/8, 300.1.1.1"),
}


@pytest.mark.parametrize(("variable", "value"), list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_bad_value_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert str(caught.value).startswith(f"{variable}: ")


def test_short_jwt_secret_is_not_echoed_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    short_secret = "tooshort-but-still-secret"
    monkeypatch.setenv("LEDGERLINE_JWT_SECRET", short_secret)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "LEDGERLINE_JWT_SECRET" in str(caught.value)
    assert short_secret not in str(caught.value)


def test_empty_database_url_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGERLINE_DATABASE_URL", "")

    assert load_settings().database_url is None
