"""The API's documentation page at `/docs`: Swagger UI 5 (which reads OpenAPI 3.1), from the
files of the `swagger-ui-py` package that p2psched installs, never from a CDN.

Owns: the page and its assets. Promises: the page loads nothing from any host but the node
(its policy forbids it, and Swagger UI's online validator is off); it holds no data, so it is
served without the token, as `/openapi.json` is.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, Response
from fastapi.openapi.docs import get_swagger_ui_html

PAGE = "/docs"
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
# Swagger UI's page starts it with an inline script; everything else is the node's own.
_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS = {"content-security-policy": _POLICY, "x-content-type-options": "nosniff"}

router = APIRouter(include_in_schema=False)


def serves(path: str) -> bool:
    """Whether `path` is the documentation's (served without the token)."""
    return path == PAGE or path.startswith(f"{PAGE}/")


@cache
def _read(name: str) -> bytes:
    # Found, not imported: the package's own code serves other frameworks.
    spec = importlib.util.find_spec("swagger_ui")
    assert spec is not None and spec.submodule_search_locations, "swagger-ui-py is not installed"
    return (Path(spec.submodule_search_locations[0]) / "static" / name).read_bytes()


@router.get(PAGE)
async def page() -> Response:
    html = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="p2psched node control API",
        swagger_js_url=f"{PAGE}/swagger-ui-bundle.js",
        swagger_css_url=f"{PAGE}/swagger-ui.css",
        swagger_favicon_url=f"{PAGE}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},  # (it would send the schema to a host)
    )
    html.headers.update(_HEADERS)
    return html


@router.get(PAGE + "/{name}")
async def asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"the documentation has no {name!r}")
    return Response(_read(name), media_type=media_type, headers=_HEADERS)
