"""The `ledgerline` command: serve, worker, migrate, users create-admin,
import users, events tail and events retry-dead."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from ledgerline.config import ConfigError, Settings, load_settings
from ledgerline.domain.errors import DomainError
from ledgerline.main.core import Core
from ledgerline.main.events import tail_events
from ledgerline.main.importer import DEFAULT_BATCH_ROWS, ImportFailedError, InputError, import_users
from ledgerline.main.runtime import Runtime, prepare_runtime
from ledgerline.platform.database import migrate as run_migrations
from ledgerline.platform.logging import configure_logging
from ledgerline.platform.metrics_files import inherited as inherited_metrics_dir
from ledgerline.usecase.user_import import ImportTally
from ledgerline.usecase.users import Registration

_T = TypeVar("_T")

cli = typer.Typer(
    name="ledgerline",
    help="User accounts, wallets and exactly-once payments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
users_cli = typer.Typer(help="Manage users.", no_args_is_help=True)
cli.add_typer(users_cli, name="users")
events_cli = typer.Typer(help="Look at the events the service records.", no_args_is_help=True)
cli.add_typer(events_cli, name="events")
import_cli = typer.Typer(help="Bulk-load data.", no_args_is_help=True)
cli.add_typer(import_cli, name="import")


@contextlib.contextmanager
def _config_errors() -> Iterator[None]:
    """A bad configuration ends the command with one line and status 2."""
    try:
        yield
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _settings(**overrides: object) -> Settings:
    with _config_errors():
        settings = load_settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    return settings


@cli.command("serve")
def serve_command(
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Processes sharing the HTTP port.")
    ] = 1,
    host: Annotated[str | None, typer.Option(help="Overrides LEDGERLINE_HTTP_HOST.")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Overrides LEDGERLINE_HTTP_PORT.")
    ] = None,
) -> None:
    """Serve the REST API (on an embedded PostgreSQL when none is configured)."""
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["http_host"] = host
    if port is not None:
        overrides["http_port"] = port
    settings = _settings(**overrides)
    # The servers' frameworks (FastAPI, uvicorn, grpc) load only for the
    # commands that serve: the others start in half the time without them.
    from ledgerline.main.serve import serve

    with _config_errors():
        code = serve(settings, workers, metrics_parent=inherited_metrics_dir())
    raise typer.Exit(code)


@cli.command("worker")
def worker_command(
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Overrides LEDGERLINE_WORKER_PORT (health, metrics)."),
    ] = None,
) -> None:
    """Run the background work: the outbox relay and the scheduled jobs."""
    overrides: dict[str, object] = {} if port is None else {"worker_port": port}
    settings = _settings(**overrides)
    from ledgerline.main.worker import worker  # see serve_command

    with _config_errors():
        code = worker(settings)
    raise typer.Exit(code)


@cli.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date. Safe to run twice or concurrently."""
    settings = _settings()
    if settings.database_url is None:
        with _config_errors():
            prepare_runtime(settings, run_migrations=True, signs_tokens=False).close()
    else:
        run_migrations(settings.database_url)
    typer.echo("database schema is up to date")


@users_cli.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="The admin's email.")],
    name: Annotated[str, typer.Option(help="The admin's display name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Make an admin, or promote the user who has this email (their password is kept)."""
    if not password_stdin:
        typer.echo("error: pass --password-stdin and give the password on standard input", err=True)
        raise typer.Exit(2)
    password = sys.stdin.readline().rstrip("\r\n")
    request = Registration(email, password, name)
    try:
        result = _on_core(_settings(), lambda core: core.users.create_admin(request))
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    verb = "created admin" if result.created else "promoted existing user to admin"
    typer.echo(f"{verb} {result.user.email.value} ({result.user.id})")


@events_cli.command("tail")
def events_tail(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many of the latest.")] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events as they come.")
    ] = False,
) -> None:
    """Print the latest events of the outbox as CloudEvents JSON, one a line."""

    async def tail(core: Core) -> None:
        await tail_events(core, limit, follow=follow, poll_seconds=1.0, write=typer.echo)

    with contextlib.suppress(KeyboardInterrupt):
        _on_core(_settings(), tail)


@events_cli.command("retry-dead")
def events_retry_dead(
    event_id: Annotated[
        list[uuid.UUID] | None,
        typer.Option("--id", help="Only this dead event (repeatable); default: every one."),
    ] = None,
) -> None:
    """Make dead events pending again (attempts reset), once their cause is fixed."""
    count = _on_core(_settings(), lambda core: core.outbox.requeue_dead(event_id))
    typer.echo(f"requeued {count} dead event{'' if count == 1 else 's'}")


def _on_core(settings: Settings, work: Callable[[Core], Awaitable[_T]]) -> _T:
    """Runs ``work`` on a core of its own (without the payments' lock
    service), on the embedded database when none is configured."""
    with _config_errors():
        runtime = prepare_runtime(settings, run_migrations=False, signs_tokens=False)
    try:
        return asyncio.run(_with_core(settings, runtime, work))
    finally:
        runtime.close()


async def _with_core(
    settings: Settings, runtime: Runtime, work: Callable[[Core], Awaitable[_T]]
) -> _T:
    async with Core(settings, runtime, with_payments=False) as core:
        return await work(core)


@import_cli.command("users")
def import_users_command(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="CSV with a header row, or .jsonl."
        ),
    ],
    batch_size: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Rows per transaction (about).")
    ] = DEFAULT_BATCH_ROWS,
) -> None:
    """Bulk-load users (email, name, and password or password_hash) from FILE.

    Emails that exist already are skipped; rejected rows go to FILE.rejects.csv
    with their line and the reason. Interrupted (Ctrl-C, SIGTERM), the batches
    committed stay, and running it again skips them."""
    settings = _settings()
    try:
        with _config_errors():
            result = import_users(settings, file, batch_rows=batch_size)
    except InputError as exc:
        typer.echo(f"error: {file}: {exc}", err=True)
        raise typer.Exit(1) from exc
    except ImportFailedError as exc:
        done = "nothing was imported"
        if exc.tally.rows:
            _report(exc.tally)
            done = f"the rows up to line {exc.tally.last_line} are done (committed)"
        typer.echo(f"error: the import stopped: {exc} ({done})", err=True)
        raise typer.Exit(1) from exc
    _report(result.tally)
    if result.tally.rejected:
        typer.echo(f"rejected rows are listed in {result.rejects}", err=True)
    if result.interrupted_by is not None:
        done = "no batch was committed"
        if result.tally.rows:
            done = f"the rows up to line {result.tally.last_line} of {file} are done (committed)"
        typer.echo(
            f"interrupted by {result.interrupted_by.name}: {done}; run the import again "
            "to do the rest",
            err=True,
        )
        # SIGTERM is how a supervisor stops a command cleanly: exit 0, as
        # serve and worker do. Ctrl-C (SIGINT) is the shell's 130.
        if result.interrupted_by is not signal.SIGTERM:
            raise typer.Exit(128 + result.interrupted_by.value)


def _report(tally: ImportTally) -> None:
    typer.echo(f"imported {tally.imported}, skipped {tally.skipped}, rejected {tally.rejected}")


def main() -> None:
    cli()
