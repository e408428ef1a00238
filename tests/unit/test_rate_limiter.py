"""The limiter itself, on its in-memory storage: what one key counts, the
order in which a login's limits are counted, and what a refusal says."""

from __future__ import annotations

import ipaddress

import pytest

from ledgerline.domain.errors import RateLimitedError
from ledgerline.platform.ratelimit import (
    RateLimiter,
    RateLimitRules,
    address_key,
    email_key,
    parse_limits,
)

SAME_EMAIL: dict[str, tuple[str, str]] = {
    "case": ("ada@example.com", "ADA@Example.COM"),
    "surrounding-spaces": ("ada@example.com", "  ada@example.com "),
    "idna-domain": ("ada@exämple.com", "ada@xn--exmple-cua.com"),
    "composed-and-decomposed-accent": ("\u00e9va@example.com", "e\u0301va@example.com"),
    "malformed-by-case": ("not an email", "NOT AN EMAIL"),
}


@pytest.mark.parametrize(("one", "other"), list(SAME_EMAIL.values()), ids=list(SAME_EMAIL))
def test_spellings_of_one_email_share_a_key(one: str, other: str) -> None:
    assert email_key(one) == email_key(other)


def test_the_email_key_is_a_hash_that_holds_no_address() -> None:
    key = email_key("ada@example.com")

    assert len(key) == 32
    assert set(key) <= set("0123456789abcdef")
    assert "ada" not in key
    assert key != email_key("bob@example.com")


def test_the_email_key_depends_on_the_pepper() -> None:
    """Without the pepper, a guessed address cannot be checked against the
    keys in Redis: the same email under another pepper is another key, and
    under none it is not its plain SHA-256 either."""
    import hashlib

    keyed = email_key("ada@example.com", b"pepper one")
    assert keyed == email_key("ADA@example.com", b"pepper one")
    assert keyed != email_key("ada@example.com", b"pepper two")
    assert keyed != hashlib.sha256(b"ada@example.com").hexdigest()[:32]


ADDRESSES: dict[str, tuple[str, str, bool]] = {
    # id: (one, other, same key)
    "ipv4-same": ("192.0.2.7", "192.0.2.7", True),
    "ipv4-neighbours-apart": ("192.0.2.7", "192.0.2.8", False),
    "ipv6-same-64": ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),
    "ipv6-other-64": ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
}


@pytest.mark.parametrize(("one", "other", "same"), list(ADDRESSES.values()), ids=list(ADDRESSES))
def test_an_ipv6_client_is_counted_per_64(one: str, other: str, same: bool) -> None:
    keys = address_key(ipaddress.ip_address(one)), address_key(ipaddress.ip_address(other))

    assert (keys[0] == keys[1]) is same


LIMITS: dict[str, tuple[str, list[tuple[int, int]]]] = {
    # id: (text, [(amount, window seconds)])
    "per-minute": ("10/minute", [(10, 60)]),
    "several": ("10/minute;60/hour", [(10, 60), (60, 3600)]),
    "in-words-with-multiples": ("3 per 10 minutes", [(3, 600)]),
    "per-day": ("100/day", [(100, 86_400)]),
}


@pytest.mark.parametrize(("text", "windows"), list(LIMITS.values()), ids=list(LIMITS))
def test_limits_are_read(text: str, windows: list[tuple[int, int]]) -> None:
    assert [(i.amount, i.get_expiry()) for i in parse_limits(text)] == windows


def limiter(*, per_email: str = "100/minute", per_address: str = "100/minute") -> RateLimiter:
    rules = RateLimitRules.parse(
        login_per_email=per_email, login_per_address=per_address, register_per_address="1/hour"
    )
    return RateLimiter.in_memory(rules, timeout=1.0)


A, B, C = (ipaddress.ip_address(f"198.51.100.{i}") for i in (1, 2, 3))


async def test_a_refusal_says_when_to_try_again() -> None:
    limits = limiter(per_email="2/minute")
    await limits.check_login("ada@example.com", A)
    await limits.check_login("ada@example.com", B)

    with pytest.raises(RateLimitedError) as caught:
        await limits.check_login("ada@example.com", C)

    assert caught.value.code == "rate_limited"
    assert 1 <= caught.value.retry_after_seconds <= 60


async def test_the_limit_that_refuses_gives_its_own_wait() -> None:
    limits = limiter(per_email="5/minute;2/hour")
    for address in (A, B):
        await limits.check_login("ada@example.com", address)

    with pytest.raises(RateLimitedError) as caught:
        await limits.check_login("ada@example.com", C)

    assert 60 < caught.value.retry_after_seconds <= 3600


async def test_an_address_over_its_limit_does_not_use_up_the_email() -> None:
    limits = limiter(per_email="2/minute", per_address="1/minute")
    await limits.check_login("ada@example.com", A)
    with pytest.raises(RateLimitedError):
        await limits.check_login("ada@example.com", A)  # refused by the address

    await limits.check_login("ada@example.com", B)  # the email's second
    with pytest.raises(RateLimitedError):
        await limits.check_login("ada@example.com", C)  # the email's third


async def test_an_unknown_address_is_limited_by_email_only() -> None:
    limits = limiter(per_email="3/minute", per_address="1/minute")
    for _ in range(3):
        await limits.check_login("ada@example.com", None)

    with pytest.raises(RateLimitedError):
        await limits.check_login("ada@example.com", None)
    await limits.check_registration(None)
    await limits.check_registration(None)  # no address, no count


async def test_a_disabled_limiter_refuses_nothing() -> None:
    limits = RateLimiter.disabled()
    for _ in range(5):
        await limits.check_login("ada@example.com", A)
        await limits.check_registration(A)


def test_a_refusal_waits_at_least_a_second() -> None:
    assert RateLimitedError(retry_after_seconds=0).retry_after_seconds == 1
    assert RateLimitedError().retry_after_seconds == 1
