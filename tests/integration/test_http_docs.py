"""The documentation pages (/docs, /redoc) and the assets they load, which
the service serves itself, through the same request envelope as the API."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

from ledgerline.delivery.http.docs import (
    ASSET_CACHE_CONTROL,
    ASSETS_PREFIX,
    PAGE_CONTENT_SECURITY_POLICY,
    assets_version,
    read_asset,
)

PAGES = [pytest.param("/docs", id="swagger-ui"), pytest.param("/redoc", id="redoc")]


class _Links(HTMLParser):
    """Every URL a page loads: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


def loaded_urls(page: str) -> list[str]:
    links = _Links()
    links.feed(page)
    return links.urls


@pytest.mark.parametrize("path", PAGES)
async def test_a_page_loads_nothing_but_the_services_own_assets(
    client: httpx.AsyncClient, path: str
) -> None:
    page = await client.get(path)

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["content-security-policy"] == PAGE_CONTENT_SECURITY_POLICY
    assert page.headers["x-request-id"]
    urls = loaded_urls(page.text)
    assert urls, page.text
    assert all(url.startswith(f"{ASSETS_PREFIX}/{assets_version()}/") for url in urls), urls
    assert "/openapi.json" in page.text
    assert not re.search(r"https?://", page.text)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        pytest.param("swagger-ui-bundle.js", "text/javascript; charset=utf-8", id="swagger-js"),
        pytest.param("swagger-ui.css", "text/css; charset=utf-8", id="swagger-css"),
        pytest.param("redoc.standalone.js", "text/javascript; charset=utf-8", id="redoc-js"),
        pytest.param("favicon.png", "image/png", id="favicon"),
    ],
)
async def test_an_asset_arrives_whole_typed_and_cacheable(
    client: httpx.AsyncClient, name: str, content_type: str
) -> None:
    response = await client.get(
        f"{ASSETS_PREFIX}/{assets_version()}/{name}", headers={"Accept-Encoding": "identity"}
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == ASSET_CACHE_CONTROL
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-request-id"]
    assert "content-encoding" not in response.headers
    packaged = read_asset(name)
    assert response.content == packaged.body
    assert int(response.headers["content-length"]) == len(packaged.body)
    assert response.headers["etag"] == packaged.etag


@pytest.mark.parametrize("name", ["swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"])
async def test_text_assets_go_gzipped_to_who_accepts_it(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.get(
        f"{ASSETS_PREFIX}/{assets_version()}/{name}", headers={"Accept-Encoding": "br, gzip"}
    )

    packaged = read_asset(name)
    assert packaged.gzipped is not None
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert int(response.headers["content-length"]) == len(packaged.gzipped)
    assert len(packaged.gzipped) < len(packaged.body) / 2
    assert response.content == packaged.body  # as the client decoded it
    assert response.headers["etag"] == packaged.gzipped_etag != packaged.etag


async def test_an_image_goes_as_it_is(client: httpx.AsyncClient) -> None:
    response = await client.get(
        f"{ASSETS_PREFIX}/{assets_version()}/favicon.png", headers={"Accept-Encoding": "gzip"}
    )

    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert "vary" not in response.headers


async def test_a_cached_asset_is_revalidated_without_its_body(client: httpx.AsyncClient) -> None:
    url = f"{ASSETS_PREFIX}/{assets_version()}/swagger-ui.css"
    etag = (await client.get(url)).headers["etag"]

    again = await client.get(url, headers={"If-None-Match": f'W/"other", {etag}'})
    changed = await client.get(url, headers={"If-None-Match": '"other"'})

    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert again.headers["cache-control"] == ASSET_CACHE_CONTROL
    assert changed.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"{ASSETS_PREFIX}/0.0.0/swagger-ui.css", id="another-version"),
        pytest.param(f"{ASSETS_PREFIX}/{{version}}/index.html", id="not-an-asset"),
        pytest.param(f"{ASSETS_PREFIX}/{{version}}/..%2Fcore.py", id="outside-the-assets"),
    ],
)
async def test_anything_else_under_the_assets_is_not_found(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path.format(version=assets_version()))

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert response.headers["content-type"] == "application/json"


def test_the_swagger_ui_served_reads_openapi_3_1() -> None:
    """Swagger UI renders OpenAPI 3.1 from version 5 on; 4 shows an error."""
    bundle = read_asset("swagger-ui-bundle.js").body.decode()
    versions = re.findall(r'PACKAGE_VERSION:"(\d+)\.\d+\.\d+"', bundle)
    assert versions
    assert int(versions[0]) >= 5


async def test_the_pages_are_not_operations_of_the_api(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    assert not [path for path in paths if path.startswith(("/docs", "/redoc"))]


async def test_assets_are_counted_under_one_route_template(client: httpx.AsyncClient) -> None:
    for name in ("swagger-ui.css", "favicon.png"):
        await client.get(f"{ASSETS_PREFIX}/{assets_version()}/{name}")

    metrics = (await client.get("/metrics")).text

    assert f'route="{ASSETS_PREFIX}/{{version}}/{{name}}"' in metrics
    assert "favicon.png" not in metrics
