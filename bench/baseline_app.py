"""The ceiling for `GET /v1/users/me`: a bare FastAPI + asyncpg app that runs
the service's single-row query for one fixed user and returns the same JSON
fields. No authentication, no middleware, no logging.

    BENCH_DATABASE_URL=postgresql://... BENCH_USER_ID=<uuid> \\
        .venv/bin/python -m bench.baseline_app --port 8001 --workers 2

It is served the way the service is: uvicorn with httptools and uvloop, N
worker processes sharing the port, a pool of at most 10 connections each.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

QUERY = (
    "SELECT id, email, name, password_hash, is_admin, created_at, updated_at "
    "FROM users WHERE id = $1"
)


class UserResponse(BaseModel):
    """The same wire shape as the service's UserResponse."""

    id: uuid.UUID
    email: str
    name: str
    created_at: datetime
    updated_at: datetime


class _State:
    pool: asyncpg.Pool | None = None
    user_id: uuid.UUID | None = None


state = _State()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    state.user_id = uuid.UUID(os.environ["BENCH_USER_ID"])
    state.pool = await asyncpg.create_pool(
        os.environ["BENCH_DATABASE_URL"],
        min_size=2,
        max_size=10,
        command_timeout=10.0,
        server_settings={"application_name": "ledgerline-bench-baseline", "timezone": "UTC"},
    )
    try:
        yield
    finally:
        await state.pool.close()
        state.pool = None


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/v1/users/me")
async def me() -> UserResponse:
    assert state.pool is not None
    row = await state.pool.fetchrow(QUERY, state.user_id)
    if row is None:
        raise HTTPException(status_code=404, detail="user not found")
    return UserResponse(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    uvicorn.run(
        "bench.baseline_app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        http="httptools",
        loop="uvloop",
        access_log=False,
        log_level="warning",
        server_header=False,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
