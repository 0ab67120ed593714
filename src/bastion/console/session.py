"""The console's browser session: the bearer token in a cookie, the CSRF check, and form bodies.

Owns how a browser carries the same credential the admin API takes (API key or JWT, sent back as
``Authorization: Bearer``) and why a cross-site page cannot spend it. Who the token names is the
authenticator's business; what a reviewer may do is the approval service's.

CSRF defence (chosen: SameSite=Strict + Origin check, no token):
  1. The token cookie is ``HttpOnly; SameSite=Strict`` (``Secure`` on https), so a browser never
     attaches it to a request started by another site, and page scripts cannot read it.
  2. Every POST (login and logout included) must carry an ``Origin`` (or, failing that, a ``Referer``)
     whose host:port equals the request's ``Host``, and a ``Sec-Fetch-Site`` if present must be
     ``same-origin``. A request with neither header is refused: browsers send ``Origin`` on every
     form POST, so only non-browser clients lack it, and they should use the admin API.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE_NAME = "bastion_console_token"
COOKIE_MAX_AGE_S = 8 * 3600
"""The cookie outlives no working day; the credential's own expiry (JWT ``exp``, key expiry) still applies."""
MAX_FORM_BYTES = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


class FormError(Exception):
    """Raised when a POST body is not a small urlencoded form; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bearer_headers(request: Request) -> dict[str, str] | None:
    """Return the lower-case headers the authenticator expects, built from the cookie; None if absent."""
    token = request.cookies.get(COOKIE_NAME, "").strip()
    if not token:
        return None
    return {"authorization": f"Bearer {token}"}


def store_token(response: Response, request: Request, token: str, path: str) -> None:
    """Set the token cookie on ``response`` (HttpOnly, SameSite=Strict, Secure on https)."""
    response.set_cookie(COOKIE_NAME, token, max_age=COOKIE_MAX_AGE_S, path=path, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def clear_token(response: Response, request: Request, path: str) -> None:
    """Expire the token cookie on ``response``."""
    response.delete_cookie(COOKIE_NAME, path=path, httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


def same_origin(request: Request) -> bool:
    """Return True when a POST provably comes from a console page of this host (see module docstring)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    host = request.headers.get("host")
    return host is not None and urlsplit(source).netloc.lower() == host.lower()


async def read_form(request: Request) -> dict[str, str]:
    """Return the fields of a urlencoded POST body (last value wins).

    Raises:
        FormError: wrong content type (415) or a body over ``MAX_FORM_BYTES`` (413).
    """
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM_TYPE:
        raise FormError(415, "forms must be sent as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError(413, "form too large")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(400, "malformed form") from exc
