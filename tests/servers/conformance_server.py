"""Conformance-target upstream: an MCP server that offers everything `@modelcontextprotocol/conformance` calls.

Owns: the tools, resources, resource template, prompts, logging, completion and subscription
handlers that the *server* scenarios of the conformance suite (pinned in tests/node/package.json)
exercise, with the exact names, arguments and response shapes those scenarios check. It is built on
the official `mcp` SDK (server side) so that Bastion can front a real, spec-following upstream.

Run it over stdio or Streamable HTTP:

    python tests/servers/conformance_server.py stdio
    python tests/servers/conformance_server.py http --port 8931     # endpoint http://127.0.0.1:8931/mcp
    python tests/servers/conformance_server.py http --port 0        # pick a free port

In HTTP mode the server binds its socket *before* it announces itself, then prints exactly one line
`READY http://127.0.0.1:<port>/mcp` on stdout; a test reads that line instead of polling the port.

Deliberately ignores: authentication, persistence, and the 2026-07-28 protocol era features
(InputRequiredResult, subscriptions/listen) that no 0.1.x server scenario calls.
"""

import argparse
import asyncio
import json
import sys
import warnings
from collections.abc import Mapping
from typing import Any

from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.mcpserver.tools.base import Tool as SdkTool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.types import (
    AudioContent,
    Completion,
    CompletionArgument,
    CompletionContext,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    JSONRPCMessage,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)

# Logging, sampling and the handshake-era subscription handlers are deprecated as of the
# 2026-07-28 revision (SEP-2577), but the 2025-06-18/2025-11-25 scenarios call exactly them.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

SERVER_NAME = "bastion-conformance-upstream"
READY_PREFIX = "READY "

# A 1x1 red PNG and a minimal WAV header, base64 encoded (the payloads the scenarios accept).
PNG_1X1_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_MIN_B64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

# SEP-1613: tools/list must carry this schema verbatim ($schema, $defs, additionalProperties).
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}

# SEP-1034: one field per primitive type, each with a default.
SEP1034_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}

# SEP-1330: the five enum shapes (untitled/titled single, legacy enumNames, untitled/titled multi).
SEP1330_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Select one option",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Select one option with titles",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Select one option (legacy)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Select multiple options",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Select multiple options with titles",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
    "required": [],
}

RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"response": {"type": "string", "description": "User's response"}},
    "required": ["response"],
}

# The scenarios pace their notifications ~50 ms apart; this is pacing, not synchronisation.
NOTIFICATION_GAP_S = 0.05


class MemoryEventStore(EventStore):
    """Keeps every SSE event in memory so a client can resume a stream with Last-Event-ID (SEP-1699)."""

    def __init__(self) -> None:
        self._events: list[tuple[str, int, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = len(self._events) + 1
        self._events.append((stream_id, event_id, message))
        return str(event_id)

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        if not last_event_id.isdigit():
            return None
        after = int(last_event_id)
        if not 1 <= after <= len(self._events):
            return None
        stream_id = self._events[after - 1][0]
        for sid, event_id, message in self._events[after:]:
            if sid == stream_id and message is not None:  # None rows are priming cursors
                await send_callback(EventMessage(message, str(event_id)))
        return stream_id


def _progress_token(ctx: Context) -> str | int | None:
    params: Mapping[str, Any] | None = ctx.request_context.params
    meta = (params or {}).get("_meta") or {}
    token = meta.get("progressToken")
    return token if isinstance(token, str | int) else None


def _json_schema_tool() -> SdkTool:
    def json_schema_2020_12_tool(name: str | None = None, address: dict[str, str] | None = None) -> str:
        return f"JSON Schema 2020-12 tool called with: {json.dumps({'name': name, 'address': address})}"

    tool = SdkTool.from_function(
        json_schema_2020_12_tool,
        description="Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
    )
    tool.parameters = JSON_SCHEMA_2020_12
    return tool


def build_server() -> MCPServer:
    """Build the conformance-target server (one instance serves every session)."""
    mcp: MCPServer = MCPServer(name=SERVER_NAME, version="1.0.0", tools=[_json_schema_tool()], log_level="WARNING")
    subscriptions: set[str] = set()

    # ----- tools -----
    @mcp.tool(description="Tests simple text content response")
    def test_simple_text() -> str:
        return "This is a simple text response for testing."

    @mcp.tool(description="Tests image content response")
    def test_image_content() -> list[ImageContent]:
        return [ImageContent(type="image", data=PNG_1X1_B64, mime_type="image/png")]

    @mcp.tool(description="Tests audio content response")
    def test_audio_content() -> list[AudioContent]:
        return [AudioContent(type="audio", data=WAV_MIN_B64, mime_type="audio/wav")]

    @mcp.tool(description="Tests embedded resource content response")
    def test_embedded_resource() -> list[EmbeddedResource]:
        resource = TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        )
        return [EmbeddedResource(type="resource", resource=resource)]

    @mcp.tool(description="Tests response with multiple content types (text, image, resource)")
    def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
        resource = TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}),
        )
        return [
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=PNG_1X1_B64, mime_type="image/png"),
            EmbeddedResource(type="resource", resource=resource),
        ]

    @mcp.tool(description="Tests tool that emits log messages during execution")
    async def test_tool_with_logging(ctx: Context) -> str:
        for step, text in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
            if step:
                await asyncio.sleep(NOTIFICATION_GAP_S)
            await ctx.log("info", text, logger_name=SERVER_NAME)
        return "Tool with logging executed successfully"

    @mcp.tool(description="Tests tool that reports progress notifications")
    async def test_tool_with_progress(ctx: Context) -> str:
        for step, done in enumerate((0, 50, 100)):
            if step:
                await asyncio.sleep(NOTIFICATION_GAP_S)
            await ctx.report_progress(progress=done, total=100, message=f"Completed step {done} of 100")
        return str(_progress_token(ctx) if _progress_token(ctx) is not None else 0)

    @mcp.tool(description="Tests error response handling")
    def test_error_handling() -> str:
        raise RuntimeError("This tool intentionally returns an error for testing")

    @mcp.tool(description="Tests SSE stream disconnection and client reconnection (SEP-1699)")
    async def test_reconnection(ctx: Context) -> str:
        await ctx.close_sse_stream()  # no-op unless HTTP with an event store and a 2025-11-25+ client
        await asyncio.sleep(0.1)  # give the client its retry window, as the reference server does
        return "Reconnection test completed successfully."

    @mcp.tool(description="Tests server-initiated sampling (LLM completion request)")
    async def test_sampling(prompt: str, ctx: Context) -> str:
        try:
            result = await ctx.session.create_message(
                messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
                max_tokens=100,
                related_request_id=ctx.request_id,
            )
        except MCPError as exc:  # the client refused or cannot be asked
            return f"Sampling not supported or error: {exc}"
        content = result.content
        text = content.text if isinstance(content, TextContent) else "No response"
        return f"LLM response: {text}"

    async def _elicit(ctx: Context, message: str, schema: dict[str, Any], label: str) -> str:
        try:
            result = await ctx.session.elicit_form(
                message=message, requested_schema=schema, related_request_id=ctx.request_id
            )
        except MCPError as exc:
            return f"Elicitation not supported or error: {exc}"
        return f"{label}: action={result.action}, content={json.dumps(result.content or {})}"

    @mcp.tool(description="Tests server-initiated elicitation (user input request)")
    async def test_elicitation(message: str, ctx: Context) -> str:
        return await _elicit(ctx, message, RESPONSE_SCHEMA, "User response")

    @mcp.tool(description="Tests elicitation with default values per SEP-1034")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        message = "Please review and update the form fields with defaults"
        return await _elicit(ctx, message, SEP1034_SCHEMA, "Elicitation completed")

    @mcp.tool(description="Tests elicitation with enum schema improvements per SEP-1330")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        message = "Please select options from the enum fields"
        return await _elicit(ctx, message, SEP1330_SCHEMA, "Elicitation completed")

    # ----- resources -----
    @mcp.resource("test://static-text", name="static-text", title="Static Text Resource",
                  description="A static text resource for testing", mime_type="text/plain")  # fmt: skip
    def static_text() -> str:
        return "This is the content of the static text resource."

    @mcp.resource("test://static-binary", name="static-binary", title="Static Binary Resource",
                  description="A static binary resource (image) for testing", mime_type="image/png")  # fmt: skip
    def static_binary() -> bytes:
        import base64

        return base64.b64decode(PNG_1X1_B64)

    @mcp.resource("test://template/{id}/data", name="template", title="Resource Template",
                  description="A resource template with parameter substitution", mime_type="application/json")  # fmt: skip
    def template(id: str) -> str:  # the URI variable is called id
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @mcp.resource("test://watched-resource", name="watched-resource", title="Watched Resource",
                  description="A resource clients can subscribe to", mime_type="text/plain")  # fmt: skip
    def watched() -> str:
        return "Watched resource content"

    # ----- prompts -----
    @mcp.prompt(title="Simple Test Prompt", description="A simple prompt without arguments")
    def test_simple_prompt() -> list[UserMessage]:
        return [UserMessage(content=TextContent(type="text", text="This is a simple prompt for testing."))]

    @mcp.prompt(title="Prompt With Arguments", description="A prompt with required arguments")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
        return [UserMessage(content=TextContent(type="text", text=text))]

    @mcp.prompt(title="Prompt With Embedded Resource", description="A prompt that includes an embedded resource")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # wire name
        resource = TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            UserMessage(content=EmbeddedResource(type="resource", resource=resource)),
            UserMessage(content=TextContent(type="text", text="Please process the embedded resource above.")),
        ]

    @mcp.prompt(title="Prompt With Image", description="A prompt that includes image content")
    def test_prompt_with_image() -> list[UserMessage]:
        return [
            UserMessage(content=ImageContent(type="image", data=PNG_1X1_B64, mime_type="image/png")),
            UserMessage(content=TextContent(type="text", text="Please analyze the image above.")),
        ]

    # ----- completion -----
    @mcp.completion()  # type: ignore[no-untyped-call, untyped-decorator]  # untyped in mcp 2.3
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion:
        if isinstance(ref, PromptReference) and ref.name == "test_prompt_with_arguments":
            values = [v for v in ("test", "testValue1", "testValue2") if v.startswith(argument.value)]
            return Completion(values=values, total=len(values), has_more=False)
        return Completion(values=[], total=0, has_more=False)

    # ----- logging level, subscriptions (handshake-era handlers; MCPServer has no public hook) -----
    async def set_level(ctx: ServerRequestContext[Any], params: SetLevelRequestParams) -> EmptyResult:
        return EmptyResult()

    async def subscribe(ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        subscriptions.add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
        subscriptions.discard(str(params.uri))
        return EmptyResult()

    low = mcp._lowlevel_server  # the documented way to add these handlers in mcp 2.3
    low.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    low.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    return mcp


async def serve_http(mcp: MCPServer, host: str, port: int) -> None:
    """Serve Streamable HTTP on host:port (0 = any free port); announce the URL once the socket listens."""
    import socket

    import uvicorn

    app = mcp.streamable_http_app(event_store=MemoryEventStore(), retry_interval=100, host=host)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    print(f"{READY_PREFIX}http://{url_host}:{bound_port}/mcp", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    """Parse `stdio` | `http [--host H] [--port N]` and serve until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="transport", required=True)
    sub.add_parser("stdio", help="serve on stdin/stdout")
    http = sub.add_parser("http", help="serve Streamable HTTP at /mcp")
    http.add_argument("--host", default="127.0.0.1")
    http.add_argument("--port", type=int, default=0, help="0 picks a free port (see the READY line)")
    args = parser.parse_args(argv)

    mcp = build_server()
    if args.transport == "stdio":
        mcp.run("stdio")
    else:
        asyncio.run(serve_http(mcp, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
