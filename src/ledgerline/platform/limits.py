"""Process limits a server should not inherit from a login shell."""

from __future__ import annotations

import resource

from ledgerline.platform.logging import get_logger

# Descriptors kept for what is not a client: pools, Redis, logs, pipes.
RESERVED_DESCRIPTORS = 256


def raise_open_file_limit(connections: int) -> None:
    """Raises the soft open-file limit to the hard one (as Go's runtime
    does), and warns when the connection cap does not fit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # an unlimited hard limit some kernels refuse: keep the soft one
    if soft != resource.RLIM_INFINITY and connections + RESERVED_DESCRIPTORS > soft:
        get_logger("ledgerline.limits").warning(
            "LEDGERLINE_HTTP_MAX_CONNECTIONS is above what the open-file limit allows; "
            "connections past the limit fail to be accepted",
            max_connections=connections,
            open_file_limit=soft,
        )
