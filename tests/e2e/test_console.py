"""The web console in a real browser: Debian's Chromium driven by playwright-core (tests/console/drive.mjs).

A real gateway with API-key identities and a ``require_approval`` rule holds an SDK client's call;
``mallory`` (not a dba) signs in and is refused, ``alice`` (dba) signs in, sees the pending call and
approves it, and the held call completes. The audit search then shows the interaction. Every step
is checked on the page (driver report), on the wire (the SDK result) and in the audit log.
Screenshots go to /tmp/console-*.png. No browser is ever downloaded: Chromium comes from apt.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from mcp.shared.exceptions import MCPError
from tests.e2e.approvals_support import (
    WAIT_S,
    Gateway,
    approval_config,
    create_keys,
    gateway_in_thread,
    sdk_client,
    search,
    wait_for_responses,
    wait_for_steps,
)
from tests.e2e.gateway import NODE_BIN, ROOT, echo_upstream, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

CHROMIUM = Path("/usr/bin/chromium")
DRIVER = ROOT / "tests" / "console" / "drive.mjs"
PLAYWRIGHT = ROOT / "tests" / "node" / "node_modules" / "playwright-core"
SHOTS_DIR = "/tmp"
DRIVER_TIMEOUT_S = 90.0
POLICY: dict[str, Any] = {
    "default": "allow",
    "rules": [
        {"id": "risky-echo", "match": {"server": "alpha", "tool": "echo", "args": {"text": {"regex": "^drop"}}},
         "action": "require_approval", "approvers": {"groups": ["dba"], "min": 1}},
    ],
}
HOSTILE_TEXT = 'drop table "users"; <b>bold</b><script>window.pwned=true</script>'
"""Attacker-controlled arguments: must show up as text, never as markup."""


def _node() -> str | None:
    bundled = NODE_BIN / "node"
    return str(bundled) if bundled.exists() else shutil.which("node")


def _require_browser() -> str:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: install it with `apt-get update && apt-get install -y chromium`")
    if not PLAYWRIGHT.exists():
        pytest.skip("tests/node/node_modules/playwright-core is missing: run scripts/install-test-peers.sh")
    node = _node()
    if node is None:
        pytest.skip("no node binary: run scripts/install-test-peers.sh")
    return node


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with tempfile.TemporaryDirectory(prefix="bastion-e2e-console-") as workdir:
        store_url = f"sqlite:///{workdir}/audit.db"
        keys = anyio.run(create_keys, store_url)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = approval_config(POLICY, workdir, url, "test/console",
                                 upstreams={"alpha": echo_upstream("alpha")}, store=store_url)
        with gateway_in_thread(config, workdir, port):
            yield Gateway(url, workdir, store_url, keys, "test/console")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT_S, follow_redirects=False) as client:
        yield client


async def drive(node: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Run the browser driver on ``plan``; returns its report (fails with its stderr)."""
    with anyio.fail_after(DRIVER_TIMEOUT_S):
        done = await anyio.run_process([node, str(DRIVER)], input=orjson.dumps(plan), check=False,
                                       cwd=str(ROOT / "tests" / "node"))
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return dict(orjson.loads(done.stdout.splitlines()[-1]))


async def test_approver_releases_held_call_when_approving_in_console(gateway: Gateway, http: httpx.AsyncClient) -> None:
    node = _require_browser()
    holder: dict[str, Any] = {}
    done = anyio.Event()
    async with sdk_client(gateway.endpoint(), gateway.keys["agent"]) as client, anyio.create_task_group() as tg:
        async def call() -> None:
            try:
                holder["result"] = await client.call_tool("echo", {"text": HOSTILE_TEXT})
            except MCPError as exc:
                holder["error"] = exc
            finally:
                done.set()

        tg.start_soon(call)
        approval = await gateway.admin(http, "alice").wait_for_pending(HOSTILE_TEXT)
        assert not done.is_set()
        report = await drive(node, {"base": gateway.url, "outsider_key": gateway.keys["mallory"],
                                    "approver_key": gateway.keys["alice"], "approval_id": approval["id"],
                                    "text": HOSTILE_TEXT, "shots": SHOTS_DIR})
        with anyio.fail_after(WAIT_S):
            await done.wait()

    # The wire: the held call ran once approved, with its exact arguments.
    assert "error" not in holder, holder
    assert holder["result"].is_error is False and holder["result"].content[0].text == HOSTILE_TEXT
    # The pages: refusal for a non-approver, the escaped pending row, the approval, the audit trail.
    assert report["outsider_status"] == 403
    assert report["outsider_message"] == "Refused: 'mallory' is not in an approver group of this rule."
    assert "bastion_console_token" not in report["cookies_after_sign_out"]
    assert report["cookie"] == {"httpOnly": True, "sameSite": "Strict", "path": "/console"}
    assert approval["id"] in report["row_text"] and "agent" in report["row_text"]
    assert "<script>window.pwned=true</script>" in report["row_text"]  # shown as text ...
    assert (report["markup_in_arguments"], report["injected_script_ran"]) == (0, False)  # ... never as markup
    assert report["deny_reason_required"] is True
    assert report["notice"] == "You approved this call."
    assert report["state_after"] in ("approved", "executed")  # the released call may already have run
    assert report["audit_rows"] >= 1 and "response" in report["audit_first_row"]
    assert report["interaction_kinds"][0] == "request" and "response" in report["interaction_kinds"]
    assert HOSTILE_TEXT.replace('"', '\\"') in report["interaction_text"]
    # The audit log: alice's review came through the console, the call was forwarded exactly once.
    _, reviewed, _ = await wait_for_steps(gateway.store_url, approval["id"], ["requested", "reviewed", "executed"])
    assert (reviewed["who"]["subject"], reviewed["detail"]["verdict"], reviewed["detail"]["via"],
            reviewed["detail"]["reason"]) == ("alice", "approve", "console", "looks fine, ticket 4711")
    [response] = await wait_for_responses(gateway.store_url, approval["id"], 1)
    assert response["outcome"] == "ok"
    # Reading the log through the console is itself recorded, under the reader's identity.
    reads = await search(gateway.store_url, kind="log_read")
    assert {r["who"]["subject"] for r in reads} >= {"alice"}
    assert any("query" in r["detail"] for r in reads) and any("seq" in r["detail"] for r in reads)
    for name in ("login", "refused", "approvals", "approval", "audit", "interaction"):
        assert Path(SHOTS_DIR, f"console-{name}.png").stat().st_size > 0


async def test_console_post_is_refused_when_origin_is_another_site(gateway: Gateway, http: httpx.AsyncClient) -> None:
    login = f"{gateway.url}/console/login"
    form = {"token": gateway.keys["alice"]}
    foreign = await http.post(login, data=form, headers={"origin": "https://evil.example"})
    missing = await http.post(login, data=form)
    cross_site = await http.post(login, data=form, headers={"origin": gateway.url, "sec-fetch-site": "cross-site"})
    assert (foreign.status_code, missing.status_code, cross_site.status_code) == (403, 403, 403)
    assert "set-cookie" not in foreign.headers and "was not submitted from a console page" in foreign.text
    signed_in = await http.post(login, data=form, headers={"origin": gateway.url})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/console/approvals"
    cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "secure" not in cookie  # plain http here; https responses add Secure
    session = {"cookie": signed_in.headers["set-cookie"].split(";", 1)[0]}
    ranged = await http.get(f"{gateway.url}/console/audit", params={"since": "2000-01-01T00:00", "kind": "gateway_started"},
                            headers=session)
    assert ranged.status_code == 200 and "record(s), newest first" in ranged.text and "gateway_started" in ranged.text
    bad_range = await http.get(f"{gateway.url}/console/audit", params={"since": "yesterday"}, headers=session)
    assert bad_range.status_code == 400 and "From and Until must be date-times." in bad_range.text


async def test_console_redirects_to_sign_in_when_credential_is_missing_or_invalid(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    anonymous = await http.get(f"{gateway.url}/console/audit")
    forged = await http.get(f"{gateway.url}/console/audit", headers={"cookie": "bastion_console_token=bst_forged"})
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/console/login?next=")
    assert forged.status_code == 303 and forged.headers["location"].endswith("&again=1")
    assert 'bastion_console_token=""' in forged.headers["set-cookie"]
    login = await http.get(f"{gateway.url}/console/login", params={"next": "//evil.example/x"})
    assert 'value="/console/approvals"' in login.text  # an off-site next= is never followed
    assert login.headers["content-security-policy"].startswith("default-src 'none'")
