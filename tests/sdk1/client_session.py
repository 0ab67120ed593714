"""Drive a Bastion-fronted MCP server with the official Python SDK **1.x** client; print what it saw.

Runs under tests/.venv-mcp1 (scripts/install-sdk1-client.sh), never under Bastion's own venv: the
1.x and 2.x SDKs share the import name `mcp`. tests/e2e/test_sdk1_client.py starts a gateway, runs

    tests/.venv-mcp1/bin/python tests/sdk1/client_session.py <gateway server URL> <scenario>

and asserts on the single JSON object this prints on stdout. Scenarios name the upstream behind
the gateway (`everything`: @modelcontextprotocol/server-everything; `conformance`:
tests/servers/conformance_server.py); each maps the same feature steps onto that server's tools.

Every step is recorded independently as {"ok": true, ...observations} or {"ok": false, "error":
...}, so one broken feature never hides the others. The exit status is 0 whenever the JSON was
printed (the test judges it); 2 if the session could not even be opened (the JSON then holds
"fatal").
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import traceback
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio
from mcp import ClientSession, types
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.context import RequestContext
from pydantic import AnyUrl

# `streamablehttp_client` is deprecated late in 1.x (in favour of `streamable_http_client`) but it
# is the one entry point every supported 1.x release has, and what deployed 1.x agents call.
warnings.filterwarnings("ignore", category=DeprecationWarning)

SAMPLED_TEXT = "sampled by the sdk1 client through bastion"
SAMPLED_MODEL = "sdk1-test-model"
ELICITED_STRING = "Ada via sdk1"
STEP_TIMEOUT_S = 20.0
LOG_WAIT_S = 12.0  # server-everything's simulated logging repeats every 5 s: two chances

SCENARIOS: dict[str, dict[str, Any]] = {
    "everything": {
        "call": ("echo", {"message": "héllo from sdk1 ✓"}),
        "resource": "demo://resource/static/document/architecture.md",
        "prompt": ("args-prompt", {"city": "Lyon", "state": "AURA"}),
        "progress": ("trigger-long-running-operation", {"duration": 0.3, "steps": 3}),
        # Sends one randomly-levelled log at once, then every 5 s, to the session (no request).
        "logging": ("toggle-simulated-logging", {}),
        "logging_off": ("toggle-simulated-logging", {}),
        "sampling": ("trigger-sampling-request", {"prompt": "haiku", "maxTokens": 7}),
        "elicitation": ("trigger-elicitation-request", {}),
    },
    "conformance": {
        "call": ("test_simple_text", {}),
        "resource": "test://static-text",
        "prompt": ("test_prompt_with_arguments", {"arg1": "alpha", "arg2": "beta"}),
        "progress": ("test_tool_with_progress", {}),
        # Logs three times while the call runs (related to the request).
        "logging": ("test_tool_with_logging", {}),
        "logging_off": None,
        "sampling": ("test_sampling", {"prompt": "write a haiku"}),
        "elicitation": ("test_elicitation", {"message": "What is your answer?"}),
    },
}


class Observed:
    """What the server sent this client outside replies."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []
        self.sampling: list[dict[str, Any]] = []
        self.elicitation: list[dict[str, Any]] = []
        self.elicited_with: list[dict[str, Any]] = []
        self.log_arrived = anyio.Event()

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append({"level": params.level, "logger": params.logger, "data": params.data})
        self.log_arrived.set()

    async def on_sampling(
        self, context: RequestContext[ClientSession, Any], params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.sampling.append(
            {
                "max_tokens": params.maxTokens,
                "messages": [getattr(m.content, "text", None) for m in params.messages],
            }
        )
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=SAMPLED_TEXT), model=SAMPLED_MODEL
        )

    async def on_elicitation(
        self, context: RequestContext[ClientSession, Any], params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        schema: dict[str, Any] = getattr(params, "requestedSchema", None) or {}
        self.elicitation.append({"message": params.message, "required": schema.get("required", [])})
        props: dict[str, Any] = schema.get("properties", {})
        by_type = {"string": ELICITED_STRING, "boolean": True, "integer": 7, "number": 7.5}
        content = {
            name: by_type.get(props.get(name, {}).get("type"), ELICITED_STRING) for name in schema.get("required", [])
        }
        self.elicited_with.append(content)
        return types.ElicitResult(action="accept", content=content)


def _texts(result: types.CallToolResult) -> list[str]:
    return [c.text for c in result.content if isinstance(c, types.TextContent)]


async def _step(steps: dict[str, Any], name: str, body: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    try:
        with anyio.fail_after(STEP_TIMEOUT_S + LOG_WAIT_S):
            steps[name] = {"ok": True, **await body()}
    except BaseException as exc:  # every failure is an observation, reported in the JSON
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        steps[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}


async def run(url: str, scenario: str, out: dict[str, Any]) -> None:
    """Open one session through ``url`` and fill ``out`` step by step (partial if the session dies)."""
    plan = SCENARIOS[scenario]
    seen = Observed()
    steps: dict[str, Any] = {}
    out["steps"] = steps
    timeout = timedelta(seconds=STEP_TIMEOUT_S)

    async with streamablehttp_client(url, timeout=STEP_TIMEOUT_S) as (read, write, _session_id):
        async with ClientSession(
            read,
            write,
            read_timeout_seconds=timeout,
            sampling_callback=seen.on_sampling,
            elicitation_callback=seen.on_elicitation,
            logging_callback=seen.on_log,
            client_info=types.Implementation(name="bastion-sdk1-e2e", version="1"),
        ) as session:
            with anyio.fail_after(STEP_TIMEOUT_S):
                init = await session.initialize()
            out["protocol_version"] = str(init.protocolVersion)
            out["server_name"] = init.serverInfo.name
            out["server_capabilities"] = init.capabilities.model_dump(exclude_none=True)

            async def tools() -> dict[str, Any]:
                return {"names": sorted(t.name for t in (await session.list_tools()).tools)}

            async def call() -> dict[str, Any]:
                name, args = plan["call"]
                result = await session.call_tool(name, args)
                return {"is_error": result.isError, "texts": _texts(result)}

            async def resource() -> dict[str, Any]:
                read_result = await session.read_resource(AnyUrl(plan["resource"]))
                first = read_result.contents[0]
                return {
                    "uri": str(first.uri),
                    "mime_type": first.mimeType,
                    "text": getattr(first, "text", None),
                }

            async def prompt() -> dict[str, Any]:
                name, args = plan["prompt"]
                got = await session.get_prompt(name, args)
                return {
                    "messages": [
                        {"role": m.role, "type": m.content.type, "text": getattr(m.content, "text", None)}
                        for m in got.messages
                    ]
                }

            async def progress() -> dict[str, Any]:
                name, args = plan["progress"]
                notes: list[list[Any]] = []

                async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                    notes.append([progress, total, message])

                result = await session.call_tool(name, args, progress_callback=on_progress)
                return {"notifications": notes, "is_error": result.isError, "texts": _texts(result)}

            async def logging() -> dict[str, Any]:
                observed: dict[str, Any] = {}
                try:
                    await session.set_logging_level("debug")
                    observed["set_level"] = "ok"
                except Exception as exc:  # recorded, not fatal: the log itself is what is under test
                    observed["set_level"] = f"{type(exc).__name__}: {exc}"
                name, args = plan["logging"]
                result = await session.call_tool(name, args)
                observed["texts"] = _texts(result)
                with anyio.move_on_after(LOG_WAIT_S):
                    await seen.log_arrived.wait()
                if plan["logging_off"] is not None:
                    off_name, off_args = plan["logging_off"]
                    await session.call_tool(off_name, off_args)
                observed["logs"] = list(seen.logs)
                return observed

            async def sampling() -> dict[str, Any]:
                name, args = plan["sampling"]
                result = await session.call_tool(name, args)
                return {
                    "requests": seen.sampling,
                    "answered_with": SAMPLED_TEXT,
                    "is_error": result.isError,
                    "texts": _texts(result),
                }

            async def elicitation() -> dict[str, Any]:
                name, args = plan["elicitation"]
                result = await session.call_tool(name, args)
                return {
                    "requests": seen.elicitation,
                    "answered_with": seen.elicited_with,
                    "is_error": result.isError,
                    "texts": _texts(result),
                }

            for step_name, body in [
                ("tools", tools),
                ("call", call),
                ("resource", resource),
                ("prompt", prompt),
                ("progress", progress),
                ("logging", logging),
                ("sampling", sampling),
                ("elicitation", elicitation),
            ]:
                await _step(steps, step_name, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "url", help="the gateway's per-server MCP endpoint, e.g. http://127.0.0.1:8000/servers/every/mcp"
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    args = parser.parse_args(argv)
    observed: dict[str, Any] = {
        "sdk_version": importlib.metadata.version("mcp"),
        "scenario": args.scenario,
        "url": args.url,
    }
    status = 0
    try:
        anyio.run(run, args.url, args.scenario, observed)
    except BaseException as exc:  # reported as JSON for the test to show
        if isinstance(exc, KeyboardInterrupt):
            raise
        observed["fatal"] = f"{type(exc).__name__}: {exc}"
        observed["traceback"] = traceback.format_exc()[-4000:]
        status = 2
    print(json.dumps(observed, default=str), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
