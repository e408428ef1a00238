"""What the interceptor establishes for the servicers of one call: the
authenticated caller (in a context variable, set around the handler) and
the call's metadata."""

from __future__ import annotations

import contextvars

import grpc

from ledgerline.domain.user import Principal

_caller: contextvars.ContextVar[Principal] = contextvars.ContextVar("ledgerline_grpc_caller")


def caller() -> Principal:
    """The principal the interceptor authenticated for this call."""
    return _caller.get()


def set_caller(principal: Principal) -> contextvars.Token[Principal]:
    return _caller.set(principal)


def reset_caller(token: contextvars.Token[Principal]) -> None:
    _caller.reset(token)


def metadata_value(context: grpc.aio.ServicerContext[object, object], name: str) -> str:
    """The first value of a metadata key (lower case), or ""."""
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode("latin-1")
    return ""


def metadata_values(context: grpc.aio.ServicerContext[object, object], name: str) -> list[str]:
    """Every value of a metadata key (lower case), in order."""
    return [
        value if isinstance(value, str) else value.decode("latin-1")
        for key, value in context.invocation_metadata() or ()
        if key == name
    ]
