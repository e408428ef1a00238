"""JWT access tokens: HS256 only (the algorithm is pinned on verify), with
issuer, issue time and expiry."""

from __future__ import annotations

import uuid
from datetime import timedelta

import jwt

from ledgerline.domain.errors import UnauthenticatedError
from ledgerline.domain.ports import Clock
from ledgerline.domain.user import AccessToken, Principal

ALGORITHM = "HS256"
ISSUER = "ledgerline"
CLOCK_SKEW_SECONDS = 60  # tolerated between the issuing and verifying hosts


# Verified tokens kept, so a client's every request does not pay for the
# HMAC and the claim parsing again; the expiry is still checked each time.
VERIFIED_CACHE_SIZE = 10_000


class JWTIssuer:
    def __init__(self, secret: str, ttl_seconds: int, clock: Clock) -> None:
        self._secret = secret
        self._ttl = ttl_seconds
        self._clock = clock
        self._verified: dict[str, tuple[Principal, int, int]] = {}

    def issue(self, principal: Principal) -> AccessToken:
        now = self._clock.now()
        claims = {
            "iss": ISSUER,
            "sub": str(principal.user_id),
            "adm": principal.is_admin,
            "iat": now,
            "exp": now + timedelta(seconds=self._ttl),
        }
        return AccessToken(jwt.encode(claims, self._secret, algorithm=ALGORITHM), self._ttl)

    def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is None:
            cached = self._decode(token)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = cached
        principal, expires, issued = cached
        now = self._clock.now().timestamp()
        if now >= expires or issued > now + CLOCK_SKEW_SECONDS:
            raise UnauthenticatedError("invalid or expired access token")
        return principal

    def _decode(self, token: str) -> tuple[Principal, int, int]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                # Time is checked below against the injected clock.
                options={
                    "require": ["exp", "iat", "sub", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
            expires, issued = claims["exp"], claims["iat"]
            # Whole seconds, as this issuer writes them: not floats, not
            # booleans, not Infinity (which PyJWT would let through).
            if not all(type(t) is int for t in (expires, issued)):
                raise ValueError("exp and iat must be integers")
            principal = Principal(uuid.UUID(claims["sub"]), claims.get("adm") is True)
            return principal, expires, issued
        except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError) as exc:
            raise UnauthenticatedError("invalid or expired access token") from exc
