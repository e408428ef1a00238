"""The documentation pages of a real `ledgerline serve`, in headless
Chromium with no route out of the machine: every request that is not to
the service fails (a proxy that is not there, and the page's own requests
intercepted), and the pages must still render every operation of the
OpenAPI document. Skipped only where no Chromium is installed."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Error, Page, Route, async_playwright

from tests.e2e.conftest import JWT_SECRET, Service, free_port

pytestmark = pytest.mark.e2e
StartService = Callable[..., Service]
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
RENDER_TIMEOUT_MS = 30_000


@dataclass(frozen=True, order=True)
class Operation:
    method: str
    path: str
    summary: str


def documented_operations(service: Service) -> list[Operation]:
    document = httpx.get(f"{service.base_url}/openapi.json", timeout=10).json()
    return [
        Operation(method.upper(), path, operation["summary"])
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium; .ci/run does)")
    async with async_playwright() as playwright:
        # Everything but loopback goes to a proxy that is not there.
        nowhere = f"http://127.0.0.1:{free_port()}"
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[f"--proxy-server={nowhere}", "--proxy-bypass-list=127.0.0.1"],
        )
        try:
            yield launched
        finally:
            await launched.close()


# ReDoc's footer shows its vendor's logo from the internet (and hides it when
# that fails); the pages' Content-Security-Policy stops that in the browser.
REDOC_VENDOR_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@dataclass
class Visit:
    """What a page did besides rendering: requests that got past its
    Content-Security-Policy and tried to leave the machine, what the policy
    refused, and any other error the page raised or logged."""

    outside: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def open_offline(browser: Browser, url: str) -> tuple[Page, Visit]:
    visit = Visit()
    page = await browser.new_page()

    async def only_loopback(route: Route) -> None:
        request_url = route.request.url
        if urlsplit(request_url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            visit.outside.append(request_url)
            await route.abort("internetdisconnected")

    def console(message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        if "Content Security Policy" in message.text:
            visit.refused += re.findall(r"'(https?://[^']+)'", message.text)
        else:
            visit.errors.append(message.text)

    def page_error(error: Error) -> None:
        visit.errors.append(str(error))

    await page.route("**/*", only_loopback)
    page.on("console", console)
    page.on("pageerror", page_error)
    response = await page.goto(url)
    assert response is not None
    assert response.status == 200
    return page, visit


@pytest.fixture
def service(start_service: StartService, database_url: str) -> Service:
    return start_service(LEDGERLINE_DATABASE_URL=database_url, LEDGERLINE_JWT_SECRET=JWT_SECRET)


async def test_swagger_ui_renders_every_operation_offline(
    browser: Browser, service: Service
) -> None:
    operations = documented_operations(service)
    page, visit = await open_offline(browser, f"{service.base_url}/docs")

    blocks = page.locator(".opblock")
    await blocks.nth(len(operations) - 1).wait_for(timeout=RENDER_TIMEOUT_MS)
    rendered: list[Any] = await page.eval_on_selector_all(
        ".opblock",
        """blocks => blocks.map(b => [
            b.querySelector('.opblock-summary-method').textContent,
            b.querySelector('.opblock-summary-path').dataset.path,
            b.querySelector('.opblock-summary-description').textContent])""",
    )
    title = await page.locator(".info .title").inner_text()

    assert sorted(Operation(*row) for row in rendered) == sorted(operations)
    assert await page.locator(".version-pragma, .errors-wrapper").count() == 0
    assert title.startswith("Ledgerline")
    assert visit.outside == []
    assert visit.refused == []
    assert visit.errors == []


async def test_swagger_ui_calls_the_api_under_its_content_security_policy(
    browser: Browser, service: Service
) -> None:
    """Swagger UI's "Try it out" sends a real request from the page (connect-src 'self')."""
    page, visit = await open_offline(browser, f"{service.base_url}/docs")
    block = page.locator("#operations-operations-get_liveness")

    await block.locator(".opblock-summary").click()
    await block.locator(".try-out__btn").click()
    await block.locator(".execute").click()
    answer = block.locator(".live-responses-table tbody")
    await answer.wait_for(timeout=RENDER_TIMEOUT_MS)

    assert await answer.locator(".response-col_status").inner_text() == "200"
    assert '"status": "ok"' in await answer.locator(".highlight-code").inner_text()
    assert (visit.outside, visit.refused, visit.errors) == ([], [], [])


async def test_redoc_renders_every_operation_offline(browser: Browser, service: Service) -> None:
    operations = documented_operations(service)
    page, visit = await open_offline(browser, f"{service.base_url}/redoc")

    headings = page.locator("[data-section-id*='operation/'] h2")
    await headings.nth(len(operations) - 1).wait_for(timeout=RENDER_TIMEOUT_MS)
    summaries = await headings.all_inner_texts()
    endpoints = await page.locator("[data-section-id*='operation/']").evaluate_all(
        "sections => sections.map(s => s.textContent)"
    )

    assert sorted(summaries) == sorted(o.summary for o in operations)
    for operation in operations:
        shown = [text for text in endpoints if operation.summary in text]
        assert any(operation.path in text for text in shown), operation
    assert visit.outside == []
    assert set(visit.refused) <= {REDOC_VENDOR_LOGO}
    assert visit.errors == []
