"""`GET /` serves the run viewer to browsers, and its files under /viewer/: shipped in the
package, public (the page asks for the token), nothing loaded from elsewhere."""

from __future__ import annotations

import re

from runtime.api.routes.viewer import VIEWER_FILES, viewer_file
from tests.api.conftest import DaemonFactory
from tests.api.test_errors import assert_error


async def test_a_browser_gets_the_page_and_its_files_without_a_token(
    make_daemon: DaemonFactory,
) -> None:
    daemon = await make_daemon(token="s3cret")
    async with daemon.session.get(daemon.u("/"), headers={"Accept": "text/html"}) as page:
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
        csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    for name, content_type in (("app.js", "text/javascript"), ("style.css", "text/css")):
        assert f"/viewer/{name}" in html
        async with daemon.session.get(daemon.u(f"/viewer/{name}")) as asset:
            assert asset.status == 200 and asset.content_type == content_type
            assert await asset.read() == viewer_file(name).read_bytes()
    # The API itself still wants the token.
    status, body = await daemon.get("/v1/agents")
    assert_error(status, body, 401, "unauthorized")


async def test_other_clients_and_other_files_get_the_error_envelope(
    make_daemon: DaemonFactory,
) -> None:
    daemon = await make_daemon()
    status, body = await daemon.get("/", headers={"Accept": "application/json"})
    error = assert_error(status, body, 404, "not_found")
    assert "/openapi.json" in error["message"]
    for path in ("/viewer/index.html", "/viewer/nope.js", "/viewer/..%2Fapi%2Fapp.py"):
        status, body = await daemon.get(path)
        assert_error(status, body, 404, "not_found")


def test_the_viewer_loads_nothing_from_elsewhere() -> None:
    """No CDN: every URL the files name is a path on the daemon (links the page makes from
    event data, such as a dev URL, are set as text attributes at run time)."""
    external = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//|@import|url\(\s*["']?https?:""")
    for name in VIEWER_FILES:
        text = viewer_file(name).read_text()
        assert not external.search(text), name
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, name
