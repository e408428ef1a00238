"""The `ledgerline` command (and `python -m ledgerline`). Before anything
loads prometheus_client, an inherited PROMETHEUS_MULTIPROC_DIR is set aside
(``platform.metrics_files``): the library reads it once, when imported."""

from __future__ import annotations

from ledgerline.platform.metrics_files import set_aside_inherited


def main() -> None:
    set_aside_inherited()
    from ledgerline.cli import main as cli_main

    cli_main()


if __name__ == "__main__":  # not in a spawned child, which imports this as __mp_main__
    main()
