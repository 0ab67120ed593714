"""The official Python SDK **1.x** client through Bastion: every feature family, both directions.

Bastion's own venv holds mcp 2.x, and 1.x cannot share it, so the 1.x client lives in
tests/.venv-mcp1 (scripts/install-sdk1-client.sh; `make sdk1`, which `make test` runs) and is
driven as a subprocess: tests/sdk1/client_session.py opens one Streamable HTTP session to the
gateway, exercises list/call tools, read a resource, get a prompt, progress, logging, sampling and
elicitation, and prints one JSON object of what it observed. Each upstream gets one session
(module-scoped fixture); each test below asserts on one feature of it.

Upstreams: @modelcontextprotocol/server-everything over stdio, and tests/servers/conformance_server.py
over Streamable HTTP.

If the 1.x venv cannot be created (typically: no network to PyPI) the tests *fail* with the
installer's output: the 1.x client is a supported-client requirement, and a skip would let the
suite go green without ever having checked it. Deselect with `-m "not e2e"` to run offline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.gateway import ROOT, running_gateway

sys.path.insert(0, str(ROOT / "tests" / "conformance"))
try:
    from harness import find_node, serve_upstream
finally:
    sys.path.remove(str(ROOT / "tests" / "conformance"))

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

INSTALLER = ROOT / "scripts" / "install-sdk1-client.sh"
CLIENT = ROOT / "tests" / "sdk1" / "client_session.py"
EVERYTHING = (
    ROOT / "tests" / "node" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)
CONFORMANCE_SERVER = ROOT / "tests" / "servers" / "conformance_server.py"
INSTALL_TIMEOUT_S = 600.0
SESSION_TIMEOUT_S = 120.0

# What tests/sdk1/client_session.py answers with (it runs under another venv: no import).
SAMPLED_TEXT = "sampled by the sdk1 client through bastion"
ELICITED_STRING = "Ada via sdk1"

UPSTREAMS = ["everything", "conformance"]
EXPECT: dict[str, dict[str, Any]] = {
    "everything": {
        "server_name": "mcp-servers/everything",
        # The sampling/elicitation tools are registered only because the 1.x client's
        # capabilities crossed the gateway in initialize.
        "tools": {
            "echo",
            "trigger-long-running-operation",
            "toggle-simulated-logging",
            "trigger-sampling-request",
            "trigger-elicitation-request",
        },
        "call_texts": ["Echo: héllo from sdk1 ✓"],
        "resource": ("demo://resource/static/document/architecture.md", "text/markdown"),
        "prompt_texts": ["What's weather in Lyon, AURA?"],
        "progress": [[1.0, 3.0, None], [2.0, 3.0, None], [3.0, 3.0, None]],
        "progress_text_prefix": "Long running operation completed",
        "sampling_request": {"max_tokens": 7, "messages": ["Resource trigger-sampling-request context: haiku"]},
        "elicitation_required": ["name"],
    },
    "conformance": {
        "server_name": "bastion-conformance-upstream",
        "tools": {
            "test_simple_text",
            "test_tool_with_progress",
            "test_tool_with_logging",
            "test_sampling",
            "test_elicitation",
        },
        "call_texts": ["This is a simple text response for testing."],
        "resource": ("test://static-text", "text/plain"),
        "prompt_texts": ["Prompt with arguments: arg1='alpha', arg2='beta'"],
        "progress": [
            [0.0, 100.0, "Completed step 0 of 100"],
            [50.0, 100.0, "Completed step 50 of 100"],
            [100.0, 100.0, "Completed step 100 of 100"],
        ],
        "progress_text_prefix": "",  # the tool echoes the progress token the gateway forwarded
        "sampling_request": {"max_tokens": 100, "messages": ["write a haiku"]},
        "elicitation_required": ["response"],
    },
}


@pytest.fixture(scope="module")
def sdk1_python() -> Path:
    """The 1.x venv's interpreter, installed (idempotently) by the same script `make sdk1` runs."""
    try:
        done = subprocess.run(
            ["bash", str(INSTALLER)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, cwd=ROOT
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{INSTALLER} did not finish within {INSTALL_TIMEOUT_S:.0f}s (pip stuck on the network?): {exc}")
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not last.startswith("mcp1: 1."):
        pytest.fail(
            "cannot create the MCP Python SDK 1.x client venv (tests/.venv-mcp1) needed to test Bastion "
            f"against 1.x clients: `bash {INSTALLER.relative_to(ROOT)}` exited {done.returncode}. It needs "
            "PyPI (or a pip index / find-links serving mcp>=1.20,<2). Run `make sdk1` with network access, "
            "or deselect with -m 'not e2e'.\n"
            f"--- stdout ---\n{done.stdout[-2000:]}\n--- stderr ---\n{done.stderr[-4000:]}"
        )
    _, _version, python = last.split(" ", 2)
    return Path(python)


def run_sdk1_session(python: Path, url: str, scenario: str) -> dict[str, Any]:
    """Run the 1.x client script against ``url``; return its JSON, failing with its output otherwise."""
    cmd = [str(python), str(CLIENT), url, scenario]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=SESSION_TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"sdk1 client ({scenario}) did not finish within {SESSION_TIMEOUT_S:.0f}s: {exc}\n{exc.stderr!r}")
    try:
        seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        pytest.fail(
            f"sdk1 client ({scenario}) printed no JSON (exit {done.returncode})\n"
            f"--- stdout ---\n{done.stdout[-2000:]}\n--- stderr ---\n{done.stderr[-4000:]}"
        )
    if "fatal" in seen:
        pytest.fail(f"sdk1 client ({scenario}) could not hold a session: {seen['fatal']}\n{seen.get('traceback', '')}")
    return seen


@pytest.fixture(scope="module")
def everything_session(sdk1_python: Path) -> dict[str, Any]:
    upstream = {"command": [str(find_node()), str(EVERYTHING), "stdio"], "timeout_s": 20.0}
    with running_gateway({"store": "sqlite:///:memory:", "upstreams": {"every": upstream}}) as base:
        return run_sdk1_session(sdk1_python, f"{base}/servers/every/mcp", "everything")


@pytest.fixture(scope="module")
def conformance_session(sdk1_python: Path) -> Iterator[dict[str, Any]]:
    with serve_upstream(CONFORMANCE_SERVER) as upstream_url:
        upstream = {"url": upstream_url, "transport": "streamable-http", "timeout_s": 20.0}
        with running_gateway({"store": "sqlite:///:memory:", "upstreams": {"conf": upstream}}) as base:
            yield run_sdk1_session(sdk1_python, f"{base}/servers/conf/mcp", "conformance")


@pytest.fixture(params=UPSTREAMS)
def seen(request: pytest.FixtureRequest) -> dict[str, Any]:
    """One upstream's observed session, with its expectations under the ``expect`` key."""
    observed: dict[str, Any] = request.getfixturevalue(f"{request.param}_session")
    return {**observed, "expect": EXPECT[request.param]}


def step(seen: dict[str, Any], name: str) -> dict[str, Any]:
    got: dict[str, Any] = seen["steps"].get(name, {"ok": False, "error": "step never ran"})
    assert got["ok"], f"{seen['scenario']}: step {name!r} failed in the 1.x client: {got.get('error')}"
    return got


async def test_session_is_initialized_when_client_speaks_sdk1(seen: dict[str, Any]) -> None:
    assert seen["sdk_version"].startswith("1.")
    assert seen["server_name"] == seen["expect"]["server_name"]
    assert seen["protocol_version"] >= "2025-06-18"
    assert {"tools", "resources", "prompts", "logging"} <= set(seen["server_capabilities"])


async def test_tools_are_listed_when_sdk1_client_asks(seen: dict[str, Any]) -> None:
    assert seen["expect"]["tools"] <= set(step(seen, "tools")["names"])


async def test_tool_result_is_returned_when_sdk1_client_calls(seen: dict[str, Any]) -> None:
    got = step(seen, "call")
    assert got["is_error"] is False
    assert got["texts"] == seen["expect"]["call_texts"]


async def test_resource_text_is_returned_when_sdk1_client_reads(seen: dict[str, Any]) -> None:
    got = step(seen, "resource")
    uri, mime_type = seen["expect"]["resource"]
    assert (got["uri"], got["mime_type"]) == (uri, mime_type)
    if seen["scenario"] == "everything":
        on_disk = (EVERYTHING.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
        assert got["text"] == on_disk
    else:
        assert got["text"] == "This is the content of the static text resource."


async def test_prompt_messages_are_rendered_when_sdk1_client_gets_prompt(seen: dict[str, Any]) -> None:
    got = step(seen, "prompt")
    assert [m["role"] for m in got["messages"]] == ["user"]
    assert [m["text"] for m in got["messages"]] == seen["expect"]["prompt_texts"]


async def test_progress_notifications_reach_sdk1_callback_when_tool_reports(seen: dict[str, Any]) -> None:
    got = step(seen, "progress")
    assert got["is_error"] is False
    assert got["notifications"] == seen["expect"]["progress"]
    assert got["texts"][0].startswith(seen["expect"]["progress_text_prefix"])


async def test_log_notifications_reach_sdk1_callback_when_server_logs(seen: dict[str, Any]) -> None:
    got = step(seen, "logging")
    assert got["set_level"] == "ok"
    assert got["logs"], f"no notifications/message reached the 1.x logging_callback: {got}"
    if seen["scenario"] == "everything":
        # Randomly levelled, sent at once and every 5 s; not tied to any request.
        assert all("message" in log["data"] for log in got["logs"]), got["logs"]
    else:
        assert [log["data"] for log in got["logs"]] == [
            "Tool execution started",
            "Tool processing data",
            "Tool execution completed",
        ]
        assert {(log["level"], log["logger"]) for log in got["logs"]} == {("info", "bastion-conformance-upstream")}


async def test_sampling_request_is_answered_by_sdk1_callback_when_tool_asks(seen: dict[str, Any]) -> None:
    got = step(seen, "sampling")
    assert got["requests"] == [seen["expect"]["sampling_request"]]
    assert got["is_error"] is False
    assert got["answered_with"] == SAMPLED_TEXT
    if seen["scenario"] == "everything":
        sampled = json.loads(got["texts"][0].split("\n", 1)[1])
        assert sampled == {
            "model": "sdk1-test-model",
            "role": "assistant",
            "content": {"type": "text", "text": SAMPLED_TEXT},
        }
    else:
        assert got["texts"] == [f"LLM response: {SAMPLED_TEXT}"]


async def test_elicitation_request_is_answered_by_sdk1_callback_when_tool_asks(seen: dict[str, Any]) -> None:
    got = step(seen, "elicitation")
    required = seen["expect"]["elicitation_required"]
    assert [r["required"] for r in got["requests"]] == [required]
    assert got["answered_with"] == [dict.fromkeys(required, ELICITED_STRING)]
    assert got["is_error"] is False
    if seen["scenario"] == "everything":
        assert got["texts"][0] == "✅ User provided the requested information!"
        assert f"- Name: {ELICITED_STRING}" in got["texts"][1]
    else:
        assert got["texts"] == [f'User response: action=accept, content={{"response": "{ELICITED_STRING}"}}']
