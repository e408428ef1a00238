"""The API's documentation pages, Swagger UI at /docs and ReDoc at /redoc,
served whole by the service: their scripts, style sheet and icon come from
the installed fastapi-offline package (Swagger UI 5, which reads OpenAPI
3.1, and ReDoc 2), never from a CDN, so the pages work on a machine with no
route to the internet.

An asset's URL names the package's version, so a browser may keep it for a
year without asking again: an upgrade changes every URL. The pages are
revalidated on each visit (no-cache), so that they never name the assets of
another version. The scripts and the style sheet go gzipped to a browser
that accepts it (about a quarter of their size: 1.5 MB of Swagger UI is
0.4 MB)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import importlib.metadata
import importlib.resources
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.exceptions import HTTPException

ASSETS_DISTRIBUTION = "fastapi-offline"
ASSETS_PACKAGE = "fastapi_offline"
ASSETS_PREFIX = "/docs/assets"
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
PAGE_CACHE_CONTROL = "no-cache"
# Every file the pages load, and what it is (RFC 9239: JavaScript is text/javascript).
ASSET_MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
_NO_SNIFF = {"X-Content-Type-Options": "nosniff"}
# The pages may load and call nothing but the service: a browser refuses
# anything else before it leaves the machine (ReDoc's footer fetches its
# vendor's logo from the internet, and hides it when that fails). Inline
# script and style: the pages' start-up script, and the styles both UIs
# inject; blob: workers: ReDoc's search.
PAGE_CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_PAGE_HEADERS = {
    "Cache-Control": PAGE_CACHE_CONTROL,
    "Content-Security-Policy": PAGE_CONTENT_SECURITY_POLICY,
    **_NO_SNIFF,
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str
    gzipped: bytes | None  # None where compressing gains nothing (an image)

    @property
    def gzipped_etag(self) -> str:
        """Another representation, so another strong validator (RFC 9110)."""
        return f'{self.etag[:-1]}-gzip"'


def assets_version() -> str:
    return importlib.metadata.version(ASSETS_DISTRIBUTION)


def read_asset(name: str) -> Asset:
    body = (importlib.resources.files(ASSETS_PACKAGE) / "static" / name).read_bytes()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    media_type = ASSET_MEDIA_TYPES[name]
    gzipped = gzip.compress(body, mtime=0) if media_type.startswith("text/") else None
    return Asset(body, media_type, etag, gzipped)


def docs_router(title: str, openapi_url: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    version_served = assets_version()
    base = f"{ASSETS_PREFIX}/{version_served}"
    loaded: dict[str, Asset] = {}  # read on first use: most processes never serve them

    @router.get("/docs")
    async def swagger_ui() -> Response:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} API",
            swagger_js_url=f"{base}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}/swagger-ui.css",
            swagger_favicon_url=f"{base}/favicon.png",
            oauth2_redirect_url=None,
        )
        page.headers.update(_PAGE_HEADERS)
        return page

    @router.get("/redoc")
    async def redoc() -> Response:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} API",
            redoc_js_url=f"{base}/redoc.standalone.js",
            redoc_favicon_url=f"{base}/favicon.png",
            with_google_fonts=False,  # a stylesheet from the internet: the system fonts do
        )
        page.headers.update(_PAGE_HEADERS)
        return page

    @router.get(f"{ASSETS_PREFIX}/{{version}}/{{name}}")
    async def asset(version: str, name: str, request: Request) -> Response:
        if version != version_served or name not in ASSET_MEDIA_TYPES:
            raise HTTPException(404, "no such documentation asset")
        found = loaded.get(name)
        if found is None:  # compressing the largest takes about 0.1 s: off the event loop
            found = loaded[name] = await asyncio.to_thread(read_asset, name)
        headers = {"Cache-Control": ASSET_CACHE_CONTROL, **_NO_SNIFF}
        body, etag = found.body, found.etag
        if found.gzipped is not None:
            headers["Vary"] = "Accept-Encoding"
            if accepts_gzip(request.headers.get("accept-encoding", "")):
                body, etag = found.gzipped, found.gzipped_etag
                headers["Content-Encoding"] = "gzip"
        headers["ETag"] = etag
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=found.media_type, headers=headers)

    return router


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip: named (or "*") without q=0."""
    for coding in accept_encoding.split(","):
        name, _, parameters = coding.partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        weight = parameters.strip().lower()
        if not weight:
            return True
        try:
            return float(weight.removeprefix("q=")) > 0
        except ValueError:
            return False
    return False


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110's weak comparison, as If-None-Match asks for."""
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags
