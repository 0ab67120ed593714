"""Policy through a real gateway: precedence, per-caller listings, hidden tools, argument rules, rate
limits, approval-gated calls that are never let through alone, masking chosen by a rule, and hot reload under load.

Callers are JWT identities minted against a loopback JWKS (tests/unit/identity/support.py); the
upstream is an SDK MCP server in a thread. Every call is made in its own session so its audit
records are found by session id; each test asserts the wire reply and the audit record.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from mcp.server.mcpserver import MCPServer
from tests.e2e.gateway import free_port, running_gateway, serve_in_thread
from tests.e2e.test_identity import RawSession, identity_config, records
from tests.unit.identity.support import KeyServer, claims, mint, rsa_key

from bastion.jsonrpc import codes
from bastion.policy import PolicyEngine

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WAIT_S = 10.0
EMAIL = "jane.doe@example.com"
TOOLS = ("echo", "add", "search", "deploy", "reset")

POLICY: dict[str, Any] = {
    "default": "deny",
    "rules": [
        {"id": "eng-tools", "match": {"groups": ["eng"], "tool": ["echo", "search"]}, "action": "allow"},
        {"id": "eng-small-add", "match": {"groups": ["eng"], "tool": "add", "args": {"a": {"lt": 100}}},
         "action": "allow"},
        {"id": "ops-all", "match": {"groups": ["ops"]}, "action": "allow"},
        {"id": "no-reset", "match": {"tool": "reset"}, "action": "deny"},
        {"id": "no-rm-rf", "match": {"tool": "echo", "args": {"text": {"regex": r"rm\s+-rf"}}}, "action": "deny",
         "reason": "destructive shell text"},
        {"id": "search-budget", "match": {"tool": "search"}, "rate_limit": {"calls": 2, "per_s": 3600}},
        {"id": "add-needs-approval", "match": {"subject": "carol", "tool": "add"}, "action": "require_approval",
         "mode": "pending_error"},
        {"id": "mask-for-dave", "match": {"subject": "dave"}, "mask": ["pii"]},
    ],
}
CALLERS = {
    "alice": ["eng"],
    "bob": [],
    "carol": ["eng"],
    "dave": ["eng"],
    "oscar": ["ops"],
}


# -- upstream and gateway ---------------------------------------------------------------------------


def build_upstream() -> MCPServer:
    mcp = MCPServer(name="tools", version="1.0.0", log_level="WARNING")

    @mcp.tool(description="Return the given text unchanged.")
    def echo(text: str) -> str:
        return text

    @mcp.tool(description="Add two numbers.")
    def add(a: int, b: int) -> str:
        return str(a + b)

    @mcp.tool(description="Search.")
    def search(q: str) -> str:
        return f"results for {q}"

    @mcp.tool(description="Deploy.")
    def deploy() -> str:
        return "deployed"

    @mcp.tool(description="Reset everything.")
    def reset() -> str:
        return "reset done"

    return mcp


@contextlib.contextmanager
def upstream_in_thread() -> Iterator[str]:
    app = build_upstream().streamable_http_app(host="127.0.0.1", json_response=True)
    port = free_port()
    with serve_in_thread(app, port, WAIT_S):
        yield f"http://127.0.0.1:{port}/mcp"


@dataclass(frozen=True)
class Gateway:
    url: str
    workdir: str
    issuer: str

    def session(self, http: httpx.AsyncClient, subject: str, endpoint: str = "/servers/tools/mcp") -> RawSession:
        token = mint(rsa_key(), claims(self.issuer, sub=subject, groups=CALLERS.get(subject, [])))
        return RawSession(http, self.url + endpoint, {"authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def keys() -> Iterator[KeyServer]:
    with KeyServer() as server:
        server.set_keys(rsa_key().jwk)
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with upstream_in_thread() as url:
        yield url


@pytest.fixture(scope="module")
def gateway(keys: KeyServer, upstream: str) -> Iterator[Gateway]:
    with tempfile.TemporaryDirectory(prefix="bastion-e2e-policy-") as workdir:
        config = {
            "identity": identity_config(keys.issuer),
            "upstreams": {"tools": {"url": upstream}},
            "policy": POLICY,
            "masking": {"default_profiles": []},
        }
        with running_gateway(config, workdir=workdir) as url:
            yield Gateway(url, workdir, keys.issuer)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        yield client


async def call_in_new_session(gateway: Gateway, http: httpx.AsyncClient, subject: str, tool: str,
                              arguments: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(reply, the audit response record of the call)."""
    session = gateway.session(http, subject)
    assert (await session.initialize()).status_code == 200
    response, reply = await session.call_tool(tool, arguments)
    assert response.status_code == 200 and reply is not None
    return reply, await call_record(gateway.workdir, session)


async def call_record(workdir: str, session: RawSession) -> dict[str, Any]:
    found = [b for b in await records(workdir, session_id=session.session_id, kind="response")
             if b.get("what", {}).get("method") == "tools/call"]
    assert len(found) == 1, found
    return found[0]


# -- precedence -------------------------------------------------------------------------------------

OK = 0
TABLE = [
    # subject, tool, arguments, expected code (OK: a result), deciding rule, outcome in the audit record
    ("alice", "echo", {"text": "hi"}, OK, "eng-tools", "ok"),
    ("alice", "echo", {"text": "please rm -rf /"}, codes.POLICY_DENIED, "no-rm-rf", "denied"),  # deny beats allow
    ("alice", "add", {"a": 1, "b": 2}, OK, "eng-small-add", "ok"),
    ("alice", "add", {"a": 500, "b": 1}, codes.POLICY_DENIED, None, "denied"),  # no rule decides: default deny
    ("oscar", "deploy", {}, OK, "ops-all", "ok"),
    ("oscar", "echo", {"text": "rm  -rf ~"}, codes.POLICY_DENIED, "no-rm-rf", "denied"),  # deny beats ops-all
]


@pytest.mark.parametrize(("subject", "tool", "arguments", "code", "rule", "outcome"), TABLE,
                         ids=[f"{row[0]}-{row[1]}-{i}" for i, row in enumerate(TABLE)])
async def test_strictest_rule_decides_when_several_rules_match(
    gateway: Gateway, http: httpx.AsyncClient, subject: str, tool: str, arguments: dict[str, Any],
    code: int, rule: str | None, outcome: str
) -> None:
    reply, record = await call_in_new_session(gateway, http, subject, tool, arguments)

    if code == OK:
        assert "result" in reply and reply["result"].get("isError") is not True
    else:
        assert reply["error"]["code"] == code
        assert reply["error"]["data"]["rule"] == rule
    assert record["outcome"] == outcome
    assert record["decision"].get("rule_id") == rule
    if rule is None:  # the record says why no rule did
        assert record["decision"]["reason"] == "no rule decided; the policy default is deny"
    assert record["who"]["subject"] == subject


async def test_arguments_regex_denies_with_rule_in_data_when_text_matches(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    reply, record = await call_in_new_session(gateway, http, "oscar", "echo", {"text": "sudo rm -rf /var"})

    assert reply["error"]["code"] == codes.POLICY_DENIED
    assert reply["error"]["message"] == "destructive shell text"
    assert reply["error"]["data"]["rule"] == "no-rm-rf"
    assert record["decision"] == {"rule_id": "no-rm-rf", "action": "deny", "policy_hash": record["decision"]["policy_hash"],
                                  "reason": "destructive shell text"}  # the rule's own words
    assert record["outcome"] == "denied"
    assert record["result"]["error"]["code"] == codes.POLICY_DENIED


# -- listings and hidden tools ----------------------------------------------------------------------


@pytest.mark.parametrize(("subject", "visible"), [
    ("alice", {"echo", "add", "search"}),
    ("oscar", {"echo", "add", "search", "deploy"}),
    ("bob", set()),
])
async def test_tools_list_shows_only_usable_tools_when_callers_differ(
    gateway: Gateway, http: httpx.AsyncClient, subject: str, visible: set[str]
) -> None:
    session = gateway.session(http, subject)
    assert (await session.initialize()).status_code == 200
    response = await session.post({"jsonrpc": "2.0", "id": 7, "method": "tools/list"})

    assert response.status_code == 200
    listed = {tool["name"] for tool in response.json()["result"]["tools"]}
    assert listed == visible
    found = [b for b in await records(gateway.workdir, session_id=session.session_id, kind="response")
             if b.get("what", {}).get("method") == "tools/list"]
    assert len(found) == 1 and found[0]["outcome"] == "ok"
    assert {tool["name"] for tool in found[0]["result"]["released"]["tools"]} == visible


async def test_hidden_tool_gets_unknown_tool_error_when_called(gateway: Gateway, http: httpx.AsyncClient) -> None:
    reply, record = await call_in_new_session(gateway, http, "oscar", "reset", {})

    assert reply["error"] == {"code": codes.INVALID_PARAMS, "message": "Unknown tool: reset"}
    assert record["outcome"] == "denied"
    assert "rule_id" not in record.get("decision", {})  # the caller's error names no rule either


async def test_hidden_tool_answers_exactly_like_unknown_tool_when_called(gateway: Gateway, http: httpx.AsyncClient) -> None:
    hidden, hidden_record = await call_in_new_session(gateway, http, "oscar", "reset", {})
    unknown, unknown_record = await call_in_new_session(gateway, http, "oscar", "no_such_tool", {})

    shape = lambda reply, name: {**reply["error"], "message": reply["error"]["message"].replace(name, "<name>")}  # noqa: E731
    assert "error" in unknown, unknown
    assert shape(hidden, "reset") == shape(unknown, "no_such_tool")
    assert hidden_record["outcome"] == "denied" and unknown_record["outcome"] in {"denied", "error"}


async def test_hidden_federated_tool_is_named_as_called_when_refused(gateway: Gateway, http: httpx.AsyncClient) -> None:
    session = gateway.session(http, "oscar", endpoint="/mcp")
    assert (await session.initialize()).status_code == 200
    _, hidden = await session.call_tool("tools__reset", {})
    _, unknown = await session.call_tool("nosuch__reset", {})

    assert hidden is not None and unknown is not None
    assert hidden["error"]["code"] == unknown["error"]["code"] == codes.INVALID_PARAMS
    assert hidden["error"]["message"] == "Unknown tool: tools__reset"
    assert unknown["error"]["message"].removesuffix("nosuch__reset") == hidden["error"]["message"].removesuffix("tools__reset")


# -- rate limits, approval, masking -----------------------------------------------------------------


async def test_third_call_is_rate_limited_with_retry_after_when_budget_is_two(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    session = gateway.session(http, "alice")
    assert (await session.initialize()).status_code == 200
    replies = [(await session.call_tool("search", {"q": f"n{i}"}))[1] for i in range(3)]

    assert [r is not None and "result" in r for r in replies] == [True, True, False]
    error = replies[2]["error"]  # type: ignore[index]
    assert error["code"] == codes.RATE_LIMITED
    assert error["data"]["rule"] == "search-budget"
    assert 0 < error["data"]["retry_after_s"] <= 3600
    found = [b for b in await records(gateway.workdir, session_id=session.session_id, kind="response")
             if b.get("what", {}).get("method") == "tools/call"]
    assert [b["outcome"] for b in found] == ["ok", "ok", "denied"]
    assert found[2]["result"]["error"]["code"] == codes.RATE_LIMITED
    # The rule allowed; the limit refused: the record's decision says the latter.
    decision = found[2]["decision"]
    assert (decision["action"], decision["rule_id"]) == ("deny", "search-budget")
    assert decision["reason"].startswith("rate limit exceeded (2 calls per ")


async def test_approval_rule_never_allows_when_nobody_has_approved(gateway: Gateway, http: httpx.AsyncClient) -> None:
    # Since the approval service is always wired (app.py), "no service" cannot be configured any more;
    # the invariant checked is the same: require_approval never lets the call through on its own.
    reply, record = await call_in_new_session(gateway, http, "carol", "add", {"a": 1, "b": 1})

    assert reply["error"]["code"] == codes.APPROVAL_PENDING
    approval_id = reply["error"]["data"]["approval_id"]
    assert approval_id.startswith("apr_")
    assert record["outcome"] == "held"
    assert record["decision"]["rule_id"] == "add-needs-approval"
    assert record["decision"]["action"] == "require_approval"
    assert record["detail"]["approval_id"] == approval_id
    assert "released" not in record["result"]  # the upstream never ran


async def test_rule_mask_profile_redacts_email_when_caller_matches(gateway: Gateway, http: httpx.AsyncClient) -> None:
    masked, masked_record = await call_in_new_session(gateway, http, "dave", "echo", {"text": f"write to {EMAIL}"})
    clear, clear_record = await call_in_new_session(gateway, http, "alice", "echo", {"text": f"write to {EMAIL}"})

    assert masked["result"]["content"][0]["text"] == "write to [EMAIL]"
    assert clear["result"]["content"][0]["text"] == f"write to {EMAIL}"  # no default profile, no rule: not masked
    assert masked_record["masking"]["profiles"] == ["pii"]
    assert {f["detector"] for f in masked_record["masking"]["findings"]} == {"email"}
    assert EMAIL not in str(masked_record["result"])
    assert "masking" not in clear_record


# -- hot reload -------------------------------------------------------------------------------------

RELOAD_OLD = {"default": "deny", "rules": [{"id": "echo-ok", "match": {"tool": "echo"}, "action": "allow"}]}
RELOAD_NEW = {"default": "deny", "rules": [{"id": "echo-ok", "match": {"tool": "echo"}, "action": "allow"},
                                           {"id": "add-now-ok", "match": {"tool": "add"}, "action": "allow"}]}
WORKERS = 4
CALLS_PER_WORKER = 50


def write_atomically(path: Path, policy: dict[str, Any]) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(yaml.safe_dump({"policy": policy}))
    os.replace(scratch, path)


async def test_policy_file_rewrite_takes_effect_without_failed_calls_when_under_load(
    keys: KeyServer, upstream: str, http: httpx.AsyncClient
) -> None:
    with tempfile.TemporaryDirectory(prefix="bastion-e2e-reload-") as workdir:
        policy_path = Path(workdir) / "policy.yaml"
        write_atomically(policy_path, RELOAD_OLD)
        config = {"identity": identity_config(keys.issuer), "upstreams": {"tools": {"url": upstream}},
                  "policy_file": str(policy_path), "policy_reload_s": 0.05, "masking": {"default_profiles": []},
                  "policy": None}  # running_gateway fills in an inline policy unless told there is none
        with running_gateway(config, workdir=workdir) as url:
            gateway = Gateway(url, workdir, keys.issuer)
            failures: list[Any] = []
            done = 0
            half_way, switched = anyio.Event(), anyio.Event()

            async def worker(n: int) -> None:
                nonlocal done
                session = gateway.session(http, f"worker-{n}")
                assert (await session.initialize()).status_code == 200
                for i in range(CALLS_PER_WORKER):
                    response, reply = await session.call_tool("echo", {"text": f"{n}-{i}"})
                    if response.status_code != 200 or reply is None or reply.get("result", {}).get("content", [{}])[0].get("text") != f"{n}-{i}":
                        failures.append((response.status_code, reply))
                    done += 1
                    if done >= WORKERS * CALLS_PER_WORKER // 4:
                        half_way.set()
                    if i == CALLS_PER_WORKER - 10:  # keep the last calls for after the switch
                        await switched.wait()

            async def reloader() -> None:
                await half_way.wait()
                write_atomically(policy_path, RELOAD_NEW)
                probe = gateway.session(http, "prober")
                assert (await probe.initialize()).status_code == 200
                while True:  # bounded by the fail_after below
                    _, reply = await probe.call_tool("add", {"a": 2, "b": 3})
                    if reply is not None and "result" in reply:
                        break
                    assert reply is not None and reply["error"]["code"] == codes.INVALID_PARAMS  # hidden before
                    await anyio.sleep(0.02)
                switched.set()

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tasks:
                    for n in range(WORKERS):
                        tasks.start_soon(worker, n)
                    tasks.start_soon(reloader)
        bodies = await records(workdir, kind="config_changed")
        started = await records(workdir, kind="gateway_started")

    assert failures == []
    assert done == WORKERS * CALLS_PER_WORKER
    old_hash = PolicyEngine.from_mapping(RELOAD_OLD).policy_hash
    new_hash = PolicyEngine.from_mapping(RELOAD_NEW).policy_hash
    assert started[0]["detail"]["policy_hash"] == old_hash
    assert [b["detail"] for b in bodies] == [
        {"what": "policy", "old_policy_hash": old_hash, "new_policy_hash": new_hash}]
