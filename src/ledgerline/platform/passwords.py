"""Argon2id password hashing, run in a bounded thread pool: argon2-cffi
releases the GIL, so hashes run in parallel and the event loop never blocks."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """Defaults follow OWASP's Password Storage Cheat Sheet for Argon2id:
    19 MiB of memory, 2 iterations, 1 degree of parallelism."""

    time_cost: int = 2
    memory_kib: int = 19 * 1024
    parallelism: int = 1


class Argon2Hasher:
    def __init__(self, params: Argon2Params, executor: ThreadPoolExecutor) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            type=argon2.Type.ID,
        )
        self._executor = executor
        # A real hash to verify against when the user does not exist.
        self._decoy = self._hasher.hash("decoy password for unknown users")

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._verify, password_hash, password)

    async def waste_time(self, password: str) -> None:
        await self.verify(self._decoy, password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
