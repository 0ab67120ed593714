"""Records of the federated endpoint ``/mcp``: every reply Bastion composes there (merged, renamed,
or its own) is recorded as the client receives it, before it is released, and is refused when it
cannot be recorded.

Upstreams: the reference server-everything over stdio (tools, resources, logging, completions)
and the Python echo server, which has no resources and does not log. The store is broken with the
SQLite trigger of tests/e2e/test_gateway_records.py.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
from mcp.server.mcpserver import MCPServer
from tests.e2e.gateway import MCP_HEADERS, echo_upstream, free_port, running_gateway, serve_in_thread
from tests.e2e.test_everything import STATIC_DOC_URI, everything_stdio
from tests.e2e.test_gateway_records import SCHEMA, records, set_store_broken

from bastion.jsonrpc import codes

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.anyio,
    # logging/setLevel and ping are deprecated as of 2026-07-28; they are what is under test here.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

WAIT_S = 20.0
PROTOCOL = "2025-11-25"
FEDERATED_DOC_URI = f"every+{STATIC_DOC_URI}"
UNRECORDABLE_SIZE = 2**60
"""Beyond ±2^53, so it has no canonical JSON form and a record that holds it cannot be written."""


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bastion-federated-") as name:
        yield Path(name)


@pytest.fixture
def gateway(workdir: Path) -> Iterator[str]:
    config = {"upstreams": {"every": everything_stdio(), "alpha": echo_upstream("alpha")}}
    with running_gateway(config, workdir=str(workdir)) as base:
        yield f"{base}/mcp"


def request(request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def reply_to(response: httpx.Response, request_id: int) -> dict[str, Any]:
    """The reply to one request as the client receives it, sent as JSON or on an SSE stream
    (server-everything announces and logs while it works; those messages travel with the reply)."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("application/json"):
        body = response.json()
        messages = body if isinstance(body, list) else [body]
    else:
        messages = [orjson.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    return next(m for m in messages if m.get("id") == request_id and "method" not in m)


async def post(http: httpx.AsyncClient, url: str, headers: dict[str, str], message: dict[str, Any]) -> dict[str, Any]:
    return reply_to(await http.post(url, json=message, headers=headers), message["id"])


async def open_session(
    http: httpx.AsyncClient, url: str, protocol: str = PROTOCOL
) -> tuple[dict[str, str], dict[str, Any]]:
    """Initialize a federated session; the headers every later request needs, and the initialize reply."""
    init = request(0, "initialize", {"protocolVersion": protocol, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}})
    response = await http.post(url, json=init, headers=MCP_HEADERS)
    initialized = reply_to(response, 0)
    headers = {**MCP_HEADERS, "mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": protocol}
    assert (await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)).status_code == 202
    return headers, initialized


def of_request(log: list[dict[str, Any]], method: str, jsonrpc_id: int) -> list[dict[str, Any]]:
    """The request and response records of one client request, of every upstream and of Bastion (``*``)."""
    return [
        r for r in log
        if r.get("what", {}).get("method") == method and r.get("correlation", {}).get("jsonrpc_id") == jsonrpc_id
    ]  # fmt: skip


def composed(log: list[dict[str, Any]], method: str, jsonrpc_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request and response records of the reply Bastion composed (upstream ``*``)."""
    own = [r for r in of_request(log, method, jsonrpc_id) if r["where"]["upstream"] == "*"]
    assert [r["kind"] for r in own] == ["request", "response"], own
    return own[0], own[1]


async def test_records_hold_the_merged_and_renamed_replies_as_the_federated_client_received_them(
    gateway: str, workdir: Path
) -> None:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        headers, initialized = await open_session(http, gateway)
        listed = await post(http, gateway, headers, request(1, "tools/list"))
        read = await post(http, gateway, headers, request(2, "resources/read", {"uri": FEDERATED_DOC_URI}))

    assert initialized["result"]["serverInfo"]["name"] == "bastion"
    names = {t["name"] for t in listed["result"]["tools"]}
    assert {"every__echo", "alpha__echo"} <= names
    assert read["result"]["contents"][0]["uri"] == FEDERATED_DOC_URI
    log = records(workdir)
    for method, jsonrpc_id, reply in [("initialize", 0, initialized), ("tools/list", 1, listed), ("resources/read", 2, read)]:
        asked, answered = composed(log, method, jsonrpc_id)
        assert answered["result"]["released"] == reply["result"], method
        assert answered["outcome"] == "ok" and answered["correlation"]["request_seq"] == asked["seq"]
        # The client's request is recorded before any upstream is asked, the reply after all answered.
        upstream_seqs = [r["seq"] for r in of_request(log, method, jsonrpc_id) if r["where"]["upstream"] != "*"]
        assert upstream_seqs and asked["seq"] < min(upstream_seqs) and max(upstream_seqs) < answered["seq"], method
    assert composed(log, "resources/read", 2)[0]["what"]["name"] == FEDERATED_DOC_URI  # as the client wrote it
    for record in log:
        jsonschema.validate(record, SCHEMA)


async def test_replies_bastion_gives_itself_are_recorded_and_set_level_reports_what_the_upstream_said(
    gateway: str, workdir: Path
) -> None:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        headers, _ = await open_session(http, gateway)
        pong = await post(http, gateway, headers, request(1, "ping"))
        unknown_ref = await post(http, gateway, headers, request(2, "completion/complete", {
            "ref": {"type": "ref/nothing"}, "argument": {"name": "a", "value": "b"}}))  # fmt: skip
        level_set = await post(http, gateway, headers, request(3, "logging/setLevel", {"level": "debug"}))
        bad_level = await post(http, gateway, headers, request(4, "logging/setLevel", {"level": "loudest"}))

    assert pong == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert unknown_ref["error"]["code"] == codes.INVALID_PARAMS
    assert level_set["result"] == {}  # server-everything took it; the echo server does not log and is not asked
    assert "error" in bad_level  # server-everything refused it, and so does the federated reply
    log = records(workdir)
    assert composed(log, "ping", 1)[1]["result"]["released"] == {}
    refused = of_request(log, "completion/complete", 2)
    assert [(r["kind"], r["outcome"], r["result"]["error"]) for r in refused] == [("response", "error", unknown_ref["error"])]
    assert composed(log, "logging/setLevel", 3)[1]["outcome"] == "ok"
    answered = composed(log, "logging/setLevel", 4)[1]
    assert (answered["outcome"], answered["result"]["error"]) == ("error", bad_level["error"])
    assert [r["where"]["upstream"] for r in of_request(log, "logging/setLevel", 4)] == ["*", "every", "every", "*"]


async def test_federated_replies_are_refused_when_the_store_cannot_write(gateway: str, workdir: Path) -> None:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        headers, _ = await open_session(http, gateway)
        assert "tools" in (await post(http, gateway, headers, request(1, "tools/list")))["result"]
        set_store_broken(workdir, True)
        refused = {
            method: await post(http, gateway, headers, request(10 + n, method, params))
            for n, (method, params) in enumerate([
                ("tools/list", None),
                ("resources/list", None),
                ("resources/read", {"uri": FEDERATED_DOC_URI}),
                ("logging/setLevel", {"level": "debug"}),
                ("ping", None),
                ("completion/complete", {"ref": {"type": "ref/nothing"}, "argument": {"name": "a", "value": "b"}}),
            ])
        }  # fmt: skip
        set_store_broken(workdir, False)
        assert "tools" in (await post(http, gateway, headers, request(20, "tools/list")))["result"]

    assert {method: reply.get("error", {}).get("code") for method, reply in refused.items()} == dict.fromkeys(
        refused, codes.AUDIT_UNAVAILABLE
    )
    recorded_ids = {r.get("correlation", {}).get("jsonrpc_id") for r in records(workdir)}
    assert not recorded_ids & set(range(10, 20))  # nothing refused was recorded later either


async def test_calls_that_arrive_together_list_the_upstream_once_before_policy_decides(gateway: str, workdir: Path) -> None:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        headers, _ = await open_session(http, gateway, protocol="2025-03-26")  # still allows batches
        calls = [request(n, "tools/call", {"name": name, "arguments": arguments})
                 for n, (name, arguments) in enumerate([("alpha__echo", {"text": "one"}), ("alpha__whoami", {})], start=1)]
        response = await http.post(gateway, content=orjson.dumps(calls), headers=headers)

    assert [reply_to(response, n)["result"]["content"][0]["text"] for n in (1, 2)] == ["one", "alpha"]
    listings = [r for r in records(workdir) if r.get("what", {}).get("method") == "tools/list"]
    assert [(r["where"]["upstream"], r["kind"]) for r in listings] == [("alpha", "request"), ("alpha", "response")]


@contextlib.contextmanager
def unrecordable_resources() -> Iterator[str]:
    """An SDK MCP server (Streamable HTTP) whose one resource is listed with an integer beyond ±2^53."""
    mcp = MCPServer(name="unrecordable", version="1.0.0", log_level="WARNING")

    @mcp.resource("file:///huge.bin", meta={"bytes": UNRECORDABLE_SIZE})
    def huge() -> str:
        return "huge"

    port = free_port()
    with serve_in_thread(mcp.streamable_http_app(host="127.0.0.1", json_response=True), port, WAIT_S):
        yield f"http://127.0.0.1:{port}/mcp"


async def test_listing_is_refused_as_a_whole_when_one_upstreams_part_cannot_be_recorded(workdir: Path) -> None:
    with unrecordable_resources() as url:
        config = {"upstreams": {"every": everything_stdio(), "huge": {"url": url}}}
        with running_gateway(config, workdir=str(workdir)) as base:
            async with httpx.AsyncClient(timeout=WAIT_S) as http:
                headers, _ = await open_session(http, f"{base}/mcp")
                listed = await post(http, f"{base}/mcp", headers, request(1, "resources/list"))

    # server-everything's part alone would pass for the whole listing: nothing is listed instead.
    assert listed["error"]["code"] == codes.MASKING_FAILED
    log = of_request(records(workdir), "resources/list", 1)
    huge = [(r["kind"], r.get("outcome")) for r in log if r["where"]["upstream"] == "huge"]
    assert huge == [("request", None), ("response", "error")]
    answered = composed(log, "resources/list", 1)[1]
    assert (answered["outcome"], answered["result"]["error"], "released" in answered["result"]) == ("error", listed["error"], False)
