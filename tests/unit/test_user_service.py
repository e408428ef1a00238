"""UserService with in-memory fakes: registration, login and who sees whom."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from ledgerline.domain.errors import (
    ConflictError,
    DomainError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from ledgerline.domain.events import UserRegistered
from ledgerline.domain.user import Principal, User
from ledgerline.platform.tokens import JWTIssuer
from ledgerline.usecase.users import BAD_CREDENTIALS, Registration, UserService
from tests.fakes import FakeClock, FakeHasher, InMemoryUnitOfWorkFactory, InMemoryUsers

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"
TTL_SECONDS = 900
PASSWORD = "correct horse"


@dataclass
class World:
    store: InMemoryUsers
    uow: InMemoryUnitOfWorkFactory
    hasher: FakeHasher
    clock: FakeClock
    tokens: JWTIssuer
    service: UserService


@pytest.fixture
def world() -> World:
    # PyJWT checks "iat" and "exp" against the wall clock, so the fake clock
    # starts a little in the past: tokens issued here verify even after a
    # test advances it by a minute or two.
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
    store = InMemoryUsers()
    uow = InMemoryUnitOfWorkFactory(store)
    hasher = FakeHasher()
    tokens = JWTIssuer(SECRET, TTL_SECONDS, clock)
    service = UserService(users=store, uow=uow, hasher=hasher, tokens=tokens, clock=clock)
    return World(store, uow, hasher, clock, tokens, service)


async def _register(world: World, email: str, name: str = "Someone") -> User:
    return await world.service.register(Registration(email=email, password=PASSWORD, name=name))


async def _admin(world: World, email: str = "root@example.com") -> User:
    result = await world.service.create_admin(
        Registration(email=email, password=PASSWORD, name="Root")
    )
    return result.user


def _principal(user: User) -> Principal:
    return Principal(user.id, user.is_admin)


# --- register -----------------------------------------------------------------


async def test_register_stores_a_hash_not_the_password_and_commits(world: World) -> None:
    user = await world.service.register(
        Registration(email="  Ada@Example.com ", password=PASSWORD, name="  Ada  ")
    )

    assert world.store.rows == {user.id: user}
    assert user.password_hash != PASSWORD
    assert PASSWORD not in user.password_hash
    assert user.password_hash == await world.hasher.hash(PASSWORD)
    assert user.email.value == "Ada@Example.com"
    assert user.name == "Ada"
    assert user.is_admin is False
    assert user.created_at == user.updated_at == world.clock.now()
    assert [u.committed for u in world.uow.opened] == [True]


INVALID_REGISTRATIONS: dict[str, tuple[Registration, list[str]]] = {
    # id: (request, fields reported)
    "bad-email": (Registration("no-at-sign", PASSWORD, "Ada"), ["email"]),
    "empty-name": (Registration("ada@example.com", PASSWORD, "   "), ["name"]),
    "short-password": (Registration("ada@example.com", "p" * 7, "Ada"), ["password"]),
    "long-password": (Registration("ada@example.com", "p" * 129, "Ada"), ["password"]),
    "email-and-password": (Registration("", "short", "Ada"), ["email", "password"]),
    "everything": (Registration("a@", "", "n" * 101), ["email", "name", "password"]),
}


@pytest.mark.parametrize(
    ("request_", "fields"), list(INVALID_REGISTRATIONS.values()), ids=list(INVALID_REGISTRATIONS)
)
async def test_register_invalid_input_changes_nothing(
    world: World, request_: Registration, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await world.service.register(request_)

    assert [d.field for d in caught.value.details] == fields
    assert world.store.rows == {}
    assert not any(u.committed for u in world.uow.opened)


DUPLICATE_EMAILS: dict[str, str] = {
    "same-spelling": "ada@example.com",
    "upper-case": "ADA@EXAMPLE.COM",
    "mixed-case": "Ada@Example.Com",
    "surrounding-whitespace": "  ada@example.com\t",
    "case-and-whitespace": " ADA@example.COM ",
}


@pytest.mark.parametrize("email", list(DUPLICATE_EMAILS.values()), ids=list(DUPLICATE_EMAILS))
async def test_register_duplicate_email_conflicts_and_keeps_the_first(
    world: World, email: str
) -> None:
    first = await _register(world, "ada@example.com", name="First")

    with pytest.raises(ConflictError):
        await _register(world, email, name="Second")

    assert world.store.rows == {first.id: first}


# --- authenticate -------------------------------------------------------------


SUCCESSFUL_LOGINS: dict[str, tuple[str, bool]] = {
    # id: (login email, as admin)
    "user-same-spelling": ("ada@example.com", False),
    "user-differing-case-and-whitespace": ("  ADA@Example.com ", False),
    "admin-keeps-admin-flag": ("ada@example.com", True),
}


@pytest.mark.parametrize(
    ("login_email", "admin"), list(SUCCESSFUL_LOGINS.values()), ids=list(SUCCESSFUL_LOGINS)
)
async def test_authenticate_returns_a_token_naming_the_user(
    world: World, login_email: str, admin: bool
) -> None:
    registration = Registration("ada@example.com", PASSWORD, "Ada")
    if admin:
        user = (await world.service.create_admin(registration)).user
    else:
        user = await world.service.register(registration)

    token = await world.service.authenticate(login_email, PASSWORD)

    assert token.expires_in == TTL_SECONDS
    assert world.tokens.verify(token.token) == Principal(user.id, admin)
    assert world.service.principal_from_token(token.token) == Principal(user.id, admin)


FAILED_LOGINS: dict[str, tuple[str, str]] = {
    # id: (email, password); ada@example.com exists with PASSWORD
    "wrong-password": ("ada@example.com", "not the password"),
    "wrong-password-case": ("ada@example.com", PASSWORD.upper()),
    "empty-password": ("ada@example.com", ""),
    "unknown-email": ("nobody@example.com", PASSWORD),
    "malformed-email": ("no-at-sign", PASSWORD),
    "empty-email": ("", PASSWORD),
}


@pytest.mark.parametrize(
    ("email", "password"), list(FAILED_LOGINS.values()), ids=list(FAILED_LOGINS)
)
async def test_authenticate_failure_is_uniform_and_spends_one_verification(
    world: World, email: str, password: str
) -> None:
    await _register(world, "ada@example.com")
    before = world.hasher.verifications

    with pytest.raises(UnauthenticatedError) as caught:
        await world.service.authenticate(email, password)

    assert caught.value.message == BAD_CREDENTIALS
    assert str(caught.value) == BAD_CREDENTIALS
    assert world.hasher.verifications - before == 1


async def test_wrong_password_and_unknown_email_are_indistinguishable(world: World) -> None:
    await _register(world, "ada@example.com")

    with pytest.raises(UnauthenticatedError) as wrong_password:
        await world.service.authenticate("ada@example.com", "not the password")
    with pytest.raises(UnauthenticatedError) as unknown_email:
        await world.service.authenticate("nobody@example.com", PASSWORD)

    assert type(wrong_password.value) is type(unknown_email.value)
    assert wrong_password.value.code == unknown_email.value.code
    assert wrong_password.value.message == unknown_email.value.message


# --- get_by_id, get_me --------------------------------------------------------

MISSING = "missing"

GET_BY_ID: dict[str, tuple[str, str, str | None]] = {
    # id: (caller, target, who is returned; None means NotFoundError)
    "user-sees-self": ("alice", "alice", "alice"),
    "user-cannot-see-other-existing": ("alice", "bob", None),
    "user-cannot-see-missing": ("alice", MISSING, None),
    "admin-sees-other": ("admin", "bob", "bob"),
    "admin-sees-self": ("admin", "admin", "admin"),
    "admin-missing-is-not-found": ("admin", MISSING, None),
}


@pytest.mark.parametrize(
    ("caller", "target", "expected"), list(GET_BY_ID.values()), ids=list(GET_BY_ID)
)
async def test_get_by_id(world: World, caller: str, target: str, expected: str | None) -> None:
    people = {
        "alice": await _register(world, "alice@example.com"),
        "bob": await _register(world, "bob@example.com"),
        "admin": await _admin(world),
    }
    target_id = people[target].id if target != MISSING else uuid.uuid4()

    if expected is None:
        with pytest.raises(NotFoundError):
            await world.service.get_by_id(_principal(people[caller]), target_id)
    else:
        found = await world.service.get_by_id(_principal(people[caller]), target_id)
        assert found == people[expected]


async def test_get_by_id_hides_whether_another_user_exists(world: World) -> None:
    alice = await _register(world, "alice@example.com")
    bob = await _register(world, "bob@example.com")

    with pytest.raises(NotFoundError) as existing:
        await world.service.get_by_id(_principal(alice), bob.id)
    with pytest.raises(NotFoundError) as missing:
        await world.service.get_by_id(_principal(alice), uuid.uuid4())

    assert existing.value.message == missing.value.message


async def test_get_me_returns_the_callers_user(world: World) -> None:
    alice = await _register(world, "alice@example.com")
    token = await world.service.authenticate("alice@example.com", PASSWORD)

    me = await world.service.get_me(world.service.principal_from_token(token.token))

    assert me == alice


async def test_get_me_for_a_token_of_a_user_not_in_the_store_is_unauthenticated(
    world: World,
) -> None:
    await _register(world, "alice@example.com")
    ghost = world.tokens.issue(Principal(uuid.uuid4(), is_admin=False))

    principal = world.service.principal_from_token(ghost.token)
    with pytest.raises(UnauthenticatedError):
        await world.service.get_me(principal)


async def test_principal_from_a_garbage_token_is_unauthenticated(world: World) -> None:
    with pytest.raises(UnauthenticatedError):
        world.service.principal_from_token("not-a-token")


BEARER_VALUES = {
    "canonical": "Bearer {token}",
    "scheme-lower-case": "bearer {token}",
    "scheme-upper-case": "BEARER {token}",
    "spaces-around-the-token": "Bearer   {token}  ",
}
NOT_BEARER_VALUES = {
    "empty": "",
    "scheme-only": "Bearer",
    "scheme-and-space": "Bearer ",
    "token-without-scheme": "{token}",
    "basic-scheme": "Basic {token}",
    "garbage-token": "Bearer not-a-token",
}


@pytest.mark.parametrize("value", BEARER_VALUES.values(), ids=list(BEARER_VALUES))
async def test_principal_from_a_bearer_value(world: World, value: str) -> None:
    """The one way every transport authenticates: the HTTP header's value or
    the gRPC metadata's."""
    user = await _register(world, "alice@example.com")
    token = world.tokens.issue(Principal(user.id, is_admin=False)).token

    assert world.service.principal_from_bearer(value.format(token=token)) == Principal(
        user.id, is_admin=False
    )


@pytest.mark.parametrize("value", NOT_BEARER_VALUES.values(), ids=list(NOT_BEARER_VALUES))
async def test_a_value_that_is_not_a_bearer_token_is_unauthenticated(
    world: World, value: str
) -> None:
    user = await _register(world, "alice@example.com")
    token = world.tokens.issue(Principal(user.id, is_admin=False)).token

    with pytest.raises(UnauthenticatedError):
        world.service.principal_from_bearer(value.format(token=token))


# --- get_by_email -------------------------------------------------------------

GET_BY_EMAIL: dict[str, tuple[str, str, type[DomainError] | None]] = {
    # id: (caller, email looked up, error; None means bob is returned)
    "user-existing-is-denied": ("alice", "bob@example.com", PermissionDeniedError),
    "user-unknown-is-denied": ("alice", "nobody@example.com", PermissionDeniedError),
    "user-own-email-is-denied": ("alice", "alice@example.com", PermissionDeniedError),
    "admin-finds-user": ("admin", "bob@example.com", None),
    "admin-finds-user-any-case": ("admin", "  BOB@Example.com ", None),
    "admin-unknown-is-not-found": ("admin", "nobody@example.com", NotFoundError),
    "admin-malformed-is-invalid": ("admin", "no-at-sign", InvalidArgumentError),
}


@pytest.mark.parametrize(
    ("caller", "email", "error"), list(GET_BY_EMAIL.values()), ids=list(GET_BY_EMAIL)
)
async def test_get_by_email(
    world: World, caller: str, email: str, error: type[DomainError] | None
) -> None:
    people = {
        "alice": await _register(world, "alice@example.com"),
        "bob": await _register(world, "bob@example.com"),
        "admin": await _admin(world),
    }

    if error is not None:
        with pytest.raises(error):
            await world.service.get_by_email(_principal(people[caller]), email)
    else:
        found = await world.service.get_by_email(_principal(people[caller]), email)
        assert found == people["bob"]


# --- create_admin -------------------------------------------------------------


async def test_create_admin_creates_a_new_admin(world: World) -> None:
    result = await world.service.create_admin(
        Registration(email=" Root@Example.com ", password=PASSWORD, name=" Root ")
    )

    assert result.created is True
    assert result.user.is_admin is True
    assert result.user.email.value == "Root@Example.com"
    assert result.user.name == "Root"
    assert result.user.password_hash == await world.hasher.hash(PASSWORD)
    assert world.store.rows == {result.user.id: result.user}
    assert [u.committed for u in world.uow.opened] == [True]


PROMOTIONS: dict[str, str] = {
    "same-spelling": "ada@example.com",
    "differing-case-and-whitespace": "  ADA@Example.COM ",
}


@pytest.mark.parametrize("email", list(PROMOTIONS.values()), ids=list(PROMOTIONS))
async def test_create_admin_promotes_an_existing_user_keeping_the_password(
    world: World, email: str
) -> None:
    ada = await _register(world, "ada@example.com", name="Ada")
    world.clock.advance(60)

    result = await world.service.create_admin(
        Registration(email=email, password="another password", name="Someone Else")
    )

    assert result.created is False
    promoted = result.user
    assert promoted.is_admin is True
    assert (promoted.id, promoted.email, promoted.name) == (ada.id, ada.email, ada.name)
    assert promoted.password_hash == ada.password_hash
    assert promoted.created_at == ada.created_at
    assert promoted.updated_at == world.clock.now()
    assert world.store.rows == {ada.id: promoted}
    token = await world.service.authenticate("ada@example.com", PASSWORD)
    assert world.tokens.verify(token.token) == Principal(ada.id, is_admin=True)


async def test_create_admin_with_invalid_input_changes_nothing(world: World) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await world.service.create_admin(Registration("nope", "short", ""))

    assert [d.field for d in caught.value.details] == ["email", "name", "password"]
    assert world.store.rows == {}


# --- events -------------------------------------------------------------------


async def test_registration_records_one_user_registered_event(world: World) -> None:
    user = await _register(world, "ada@example.com", name="Ada")

    [(event, version)] = world.uow.outbox.events
    assert event == UserRegistered(
        id=event.id,
        occurred_at=user.created_at,
        user_id=user.id,
        email="ada@example.com",
        name="Ada",
        is_admin=False,
    )
    assert version == 1
    assert event.subject == f"users/{user.id}"


async def test_a_refused_registration_records_no_event(world: World) -> None:
    await _register(world, "ada@example.com")

    with pytest.raises(ConflictError):
        await _register(world, "ADA@example.com")
    with pytest.raises(InvalidArgumentError):
        await _register(world, "not an email")

    assert len(world.uow.outbox.events) == 1


async def test_create_admin_records_a_registration_but_a_promotion_none(world: World) -> None:
    root = await _admin(world)
    await _register(world, "ada@example.com")
    await _admin(world, "ada@example.com")  # promoted: no new user

    registered = world.uow.outbox.of_type(UserRegistered)
    assert [(e.aggregate_id, e.data()["is_admin"]) for e in registered] == [
        (root.id, True),
        (registered[1].aggregate_id, False),
    ]
    assert registered[1].aggregate_id != root.id
