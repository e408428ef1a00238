"""Which Accept-Encoding headers get the documentation's assets gzipped."""

from __future__ import annotations

import pytest

from ledgerline.delivery.http.docs import accepts_gzip


@pytest.mark.parametrize(
    ("header", "gzipped"),
    [
        pytest.param("", False, id="none"),
        pytest.param("gzip", True, id="gzip"),
        pytest.param("gzip, deflate, br, zstd", True, id="a-browser"),
        pytest.param("GZip;Q=1", True, id="any-case"),
        pytest.param("x-gzip", True, id="x-gzip"),
        pytest.param("*", True, id="anything"),
        pytest.param("gzip;q=0.5", True, id="weighted"),
        pytest.param("gzip;q=0.001", True, id="barely"),
        pytest.param("br;q=1, gzip;q=0", False, id="refused"),
        pytest.param("gzip;q=0.000", False, id="refused-with-decimals"),
        pytest.param("*;q=0", False, id="anything-refused"),
        pytest.param("identity", False, id="identity"),
        pytest.param("gzip;q=high", False, id="weight-not-a-number"),
    ],
)
def test_accepts_gzip(header: str, gzipped: bool) -> None:
    assert accepts_gzip(header) is gzipped
