"""User accounts: registration, login and the rules on who sees whom."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from ledgerline.domain.errors import (
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from ledgerline.domain.events import UserRegistered
from ledgerline.domain.ports import (
    Clock,
    PasswordHasher,
    TokenIssuer,
    UnitOfWorkFactory,
    UserRepository,
)
from ledgerline.domain.user import (
    AccessToken,
    Email,
    Principal,
    User,
    UserId,
    check_password,
    parse_name,
)
from ledgerline.domain.validation import collect_violations, is_storable_text

BAD_CREDENTIALS = "invalid email or password"


@dataclass(frozen=True, slots=True)
class Registration:
    email: str
    password: str
    name: str


@dataclass(frozen=True, slots=True)
class AdminResult:
    user: User
    created: bool


class UserService:
    def __init__(
        self,
        *,
        users: UserRepository,
        uow: UnitOfWorkFactory,
        hasher: PasswordHasher,
        tokens: TokenIssuer,
        clock: Clock,
    ) -> None:
        self._users = users
        self._uow = uow
        self._hasher = hasher
        self._tokens = tokens
        self._clock = clock

    async def register(self, request: Registration) -> User:
        user = await self._new_user(request, is_admin=False)
        async with self._uow() as uow:
            # The unique index decides races; add() raises ConflictError.
            await uow.users.add(user)
            await uow.outbox.add(UserRegistered.of(user))
            await uow.commit()
        return user

    async def authenticate(self, email: str, password: str) -> AccessToken:
        try:
            parsed: Email | None = Email.parse(email)
        except InvalidArgumentError:
            parsed = None  # a malformed email is just one more unknown user
        if not is_storable_text(password):
            password = ""  # cannot match any stored hash; still costs one hash below
            parsed = None
        user = await self._users.get_by_email(parsed) if parsed else None
        if user is None:
            await self._hasher.waste_time(password)
            raise UnauthenticatedError(BAD_CREDENTIALS)
        if not await self._hasher.verify(user.password_hash, password):
            raise UnauthenticatedError(BAD_CREDENTIALS)
        return self._tokens.issue(Principal(user.id, user.is_admin))

    def principal_from_token(self, token: str) -> Principal:
        return self._tokens.verify(token)

    def principal_from_bearer(self, authorization: str) -> Principal:
        """The caller named by an ``authorization`` value ("Bearer <token>",
        the scheme in any case), as the HTTP header and the gRPC metadata
        both carry it. Every transport authenticates through this."""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticatedError("missing bearer access token")
        return self.principal_from_token(token)

    async def get_me(self, caller: Principal) -> User:
        user = await self._users.get_by_id(caller.user_id)
        if user is None:
            # A valid token for a user who is gone: the token no longer names anyone.
            raise UnauthenticatedError("the access token's user does not exist")
        return user

    async def get_by_id(self, caller: Principal, user_id: UserId) -> User:
        # Another user's id answers 404 whether it exists or not: no enumeration.
        if user_id != caller.user_id and not caller.is_admin:
            raise NotFoundError("user not found")
        user = await self._users.get_by_id(user_id)
        if user is None:
            raise NotFoundError("user not found")
        return user

    async def get_by_email(self, caller: Principal, email: str) -> User:
        if not caller.is_admin:
            raise PermissionDeniedError("only admins may look users up by email")
        user = await self._users.get_by_email(Email.parse(email))
        if user is None:
            raise NotFoundError("user not found")
        return user

    async def create_admin(self, request: Registration) -> AdminResult:
        """Makes an admin, or promotes the user who has that email already.
        A promoted user keeps their password."""
        user = await self._new_user(request, is_admin=True)
        try:
            return await self._make_or_promote(user)
        except ConflictError:
            # Someone registered this email between the read and the insert:
            # the second attempt finds them and promotes them.
            return await self._make_or_promote(user)

    async def _make_or_promote(self, user: User) -> AdminResult:
        async with self._uow() as uow:
            existing = await uow.users.get_by_email(user.email)
            if existing is None:
                await uow.users.add(user)
                await uow.outbox.add(UserRegistered.of(user))
                result = AdminResult(user, created=True)
            else:
                now = self._clock.now()
                await uow.users.set_admin(existing.id, True, now)
                promoted = replace(existing, is_admin=True, updated_at=now)
                result = AdminResult(promoted, created=False)
            await uow.commit()
        return result

    async def _new_user(self, request: Registration, *, is_admin: bool) -> User:
        email, name, password = collect_violations(
            lambda: Email.parse(request.email),
            lambda: parse_name(request.name),
            lambda: check_password(request.password),
        )
        now = self._clock.now()
        return User(
            id=uuid.uuid4(),
            email=email,
            name=name,
            password_hash=await self._hasher.hash(password),
            is_admin=is_admin,
            created_at=now,
            updated_at=now,
        )
