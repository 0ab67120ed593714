"""The conformance suite run directly against tests/servers/conformance_server.py (no gateway in between).

This is the baseline the through-the-gateway run is compared with: if a scenario fails here, the
upstream (or the pinned suite) is at fault, not Bastion. Needs scripts/install-test-peers.sh first;
without the peers these tests fail with a HarnessError that says so (they never skip).
"""

import json

import httpx
import pytest
from harness import CONFORMANCE_SERVER, run_server_suite, serve_upstream

pytestmark = pytest.mark.e2e

# Every server scenario of @modelcontextprotocol/conformance 0.1.16 (`conformance list --server`).
EXPECTED_SCENARIOS = frozenset(
    {
        "server-initialize", "logging-set-level", "ping", "completion-complete", "tools-list",
        "tools-call-simple-text", "tools-call-image", "tools-call-audio", "tools-call-embedded-resource",
        "tools-call-mixed-content", "tools-call-with-logging", "tools-call-error", "tools-call-with-progress",
        "tools-call-sampling", "tools-call-elicitation", "json-schema-2020-12", "elicitation-sep1034-defaults",
        "server-sse-polling", "server-sse-multiple-streams", "elicitation-sep1330-enums", "resources-list",
        "resources-read-text", "resources-read-binary", "resources-templates-read", "resources-subscribe",
        "resources-unsubscribe", "prompts-list", "prompts-get-simple", "prompts-get-with-args",
        "prompts-get-embedded-resource", "prompts-get-with-image", "dns-rebinding-protection",
    }
)  # fmt: skip
# 44 SUCCESS checks were observed with conformance 0.1.16 + mcp 2.3.0; a drop means lost coverage.
MIN_PASSED_CHECKS = 44
SUITE_TIMEOUT_S = 240.0
HTTP_TIMEOUT = httpx.Timeout(10.0)


def test_full_suite_passes_directly() -> None:
    with serve_upstream(CONFORMANCE_SERVER) as url:
        result = run_server_suite(url, timeout_s=SUITE_TIMEOUT_S)

    assert result.failed == 0, result.describe_failures()
    assert result.exit_code == 0
    assert {s.name for s in result.scenarios} == EXPECTED_SCENARIOS
    assert result.scenarios_failed == 0
    assert result.passed >= MIN_PASSED_CHECKS, f"only {result.passed} checks passed"
    # Every scenario except server-sse-polling (all-warning/INFO in 0.1.16, see docs/conformance.md)
    # must have produced at least one SUCCESS check, so none of them passed by doing nothing.
    empty = [s.name for s in result.scenarios if s.passed == 0 and s.name != "server-sse-polling"]
    assert empty == []


def test_single_scenario_run_is_parsed() -> None:
    with serve_upstream(CONFORMANCE_SERVER) as url:
        result = run_server_suite(url, timeout_s=60.0, scenario="elicitation-sep1034-defaults")

    assert [s.name for s in result.scenarios] == ["elicitation-sep1034-defaults"]
    assert (result.passed, result.failed) == (5, 0)


def _sse_events(body: str) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events


def test_sse_stream_resumes_with_last_event_id() -> None:
    """SEP-1699 with the negotiated protocol header (0.1.16's server-sse-polling sends 2025-03-26,
    which makes the SDK skip priming events, so the suite itself cannot observe this)."""
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "test_reconnection"}}
    with serve_upstream(CONFORMANCE_SERVER) as url, httpx.Client(timeout=HTTP_TIMEOUT) as http:
        session = http.post(url, headers=headers, json=init).headers["mcp-session-id"]
        headers |= {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})

        first = _sse_events(http.post(url, headers=headers, json=call).text)
        # The server closed the POST stream after the priming event, before answering.
        assert len(first) == 1 and first[0]["data"] == "" and first[0]["retry"] == "100"

        resume = {**headers, "accept": "text/event-stream", "last-event-id": first[0]["id"]}
        answer: dict[str, object] | None = None
        with http.stream("GET", url, headers=resume) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:") and line[5:].strip():
                    message = json.loads(line[5:])
                    if message.get("id") == 1:
                        answer = message
                        break
    assert answer is not None
    assert answer["result"]["content"][0]["text"].startswith("Reconnection test completed")  # type: ignore[index]
