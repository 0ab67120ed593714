"""Admin API and CLI: authentication, self-approval and group refusals over HTTP, CLI decisions via the API."""

from __future__ import annotations

import argparse
import io
from collections.abc import Mapping

import httpx
import pytest
from starlette.applications import Starlette

from bastion.admin.approvals import approval_routes
from bastion.approval.model import ApprovalState
from bastion.approval.service import ApprovalService
from bastion.cli import approvals as cli
from bastion.errors import AuthenticationError, BastionError, ConfigError
from bastion.identity.principal import Principal

from .support import ALICE, BOB, MALLORY, call, make_service

pytestmark = pytest.mark.anyio
TOKENS = {"t-bob": BOB, "t-alice": ALICE, "t-mallory": MALLORY}


async def authenticate(headers: Mapping[str, str]) -> Principal:
    token = headers.get("authorization", "").removeprefix("Bearer ")
    if token not in TOKENS:
        raise AuthenticationError("bad token")
    return TOKENS[token]


def transport(service: ApprovalService) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=Starlette(routes=approval_routes(service, authenticate)))


async def post(service: ApprovalService, path: str, token: str, body: object) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport(service), base_url="http://gw") as client:
        return await client.post(path, json=body, headers={"authorization": f"Bearer {token}"})


async def test_api_refuses_without_valid_token() -> None:
    service = make_service()
    approval = await service.request(call({"a": 1}))
    response = await post(service, f"/admin/approvals/{approval.id}/approve", "nope", {})
    assert response.status_code == 401
    assert (await service.fetch(approval.id)).state is ApprovalState.PENDING


async def test_api_refuses_self_approval_and_non_approver() -> None:
    service = make_service()
    approval = await service.request(call({"a": 1}))
    own = await post(service, f"/admin/approvals/{approval.id}/approve", "t-alice", {})
    outsider = await post(service, f"/admin/approvals/{approval.id}/approve", "t-mallory", {})
    assert (own.status_code, outsider.status_code) == (403, 403)
    assert (await service.fetch(approval.id)).state is ApprovalState.PENDING


async def test_api_deny_needs_reason_and_records_it() -> None:
    service = make_service()
    approval = await service.request(call({"a": 1}))
    assert (await post(service, f"/admin/approvals/{approval.id}/deny", "t-bob", {})).status_code == 400
    response = await post(service, f"/admin/approvals/{approval.id}/deny", "t-bob", {"reason": "prod freeze"})
    assert response.status_code == 200 and response.json()["state"] == "denied"
    assert response.json()["reviews"][0]["reason"] == "prod freeze"


async def test_api_unknown_id_is_404() -> None:
    response = await post(make_service(), "/admin/approvals/apr_x/approve", "t-bob", {})
    assert response.status_code == 404


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["approvals", *argv])


async def test_cli_approve_through_api_and_list() -> None:
    service = make_service()
    approval = await service.request(call({"a": 1}))
    out = io.StringIO()
    code = await cli.run_async(args("--url", "http://gw", "--token", "t-bob", "approve", approval.id, "--reason", "ok"),
                               out, transport(service))
    assert code == 0 and f"{approval.id}  approved" in out.getvalue()
    decided = await service.fetch(approval.id)
    assert decided.state is ApprovalState.APPROVED and decided.reviews[0].subject == "bob"
    listing = io.StringIO()
    await cli.run_async(args("--url", "http://gw", "--token", "t-bob", "list", "--state", "all"), listing,
                        transport(service))
    assert approval.id in listing.getvalue()


async def test_cli_refused_decision_raises_and_store_cannot_decide() -> None:
    service = make_service()
    approval = await service.request(call({"a": 1}))
    with pytest.raises(BastionError, match="403"):
        await cli.run_async(args("--url", "http://gw", "--token", "t-alice", "approve", approval.id), io.StringIO(),
                            transport(service))
    with pytest.raises(ConfigError, match="admin API"):
        await cli.run_async(args("--store", "sqlite:///:memory:", "deny", approval.id, "--reason", "x"), io.StringIO())
