"""The JWT secret: kept in the data directory when none is configured on
the embedded database; required from the environment on a configured one."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from threading import Barrier

import pytest

from ledgerline.config import ConfigError, Settings
from ledgerline.main.runtime import MIN_SECRET_LENGTH, load_jwt_secret

ROUNDS = 10
RACERS = 4


def _race(base: str, barrier: Barrier) -> list[str]:
    secrets = []
    for round_ in range(ROUNDS):
        settings = Settings(data_dir=Path(base) / str(round_))
        barrier.wait()
        secrets.append(load_jwt_secret(settings, signs_tokens=True))
    return secrets


def test_processes_racing_on_a_fresh_directory_share_one_whole_secret(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(RACERS)
        with ProcessPoolExecutor(RACERS, mp_context=context) as pool:
            futures = [pool.submit(_race, str(tmp_path), barrier) for _ in range(RACERS)]
            results = [future.result(timeout=120) for future in futures]
    for round_ in range(ROUNDS):
        seen = {result[round_] for result in results}
        assert len(seen) == 1, f"round {round_}: {len(seen)} different secrets"
        (secret,) = seen
        assert len(secret) >= MIN_SECRET_LENGTH
        assert (tmp_path / str(round_) / "jwt_secret").read_text() == secret
        assert [p.name for p in (tmp_path / str(round_)).iterdir()] == ["jwt_secret"]


def test_the_kept_secret_is_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = load_jwt_secret(settings, signs_tokens=True)
    assert load_jwt_secret(settings, signs_tokens=True) == first


@pytest.mark.parametrize("content", ["", "short", " " * 40], ids=["empty", "short", "blank"])
def test_a_kept_secret_too_short_to_sign_with_is_a_configuration_error(
    tmp_path: Path, content: str
) -> None:
    (tmp_path / "jwt_secret").write_text(content)
    with pytest.raises(ConfigError, match="shorter than"):
        load_jwt_secret(Settings(data_dir=tmp_path), signs_tokens=True)


DATABASE_URL = "postgresql://ledgerline@db.internal:5432/ledgerline"
CONFIGURED_SECRET = "a-configured-secret-that-is-long-enough-0123456789"


def test_a_server_on_a_configured_database_without_a_secret_refuses_to_start(
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=DATABASE_URL, data_dir=tmp_path / "data")
    with pytest.raises(ConfigError) as refused:
        load_jwt_secret(settings, signs_tokens=True)
    assert str(refused.value).startswith("LEDGERLINE_JWT_SECRET: must be set")
    assert "LEDGERLINE_DATABASE_URL" in str(refused.value)
    assert not (tmp_path / "data").exists(), "no secret may be made for a shared database"


def test_a_process_that_signs_no_token_gets_a_throwaway_secret_kept_nowhere(
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=DATABASE_URL, data_dir=tmp_path / "data")
    first = load_jwt_secret(settings, signs_tokens=False)
    second = load_jwt_secret(settings, signs_tokens=False)
    assert len(first) >= MIN_SECRET_LENGTH
    assert first != second
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("signs_tokens", [True, False], ids=["server", "worker-or-cli"])
def test_a_configured_secret_is_used_on_a_configured_database(
    tmp_path: Path, signs_tokens: bool
) -> None:
    settings = Settings(
        database_url=DATABASE_URL, jwt_secret=CONFIGURED_SECRET, data_dir=tmp_path / "data"
    )
    assert load_jwt_secret(settings, signs_tokens=signs_tokens) == CONFIGURED_SECRET
    assert not (tmp_path / "data").exists()
