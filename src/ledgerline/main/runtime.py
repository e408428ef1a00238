"""What a process resolves once per machine before anything is built: where
the database is (starting the embedded PostgreSQL when none is configured)
and which secret signs access tokens."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ledgerline.config import ConfigError, Settings
from ledgerline.platform.database import EmbeddedPostgres, migrate
from ledgerline.platform.logging import get_logger
from ledgerline.platform.tracing import TracingConfigError, check_tracing_environment

JWT_SECRET_FILE = "jwt_secret"  # noqa: S105 - a file name, not a secret


@dataclass
class Runtime:
    """What `serve` and the CLI resolve once per machine before any worker
    starts: where the database is and which secret signs tokens."""

    database_url: str
    jwt_secret: str
    embedded: EmbeddedPostgres | None = None

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None


def prepare_runtime(settings: Settings, *, run_migrations: bool, signs_tokens: bool) -> Runtime:
    """Starts the embedded PostgreSQL when no database is configured (and
    then always migrates it), and loads or makes the JWT secret (see
    load_jwt_secret for ``signs_tokens``)."""
    log = get_logger("ledgerline.runtime")
    embedded = None
    if settings.database_url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        database_url = embedded.start()
        run_migrations = True
    else:
        database_url = settings.database_url
    try:
        if run_migrations:
            migrate(database_url)
        secret = load_jwt_secret(settings, signs_tokens=signs_tokens)
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
    if embedded is not None:
        log.info("using the embedded PostgreSQL", data_dir=str(settings.data_dir))
    return Runtime(database_url, secret, embedded)


MIN_SECRET_LENGTH = 32


def load_jwt_secret(settings: Settings, *, signs_tokens: bool) -> str:
    """LEDGERLINE_JWT_SECRET, else, on the embedded database, the one kept
    in the data directory (made there on first use).

    A configured database may be shared by processes on many machines, each
    with a data directory of its own: a secret made in one would sign
    tokens that the others refuse. So there a process that signs or checks
    tokens (``signs_tokens``: `serve`) refuses to start without the
    variable, and one that does neither (the worker, the CLI's commands)
    gets a throwaway secret that is never written anywhere."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if settings.database_url is not None:
        if signs_tokens:
            raise ConfigError(
                "LEDGERLINE_JWT_SECRET: must be set when LEDGERLINE_DATABASE_URL is "
                "(every process serving that database must sign tokens with the same secret)"
            )
        return secrets.token_urlsafe(48)
    path: Path = settings.data_dir / JWT_SECRET_FILE
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Written whole to a file of its own, then linked into place: the
        # link fails if another process got there first, and a reader never
        # sees a half-written secret. Both then use the one that is there.
        draft = path.with_name(f".{JWT_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
                handle.flush()
                os.fsync(handle.fileno())
            os.link(draft, path)
            get_logger("ledgerline.runtime").warning(
                "LEDGERLINE_JWT_SECRET is not set: made a new secret and kept it in the data "
                "directory",
                path=str(path),
            )
        except FileExistsError:
            pass
        finally:
            draft.unlink(missing_ok=True)
    secret = path.read_text().strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{path}: the kept JWT secret is shorter than {MIN_SECRET_LENGTH} characters; "
            "delete the file to make a new one, or set LEDGERLINE_JWT_SECRET"
        )
    return secret


def check_tracing() -> None:
    """The OTEL_* variables, checked before any process builds its tracing:
    a value the service cannot use stops it at start, naming the variable."""
    try:
        check_tracing_environment()
    except TracingConfigError as exc:
        raise ConfigError(str(exc)) from exc
