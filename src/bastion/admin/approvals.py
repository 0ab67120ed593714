"""Admin API for approvals: list, show, approve and deny, as Starlette routes the app mounts.

Owns HTTP mapping only: every request is authenticated by the injected ``authenticate`` callable,
decisions go through ``ApprovalService.decide`` with that principal (so self-approval and group
checks are the service's). JSON bodies carry masked arguments only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.approval.model import Approval, ApprovalState, ReviewRefusedError, Verdict
from bastion.approval.service import ApprovalNotFoundError, ApprovalService
from bastion.errors import AuthenticationError

Authenticate = Callable[[Mapping[str, str]], Awaitable[Any]]
"""Returns the ``Principal`` of a request from its lower-case headers; raises AuthenticationError."""
MAX_LIST_LIMIT = 500
MAX_REASON_CHARS = 2000


def render_approval(a: Approval) -> dict[str, Any]:
    """Return the public JSON form of an approval (the one the CLI prints)."""
    return {
        "id": a.id, "state": a.state.value, "caller": {"subject": a.subject, "issuer": a.issuer},
        "server": a.server, "tool": a.tool, "arguments": a.arguments, "arguments_sha256": a.arguments_sha256,
        "rule_id": a.rule_id, "policy_hash": a.policy_hash, "reason": a.caller_reason,
        "approvers": list(a.approver_groups), "min_approvals": a.min_approvals, "deny_min": a.deny_min,
        "created_at": a.created_at, "expires_at": a.expires_at, "held": a.held, "grant_s": a.grant_s,
        "closed_at": a.closed_at, "executed_at": a.executed_at,
        "reviews": [{"subject": r.subject, "issuer": r.issuer, "verdict": r.verdict.value, "reason": r.reason,
                     "decided_at": r.decided_at, "via": r.via} for r in a.reviews],
    }


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _problem(status: int, error: str, message: str) -> Response:
    return _json({"error": error, "message": message}, status)


def approval_routes(service: ApprovalService, authenticate: Authenticate) -> list[Route]:
    """Return the routes ``GET /admin/approvals``, ``GET /admin/approvals/{id}``, ``POST .../approve|deny``."""

    async def caller(request: Request) -> Any:
        return await authenticate({k.lower(): v for k, v in request.headers.items()})

    async def guarded(request: Request, handle: Callable[[Any], Awaitable[Response]]) -> Response:
        try:
            principal = await caller(request)
        except AuthenticationError as exc:
            if exc.data.get("status_code") == 403:
                return _problem(403, "forbidden", "this identity may not use the admin API")
            headers = {"WWW-Authenticate": str(exc.data.get("www_authenticate", "Bearer"))}
            return Response(b'{"error":"unauthorized"}', 401, headers=headers, media_type="application/json")
        try:
            return await handle(principal)
        except ApprovalNotFoundError:
            return _problem(404, "not_found", "no such approval")
        except ReviewRefusedError as exc:
            return _problem(403, "refused", str(exc))

    async def list_view(request: Request) -> Response:
        async def handle(_principal: Any) -> Response:
            raw_state = request.query_params.get("state")
            try:
                state = ApprovalState(raw_state) if raw_state else None
                limit = min(int(request.query_params.get("limit", "100")), MAX_LIST_LIMIT)
            except ValueError:
                return _problem(400, "bad_request", "state must be an approval state and limit an integer")
            return _json({"approvals": [render_approval(a) for a in await service.list_approvals(state, limit)]})

        return await guarded(request, handle)

    async def show_view(request: Request) -> Response:
        async def handle(_principal: Any) -> Response:
            return _json(render_approval(await service.fetch(request.path_params["approval_id"])))

        return await guarded(request, handle)

    def decide_view(verdict: Verdict) -> Callable[[Request], Awaitable[Response]]:
        async def view(request: Request) -> Response:
            async def handle(principal: Any) -> Response:
                try:
                    body = orjson.loads(await request.body() or b"{}")
                except orjson.JSONDecodeError:
                    return _problem(400, "bad_request", "body must be JSON")
                reason = body.get("reason") if isinstance(body, dict) else None
                if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
                    return _problem(400, "bad_request", f"reason must be a string of at most {MAX_REASON_CHARS} chars")
                if verdict is Verdict.DENY and not reason:
                    return _problem(400, "bad_request", "a denial needs a reason")
                decided = await service.decide(request.path_params["approval_id"], principal, verdict, reason,
                                               via="api")
                return _json(render_approval(decided))

            return await guarded(request, handle)

        return view

    return [
        Route("/admin/approvals", list_view, methods=["GET"]),
        Route("/admin/approvals/{approval_id}", show_view, methods=["GET"]),
        Route("/admin/approvals/{approval_id}/approve", decide_view(Verdict.APPROVE), methods=["POST"]),
        Route("/admin/approvals/{approval_id}/deny", decide_view(Verdict.DENY), methods=["POST"]),
    ]
