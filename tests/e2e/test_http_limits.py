"""The listener against hostile clients, over raw sockets to a real `serve`:
oversized heads, silent and trickling connections, too many connections,
malformed requests, and requests on keep-alive connections at shutdown.
Only promised deadlines are asserted, with generous margins."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.conftest import JWT_SECRET, Service

pytestmark = pytest.mark.e2e
StartService = Callable[..., Service]

HEADER_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 1
REQUEST_TIMEOUT = 2.0
MAX_CONNECTIONS = 8
MARGIN = 2.0  # the promise plus this; a loaded 2-core machine is slow


@pytest.fixture
def service(start_service: StartService, database_url: str) -> Service:
    return start_service(
        LEDGERLINE_DATABASE_URL=database_url,
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
        LEDGERLINE_HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        LEDGERLINE_HTTP_KEEPALIVE_TIMEOUT_SECONDS=str(KEEPALIVE_TIMEOUT),
        LEDGERLINE_REQUEST_TIMEOUT_SECONDS=str(REQUEST_TIMEOUT),
    )


@pytest.fixture
def connect(service: Service) -> Iterator[Callable[[], socket.socket]]:
    opened: list[socket.socket] = []

    def open_one() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
        opened.append(sock)
        return sock

    yield open_one
    for sock in opened:
        sock.close()


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def parse(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    assert raw.startswith(b"HTTP/1.1 "), raw[:200]
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test", *headers, "", ""]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(
    ("request_bytes", "why"),
    [
        (get("/healthz", "Authorization: Bearer " + "a" * 1024 * 1024), "one 1 MB header"),
        (get("/healthz", *(f"X-H{i}: {'b' * 200}" for i in range(100))), "20 KB of headers"),
        (get("/healthz", *(f"X-H{i}: v" for i in range(101))), "101 headers"),
        (get("/" + "c" * 20_000), "a 20 KB request line"),
    ],
    ids=["1mb-header", "20kb-headers", "101-headers", "20kb-url"],
)
def test_an_oversized_head_is_answered_431_at_once(
    connect: Callable[[], socket.socket], request_bytes: bytes, why: str
) -> None:
    sock = connect()
    started = time.monotonic()
    # Refused before the client finished sending: the answer is still readable.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(request_bytes)
    raw = read_until_closed(sock)
    elapsed = time.monotonic() - started
    status, headers, body = parse(raw)
    assert (status, body["code"]) == (431, "request_header_fields_too_large"), why
    assert headers["connection"] == "close"
    assert len(raw) < 1024, "a bounded answer"
    assert elapsed < 1.0 + MARGIN, f"{why}: answered after {elapsed:.1f} s"


def test_a_head_within_the_limits_is_served(connect: Callable[[], socket.socket]) -> None:
    sock = connect()
    sock.sendall(get("/healthz", *(f"X-H{i}: {'d' * 100}" for i in range(90))))
    status, _, body = read_response(sock)
    assert (status, body) == (200, b'{"status":"ok"}')


@pytest.mark.parametrize(
    ("opening", "expected_status"),
    [
        (b"", None),
        (b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Half:", 408),
        (b"GE", 408),
    ],
    ids=["silent", "half-sent-head", "half-sent-request-line"],
)
def test_a_head_that_does_not_arrive_in_time_ends_the_connection(
    connect: Callable[[], socket.socket], opening: bytes, expected_status: int | None
) -> None:
    sock = connect()
    started = time.monotonic()
    if opening:
        sock.sendall(opening)
    raw = read_until_closed(sock)
    elapsed = time.monotonic() - started
    assert HEADER_TIMEOUT - 0.2 < elapsed < HEADER_TIMEOUT + MARGIN, f"closed after {elapsed:.1f} s"
    if expected_status is None:
        assert raw == b"", "nothing asked, nothing answered"
    else:
        status, _, body = parse(raw)
        assert (status, body["code"]) == (expected_status, "request_timeout")


def test_a_trickled_head_is_cut_at_the_header_deadline(
    connect: Callable[[], socket.socket],
) -> None:
    sock = connect()
    started = time.monotonic()
    request = get("/healthz", "X-Slow: " + "e" * 100)
    sock.settimeout(0.25)
    raw = b""
    for byte in request:  # one byte every 0.25 s: the head would take 30 s
        try:
            sock.sendall(bytes([byte]))
            raw += sock.recv(65536)
            break  # the server answered (or closed) before the head was done
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    sock.settimeout(10)
    raw += read_until_closed(sock)
    elapsed = time.monotonic() - started
    assert HEADER_TIMEOUT - 0.2 < elapsed < HEADER_TIMEOUT + MARGIN, f"closed after {elapsed:.1f} s"
    status, _, body = parse(raw)
    assert (status, body["code"]) == (408, "request_timeout")


def test_an_idle_keepalive_connection_is_closed(connect: Callable[[], socket.socket]) -> None:
    sock = connect()
    sock.sendall(get("/healthz"))
    assert read_response(sock)[0] == 200
    started = time.monotonic()
    assert read_until_closed(sock) == b""
    assert KEEPALIVE_TIMEOUT - 0.2 < time.monotonic() - started < KEEPALIVE_TIMEOUT + MARGIN


def test_connections_beyond_the_cap_are_refused_and_freed(
    start_service: StartService, database_url: str
) -> None:
    service = start_service(  # timeouts long enough to hold the connections
        LEDGERLINE_DATABASE_URL=database_url,
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
        LEDGERLINE_HTTP_KEEPALIVE_TIMEOUT_SECONDS="60",
        LEDGERLINE_HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", service.port), timeout=10)

    held = [connect() for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:  # each one served, so the server has surely accepted it
            sock.sendall(get("/healthz"))
            assert read_response(sock)[0] == 200
        with connect() as extra:
            started = time.monotonic()
            status, _, body = parse(read_until_closed(extra))
            assert (status, body["code"]) == (503, "unavailable")
            assert time.monotonic() - started < MARGIN, "refused at once"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the server notices the closes asynchronously
        with connect() as sock:
            sock.sendall(get("/healthz", "Connection: close"))
            raw = read_until_closed(sock)
        if raw.startswith(b"HTTP/1.1 200"):
            break
        assert time.monotonic() < deadline, f"a freed slot was never reused: {raw[:200]!r}"
        time.sleep(0.1)


def test_a_refused_pipelined_request_does_not_cut_the_response_before_it(
    connect: Callable[[], socket.socket],
) -> None:
    """A valid request and then an oversized head in one write: the first is
    answered whole, then the connection closes; the second never ran."""
    sock = connect()
    sock.sendall(get("/healthz") + get("/healthz", "X-Big: " + "f" * 20_000))
    status, _, body = read_response(sock)
    assert (status, body) == (200, b'{"status":"ok"}')
    rest = read_until_closed(sock)
    assert rest == b"" or parse(rest)[0] == 431


def test_oversized_trailers_are_not_buffered(connect: Callable[[], socket.socket]) -> None:
    """A chunked body's trailer fields are held to the head's limits: the
    request ends by its deadline instead of the server buffering them."""
    sock = connect()
    body = json.dumps({"email": "t@example.com", "password": "pw-12345678", "name": "T"})
    sock.sendall(
        b"POST /v1/users HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\nX-Trailer: "
        % (len(body), body.encode())
    )
    started = time.monotonic()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for _ in range(64):  # 1 MB of one trailer value
            sock.sendall(b"g" * 16384)
    raw = read_until_closed(sock)
    assert time.monotonic() - started < REQUEST_TIMEOUT + MARGIN
    if raw:  # the request was cut by its deadline
        assert parse(raw)[0] == 504


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", b"\x00\x01garbage\r\n\r\n"],
    ids=["bad-content-length", "garbage"],
)
def test_a_malformed_request_gets_the_error_body(
    connect: Callable[[], socket.socket], request_bytes: bytes
) -> None:
    sock = connect()
    sock.sendall(request_bytes)
    status, headers, body = parse(read_until_closed(sock))
    assert (status, body["code"]) == (400, "invalid_argument")
    assert headers["x-request-id"]


def test_requests_on_idle_keepalive_connections_at_shutdown_are_answered(
    start_service: StartService, database_url: str
) -> None:
    """SIGTERM closes idle keep-alive connections only after a grace period:
    a request that a client sends on one meanwhile (it cannot know) is run
    and answered, with `Connection: close`, not reset unanswered."""
    service = start_service(
        LEDGERLINE_DATABASE_URL=database_url,
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
        LEDGERLINE_HTTP_KEEPALIVE_TIMEOUT_SECONDS="60",
    )
    socks = [socket.create_connection(("127.0.0.1", service.port), timeout=10) for _ in range(10)]
    try:
        for sock in socks:  # each one now an idle keep-alive connection
            sock.sendall(get("/healthz"))
            assert read_response(sock)[0] == 200
        service.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # the server has begun to shut down (it looks every 0.1 s)
        for i, sock in enumerate(socks):
            body = json.dumps({"email": f"late{i}@example.com", "password": "pw-12345678"})
            body_bytes = json.dumps({**json.loads(body), "name": "Late"}).encode()
            sock.sendall(
                b"POST /v1/users HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body_bytes), body_bytes)
            )
        for sock in socks:
            status, headers, _ = read_response(sock)
            assert status == 201
            assert headers["connection"] == "close"
            assert read_until_closed(sock) == b""
    finally:
        for sock in socks:
            sock.close()
    assert service.proc.wait(60) == 0


def test_a_websocket_upgrade_is_served_as_plain_http(connect: Callable[[], socket.socket]) -> None:
    """No route speaks WebSocket: an upgrade is not handed to another protocol
    (one without these limits); the request is answered as it stands."""
    sock = connect()
    sock.sendall(
        get(
            "/healthz",
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        )
    )
    status, _, body = read_response(sock)
    assert (status, body) == (200, b'{"status":"ok"}')
