"""The run viewer: `GET /` answers a browser (Accept: text/html) with a small web app, and
`GET /viewer/{file}` its script and style sheet, all shipped in `runtime/viewer/`. No build
step, nothing loaded from elsewhere (the Content-Security-Policy forbids it). The page needs
no token; the API calls it makes do (it asks for one and keeps it in the tab's session
storage)."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

from aiohttp import web

from runtime.api.errors import ApiError
from runtime.api.routing import RouteTable

# The viewer's files and their content types: nothing else under /viewer/ is served.
VIEWER_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
# Everything the page loads comes from this daemon; inline script and style are refused.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def viewer_file(name: str) -> Traversable:
    return files("runtime").joinpath("viewer", name)


def _file_response(name: str) -> web.Response:
    return web.Response(
        body=viewer_file(name).read_bytes(),
        content_type=VIEWER_FILES[name],
        charset="utf-8",
        headers=_HEADERS,
    )


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


async def viewer_page(request: web.Request) -> web.Response:
    if not wants_html(request):
        raise ApiError(
            404,
            "not_found",
            "GET / serves the run viewer to browsers (Accept: text/html); the API is under "
            "/v1/ (see GET /openapi.json)",
        )
    return _file_response("index.html")


async def viewer_asset(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if name not in VIEWER_FILES or name == "index.html":
        raise ApiError(404, "not_found", f"the viewer has no file {name!r}")
    return _file_response(name)


def add_routes(table: RouteTable) -> None:
    tag = "viewer"
    table.add(
        "GET",
        "/",
        viewer_page,
        summary="The run viewer (a web app; for a browser that accepts text/html)",
        tag=tag,
        public=True,
        content_type="text/html",
        errors=(404,),
    )
    table.add(
        "GET",
        "/viewer/{file}",
        viewer_asset,
        summary="The run viewer's script and style sheet",
        tag=tag,
        public=True,
        content_type="text/plain",
        errors=(404,),
    )
