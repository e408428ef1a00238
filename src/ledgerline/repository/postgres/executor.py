"""What every repository runs its SQL through: ``Database``, over a unit of
work's connection as it is, or over a pool (single reads and writes outside
a unit of work), where each query takes and hands back a connection of its
own under the request deadline. In one place it gives every call what each
repository method used to spell out: the time the request's deadline leaves
(``timeout=``), the translation of the driver's errors into domain errors,
and, when tracing is on, one client span per statement."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from opentelemetry.trace import SpanKind, Tracer

from ledgerline.platform.database import PoolExecutor
from ledgerline.platform.deadline import remaining
from ledgerline.platform.tracing import in_unsampled_trace, span_of
from ledgerline.repository.postgres.errors import translate_errors

Executor = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy
Queries = asyncpg.Connection | PoolConnectionProxy | PoolExecutor

_TARGET = re.compile(r"\b(?:FROM|INTO|UPDATE|COPY)\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_span_names: dict[str, str] = {}


def _span_name(query: str) -> str:
    """``SELECT orders``, ``SELECT settle_order``, ``COPY users``, ``BEGIN``:
    the statement's kind and the table or function it is about (low
    cardinality: the queries are the repositories' constants)."""
    name = _span_names.get(query)
    if name is None:
        words = query.split(None, 1)
        operation = words[0].upper() if words else "SQL"
        target = _TARGET.search(query)
        name = f"{operation} {target.group(1)}" if target else operation
        if len(_span_names) < 1024:
            _span_names[query] = name
    return name


class Database:
    """asyncpg's execute/fetch/fetchrow/fetchval (and, on a connection,
    copy_records_to_table), minus ``timeout=``: each gets what the deadline
    leaves, raises domain errors (errors.py) for what the database refuses,
    and is a span when a tracer is given."""

    __slots__ = ("_db", "tracer")

    def __init__(self, db: Executor, tracer: Tracer | None = None) -> None:
        self._db: Queries = PoolExecutor(db) if isinstance(db, asyncpg.Pool) else db
        self.tracer = tracer

    def on(self, connection: Executor) -> Database:
        """The same, over another connection (a unit of work's)."""
        return Database(connection, self.tracer)

    async def _run(self, method: str, statement: str, *args: object, **options: object) -> Any:
        """The driver's ``method`` with ``args`` and ``options``, sending
        ``statement`` (the SQL, or what stands for it in the span)."""
        run = getattr(self._db, method)
        if self.tracer is None or in_unsampled_trace():
            with translate_errors():
                return await run(*args, timeout=remaining(), **options)
        with (
            span_of(
                self.tracer,
                _span_name(statement),
                kind=SpanKind.CLIENT,
                attributes={"db.system": "postgresql", "db.statement": statement},
            ),
            translate_errors(),
        ):
            return await run(*args, timeout=remaining(), **options)

    async def execute(self, query: str, *args: object) -> str:
        status: str = await self._run("execute", query, query, *args)
        return status

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._run("fetch", query, query, *args)
        return rows

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._run("fetchrow", query, query, *args)
        return row

    async def fetchval(self, query: str, *args: object) -> Any:
        return await self._run("fetchval", query, query, *args)

    async def copy_records_to_table(
        self, table: str, records: Iterable[Sequence[object]], columns: Sequence[str]
    ) -> str:
        """Binary COPY of ``records`` into ``table``, on a connection (a
        pool has no COPY that a unit of work could share)."""
        if isinstance(self._db, PoolExecutor):
            raise TypeError("COPY runs on a connection, not on the pool")
        status: str = await self._run(
            "copy_records_to_table", f"COPY {table}", table, records=records, columns=columns
        )
        return status


def database(db: Executor | Database) -> Database:
    """A repository's Database from what it was given."""
    return db if isinstance(db, Database) else Database(db)
