"""The request id every answer carries, over either transport: a valid one
the client sent is echoed, else the service makes one."""

from __future__ import annotations

import random
import re

# What a client's id may be (API.md: echoed when valid).
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
VALID_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)


def new_request_id() -> str:
    """Unique, not secret: 128 random bits without a system call per request
    (each process's generator is seeded from the OS when it starts)."""
    return f"{random.getrandbits(128):032x}"
