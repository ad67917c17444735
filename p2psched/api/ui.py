"""The live dashboard at `/ui`: one static page (HTML, CSS, vanilla JS from `static/`) that reads
the control API from the browser, once a second, with the token from its URL fragment.

Owns: serving those files. Promises: they hold no data, so they are served without the token
(the fragment that carries it never reaches the server); nothing but the files named here is
served, each with a content security policy that lets the page run only its own script.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, HTTPException, Response

# What the page may load and call: its own script and style, and the API on the same origin.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "content-security-policy": _POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",  # a node upgraded in place serves its new page at once
}
_PAGE = "ui.html"
_ASSETS = {
    "ui.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


def serves(path: str) -> bool:
    """Whether `path` is the dashboard's (served without the token)."""
    return path == "/ui" or path.startswith("/ui/")


@cache
def _read(name: str) -> bytes:
    return (files("p2psched.api") / "static" / name).read_bytes()


def _file(name: str, media_type: str) -> Response:
    return Response(_read(name), media_type=media_type, headers=_HEADERS)


@router.get("/ui")
@router.get("/ui/")
async def page() -> Response:
    return _file(_PAGE, "text/html; charset=utf-8")


@router.get("/ui/{name}")
async def asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"the dashboard has no {name!r} (it has {', '.join(_ASSETS)})")
    return _file(name, media_type)
