"""JWT access tokens: what verifies, and every way a token is refused."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from ledgerline.domain.errors import UnauthenticatedError
from ledgerline.domain.user import Principal
from ledgerline.platform.tokens import ALGORITHM, ISSUER, JWTIssuer
from tests.fakes import FakeClock

SECRET = "unit-test-secret-long-enough-for-every-hmac-algorithm-0123456789"
OTHER_SECRET = "another-secret-that-is-also-long-enough-for-hs256"
TTL_SECONDS = 900
USER_ID = uuid.UUID("8d3b6a1e-4a4e-4f0c-9a57-2f0d7c3c1b11")


def _now() -> datetime:
    # PyJWT checks "iat" and "exp" against the wall clock, not the issuer's.
    return datetime.now(UTC).replace(microsecond=0)


def _issuer(
    clock: FakeClock | None = None, secret: str = SECRET, ttl: int = TTL_SECONDS
) -> JWTIssuer:
    return JWTIssuer(secret, ttl, clock or FakeClock(_now()))


def _claims(**changes: object) -> dict[str, object]:
    now = _now()
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": str(USER_ID),
        "adm": False,
        "iat": now,
        "exp": now + timedelta(seconds=TTL_SECONDS),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(secret: str = SECRET, algorithm: str = ALGORITHM, **changes: object) -> str:
    return jwt.encode(_claims(**changes), secret, algorithm=algorithm)


ROUNDTRIPS: dict[str, Principal] = {
    "user": Principal(USER_ID, is_admin=False),
    "admin-flag-kept": Principal(USER_ID, is_admin=True),
}


@pytest.mark.parametrize("principal", list(ROUNDTRIPS.values()), ids=list(ROUNDTRIPS))
def test_issue_then_verify_gives_back_the_principal(principal: Principal) -> None:
    issuer = _issuer()

    token = issuer.issue(principal)

    assert token.expires_in == TTL_SECONDS
    assert issuer.verify(token.token) == principal


def test_issued_token_carries_issuer_subject_and_expiry() -> None:
    clock = FakeClock(_now())
    token = _issuer(clock).issue(Principal(USER_ID, is_admin=True))

    claims = jwt.decode(token.token, SECRET, algorithms=[ALGORITHM], issuer=ISSUER)

    assert jwt.get_unverified_header(token.token)["alg"] == ALGORITHM
    assert claims["sub"] == str(USER_ID)
    assert claims["adm"] is True
    assert claims["exp"] - claims["iat"] == TTL_SECONDS
    assert claims["iat"] == int(clock.now().timestamp())


CRAFTED_PRINCIPALS: dict[str, tuple[object, bool]] = {
    # id: (value of the "adm" claim, is_admin it yields)
    "adm-true": (True, True),
    "adm-false": (False, False),
    "adm-missing-is-not-admin": (None, False),
    "adm-string-true-is-not-admin": ("true", False),
    "adm-one-is-not-admin": (1, False),
}


@pytest.mark.parametrize(
    ("adm", "is_admin"), list(CRAFTED_PRINCIPALS.values()), ids=list(CRAFTED_PRINCIPALS)
)
def test_only_a_boolean_true_adm_claim_makes_an_admin(adm: object, is_admin: bool) -> None:
    assert _issuer().verify(_signed(adm=adm)) == Principal(USER_ID, is_admin)


def _expired() -> str:
    two_hours_ago = FakeClock(_now() - timedelta(hours=2))
    return _issuer(two_hours_ago, ttl=60).issue(Principal(USER_ID, is_admin=False)).token


def _other_secret() -> str:
    return _issuer(secret=OTHER_SECRET).issue(Principal(USER_ID, is_admin=True)).token


def _alg_none() -> str:
    return jwt.encode(_claims(adm=True), "", algorithm="none")


def _tampered_payload() -> str:
    header, _, signature = _signed(adm=False).split(".")
    _, forged_payload, _ = _signed(adm=True).split(".")
    return f"{header}.{forged_payload}.{signature}"


def _issued_in_the_future() -> str:
    in_an_hour = FakeClock(_now() + timedelta(hours=1))
    return _issuer(in_an_hour).issue(Principal(USER_ID, is_admin=False)).token


REJECTED: dict[str, Callable[[], str]] = {
    "expired": _expired,
    "signed-with-another-secret": _other_secret,
    "alg-none": _alg_none,
    "other-algorithm-same-secret-hs512": lambda: _signed(algorithm="HS512"),
    "tampered-payload": _tampered_payload,
    "garbage": lambda: "garbage",
    "empty-string": lambda: "",
    "three-garbage-segments": lambda: "a.b.c",
    "wrong-issuer": lambda: _signed(iss="someone-else"),
    "missing-issuer": lambda: _signed(iss=None),
    "missing-expiry": lambda: _signed(exp=None),
    "missing-issued-at": lambda: _signed(iat=None),
    "missing-subject": lambda: _signed(sub=None),
    "subject-not-a-uuid": lambda: _signed(sub="alice"),
    "issued-in-the-future": _issued_in_the_future,
    "expiry-infinity": lambda: _signed(exp=float("inf")),
    "expiry-a-float": lambda: _signed(exp=_now().timestamp() + 60.5),
    "expiry-a-boolean": lambda: _signed(exp=True),
    "expiry-a-string": lambda: _signed(exp=str(int(_now().timestamp()) + 60)),
    "issued-at-a-float": lambda: _signed(iat=_now().timestamp() - 0.5),
}


@pytest.mark.parametrize("make_token", list(REJECTED.values()), ids=list(REJECTED))
def test_verify_rejects(make_token: Callable[[], str]) -> None:
    token = make_token()

    with pytest.raises(UnauthenticatedError) as caught:
        _issuer().verify(token)

    assert caught.value.code == "unauthenticated"
