"""The console's routes: sign-in, pending approvals, one approval with approve/deny, audit search, one interaction.

Owns HTTP mapping only, as the admin API does: the principal comes from the injected
``authenticate`` (the admin API's), decisions go through ``ApprovalService.decide`` (so self-approval
and approver groups are the service's rules), records come from ``AuditLog.search_entries`` (which records the read first) and
``audit.reading.fetch_interaction``. Mount the returned router at ``/console``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route, Router

from bastion.admin.approvals import MAX_LIST_LIMIT, MAX_REASON_CHARS
from bastion.approval.model import ApprovalState, ReviewRefusedError, Verdict
from bastion.approval.service import ApprovalNotFoundError, ApprovalService
from bastion.audit.log import AuditLog
from bastion.audit.reading import fetch_interaction, parse_time_bound
from bastion.console import pages
from bastion.console._html import Markup
from bastion.console.session import (
    FormError,
    bearer_headers,
    clear_token,
    read_form,
    same_origin,
    store_token,
)
from bastion.errors import AuthenticationError, StorageError
from bastion.identity.principal import Principal
from bastion.storage.base import RecordQuery, Store

Authenticate = Callable[[Mapping[str, str]], Awaitable[Principal]]
"""Returns the ``Principal`` of lower-case request headers; raises AuthenticationError."""

CSS = (Path(__file__).parent / "static" / "console.css").read_bytes()
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9._~+/=-]{1,8192}")
"""API keys and JWTs (base64url segments) fit; anything else could not be a credential or a cookie value."""
SEARCH_LIMIT = 100
MAX_SEQ = 2**53 - 1
"""A record's seq is a JSON integer in the records (RFC 8785 allows no larger)."""
CROSS_SITE = "This form was not submitted from a console page of this gateway, so it was refused."
SIGN_IN_AGAIN = "Your credential was not accepted (expired or revoked?); sign in again."


def _page(markup: Markup, status: int = 200) -> Response:
    return HTMLResponse(str(markup), status_code=status, headers=SECURITY_HEADERS)


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _utc(value: str) -> str | None:
    """A ``datetime-local`` (taken as UTC) or RFC 3339 value as the stored ``time`` format; None if blank.

    Raises:
        ValueError: not a date-time.
    """
    return parse_time_bound(value, naive_is_utc=True) if value.strip() else None


def console_router(service: ApprovalService, store: Store, log: AuditLog, authenticate: Authenticate) -> Router:
    """Return the console as a Router whose paths are relative to its mount point."""

    def base_of(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def safe_next(request: Request, candidate: str) -> str:
        base = base_of(request)
        parts = urlsplit(candidate)
        if (candidate.startswith(base + "/") and not parts.scheme and not parts.netloc
                and "//" not in candidate and "\\" not in candidate):
            return candidate
        return base + "/approvals"

    async def signed_in(request: Request) -> Principal | Response:
        """The principal of the cookie's credential, or a redirect to the sign-in page."""
        base = base_of(request)
        headers = bearer_headers(request)
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="")
        if headers is None:
            return _redirect(f"{base}/login?next={target}")
        try:
            return await authenticate(headers)
        except AuthenticationError:
            response = _redirect(f"{base}/login?next={target}&again=1")
            clear_token(response, request, base or "/")
            return response

    async def home(request: Request) -> Response:
        return _redirect(base_of(request) + "/approvals")

    async def stylesheet(request: Request) -> Response:
        return Response(CSS, media_type="text/css", headers={"cache-control": "max-age=300",
                                                             "x-content-type-options": "nosniff"})

    async def login(request: Request) -> Response:
        base = base_of(request)
        if request.method == "GET":
            error = SIGN_IN_AGAIN if request.query_params.get("again") else None
            return _page(pages.login_page(base, safe_next(request, request.query_params.get("next", "")), error))
        if not same_origin(request):
            return _page(pages.message_page(base, "Refused", CROSS_SITE), 403)
        try:
            form = await read_form(request)
        except FormError as exc:
            return _page(pages.message_page(base, "Bad request", exc.message), exc.status)
        token, next_path = form.get("token", "").strip(), safe_next(request, form.get("next", ""))
        if not TOKEN_SHAPE.fullmatch(token):
            return _page(pages.login_page(base, next_path, "That is not an API key or access token."), 400)
        try:
            await authenticate({"authorization": f"Bearer {token}"})
        except AuthenticationError:
            return _page(pages.login_page(base, next_path, "That credential was not accepted."), 401)
        response = _redirect(next_path)
        store_token(response, request, token, base or "/")
        return response

    async def logout(request: Request) -> Response:
        base = base_of(request)
        if not same_origin(request):
            return _page(pages.message_page(base, "Refused", CROSS_SITE), 403)
        response = _redirect(base + "/login")
        clear_token(response, request, base or "/")
        return response

    async def approvals(request: Request) -> Response:
        principal = await signed_in(request)
        if isinstance(principal, Response):
            return principal
        pending = await service.list_approvals(ApprovalState.PENDING, MAX_LIST_LIMIT)
        return _page(pages.approvals_page(base_of(request), principal, pending))

    async def approval(request: Request) -> Response:
        principal = await signed_in(request)
        if isinstance(principal, Response):
            return principal
        base = base_of(request)
        try:
            found = await service.fetch(request.path_params["approval_id"])
        except ApprovalNotFoundError:
            return _page(pages.message_page(base, "Not found", "There is no such approval.", principal), 404)
        return _page(pages.approval_page(base, principal, found, notice=request.query_params.get("notice")))

    def decide(verdict: Verdict) -> Callable[[Request], Awaitable[Response]]:
        async def view(request: Request) -> Response:
            base = base_of(request)
            if not same_origin(request):
                return _page(pages.message_page(base, "Refused", CROSS_SITE), 403)
            principal = await signed_in(request)
            if isinstance(principal, Response):
                return principal
            approval_id = request.path_params["approval_id"]
            try:
                form = await read_form(request)
                reason = form.get("reason", "").strip() or None
                current = await service.fetch(approval_id)
                if reason is not None and len(reason) > MAX_REASON_CHARS:
                    message = f"A reason may have at most {MAX_REASON_CHARS} characters."
                    return _page(pages.approval_page(base, principal, current, error=message), 400)
                if verdict is Verdict.DENY and reason is None:
                    return _page(pages.approval_page(base, principal, current, error="A denial needs a reason."), 400)
                await service.decide(approval_id, principal, verdict, reason, via="console")
            except FormError as exc:
                return _page(pages.message_page(base, "Bad request", exc.message, principal), exc.status)
            except ApprovalNotFoundError:
                return _page(pages.message_page(base, "Not found", "There is no such approval.", principal), 404)
            except ReviewRefusedError as exc:
                refused = f"Refused: {exc}."
                return _page(pages.approval_page(base, principal, await service.fetch(approval_id), error=refused), 403)
            return _redirect(f"{base}/approvals/{quote(approval_id, safe='')}?notice={verdict.value}")

        return view

    async def audit(request: Request) -> Response:
        principal = await signed_in(request)
        if isinstance(principal, Response):
            return principal
        base = base_of(request)
        filters = {k: request.query_params.get(k, "") for k in ("subject", "tool", "outcome", "kind", "since", "until")}
        try:
            query = RecordQuery(subject=filters["subject"] or None, tool=filters["tool"] or None,
                                outcome=filters["outcome"] or None, kind=filters["kind"] or None,
                                time_from=_utc(filters["since"]), time_to=_utc(filters["until"]), limit=SEARCH_LIMIT)
        except ValueError:
            return _page(pages.audit_page(base, principal, filters, None, "From and Until must be date-times."), 400)
        try:
            found = await log.search_entries(query, subject=principal.subject)  # records the read first
        except StorageError:
            return _page(pages.audit_page(base, principal, filters, None, "The audit store could not be read."), 503)
        return _page(pages.audit_page(base, principal, filters, found))

    async def interaction(request: Request) -> Response:
        principal = await signed_in(request)
        if isinstance(principal, Response):
            return principal
        base = base_of(request)
        origin = request.query_params.get("origin", "")
        try:
            seq = int(request.query_params.get("seq", ""))
        except ValueError:
            seq = -1
        if not 0 <= seq <= MAX_SEQ:
            return _page(pages.message_page(base, "Bad request", "seq must be a record number.", principal), 400)
        try:
            await log.record_read(principal.subject, {"origin": origin, "seq": seq})
            entries = await fetch_interaction(store, origin, seq)
        except StorageError:
            return _page(pages.message_page(base, "Not found", "There is no such record.", principal), 404)
        return _page(pages.interaction_page(base, principal, entries))

    return Router(routes=[
        Route("/", home, methods=["GET"]),
        Route("/static/console.css", stylesheet, methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/approvals", approvals, methods=["GET"]),
        Route("/approvals/{approval_id}", approval, methods=["GET"]),
        Route("/approvals/{approval_id}/approve", decide(Verdict.APPROVE), methods=["POST"]),
        Route("/approvals/{approval_id}/deny", decide(Verdict.DENY), methods=["POST"]),
        Route("/audit", audit, methods=["GET"]),
        Route("/audit/interaction", interaction, methods=["GET"]),
    ])
