"""Wire shapes of the REST API. Validation of business rules stays in the
domain; these only say what types arrive and leave."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ledgerline.domain.user import User

# Generous ceilings against abuse; the precise rules live in the domain.
_MAX_TEXT = 1024


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str = Field(max_length=_MAX_TEXT, examples=["ada@example.com"])
    password: str = Field(max_length=_MAX_TEXT, examples=["correct horse battery"])
    name: str = Field(max_length=_MAX_TEXT, examples=["Ada Lovelace"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str = Field(max_length=_MAX_TEXT)
    password: str = Field(max_length=_MAX_TEXT)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105
    expires_in: int


class UserResponse(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> UserResponse:
        return cls(
            id=user.id,
            email=user.email.value,
            name=user.name,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    message: str
    code: str
    details: list[ErrorDetail] | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessResponse(BaseModel):
    status: Literal["ok"] = "ok"
    checks: dict[str, str]
