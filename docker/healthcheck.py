"""The image's health check: GET /healthz on this container, with nothing but
the standard library (the slim image has no curl). The port is the first
argument, else LEDGERLINE_HTTP_PORT, else 8000; exit 0 when it answers 200."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 2.0


def main(argv: list[str]) -> int:
    port = argv[1] if len(argv) > 1 else os.environ.get("LEDGERLINE_HTTP_PORT", "8000")
    url = f"http://127.0.0.1:{int(port)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
