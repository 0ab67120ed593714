"""Echo upstream: a tiny MCP server with well-behaved and deliberately misbehaving tools, for gateway tests.

Tools (all built on the official `mcp` SDK, server side):

    echo(text)            -> `text`, unchanged
    slow(seconds)         -> sleeps `seconds` (progress 0 and 1 of 1 if the caller asked), then "slept <s>"
    crash()               -> the process exits with code 3 mid-call; no response is ever sent
    garbage(then)         -> writes a non-JSON line to stdout, then `then="continue"` returns "garbage sent"
                             or `then="exit"` exits with code 4 (a stdio-transport fault; over HTTP the
                             line goes to the process's stdout, which is not the transport)
    secrets()             -> text full of fake PII and secrets (see SECRETS below), for masking tests;
                             MCPServer also mirrors it into structuredContent {"result": ...}
    add_tool(name)        -> registers a new tool `name` (echoes like `echo`) and sends
                             notifications/tools/list_changed to the calling session
    remove_tool(name)     -> removes a tool added by add_tool and sends notifications/tools/list_changed
    whoami()              -> the server name, so federation tests can tell two instances apart

The server name is `--name NAME`, else $ECHO_SERVER_NAME, else "echo". Two instances with the same
tool names (and optionally the same server name) are how federation collisions are produced.
The initialize result advertises `tools.listChanged: true`.

Run it over stdio or Streamable HTTP:

    python tests/servers/echo_server.py stdio [--name alpha]
    python tests/servers/echo_server.py http --port 0 [--name beta]   # prints `READY http://127.0.0.1:<port>/mcp`

Deliberately ignores: resources, prompts and any persistence; added tools live in this process only
and are shared by all of its sessions.
"""

import argparse
import asyncio
import os
import sys
import warnings
from io import TextIOWrapper
from typing import Any, Literal

import anyio
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPDeprecationWarning

warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

READY_PREFIX = "READY "
CRASH_EXIT_CODE = 3
GARBAGE_EXIT_CODE = 4
GARBAGE_LINE = b"this line is not JSON-RPC {{{\n"

# Fake values only: documentation/test numbers that are published as examples.
SECRETS: dict[str, str] = {
    "email": "jane.doe@example.com",
    "card": "4111 1111 1111 1111",
    "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "phone": "+1 202-555-0143",
    "ssn": "078-05-1120",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "github_token": "ghp_EXAMPLEexampleEXAMPLEexample0123",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJlLW5vdC1yZWFs",
    "ipv4": "203.0.113.7",
}
SECRETS_TEXT = (
    f"Customer {SECRETS['email']} paid with card {SECRETS['card']} (phone {SECRETS['phone']}, "
    f"SSN {SECRETS['ssn']}, IBAN {SECRETS['iban']}) from {SECRETS['ipv4']}.\n"
    f"Deploy with AWS key {SECRETS['aws_access_key_id']} / {SECRETS['aws_secret_access_key']}, "
    f"GitHub token {SECRETS['github_token']}, session {SECRETS['jwt']}."
)


def build_server(server_name: str) -> MCPServer:
    """Build the echo server called `server_name`."""
    mcp: MCPServer = MCPServer(name=server_name, version="1.0.0", log_level="WARNING")
    added: set[str] = set()

    @mcp.tool(description="Return the given text unchanged.")
    def echo(text: str) -> str:
        return text

    @mcp.tool(description="Sleep for the given number of seconds, then answer (for timeout tests).")
    async def slow(seconds: float, ctx: Context) -> str:
        await ctx.report_progress(0, 1, "sleeping")
        await asyncio.sleep(seconds)
        await ctx.report_progress(1, 1, "awake")
        return f"slept {seconds}"

    @mcp.tool(description="Exit the server process in the middle of this call.")
    def crash() -> str:
        sys.stderr.write("echo_server: crash() called, exiting\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)

    @mcp.tool(description="Write a non-JSON line to stdout, then continue or exit.")
    def garbage(then: Literal["continue", "exit"] = "continue") -> str:
        os.write(1, GARBAGE_LINE)  # fd 1 is the wire in stdio mode (see serve_stdio); whole line, one write
        if then == "exit":
            os._exit(GARBAGE_EXIT_CODE)
        return "garbage sent"

    @mcp.tool(description="Return text that contains fake PII and secrets (for masking tests).")
    def secrets() -> str:
        return SECRETS_TEXT

    @mcp.tool(description="Return this server's name.")
    def whoami() -> str:
        return server_name

    @mcp.tool(description="Register a new echo-like tool and send notifications/tools/list_changed.")
    async def add_tool(name: str, ctx: Context) -> str:
        def dynamic(text: str) -> str:
            return text

        mcp.add_tool(dynamic, name=name, description=f"Dynamically added echo tool {name!r}.")
        added.add(name)
        await _announce_tools_changed(ctx)
        return f"added {name}"

    @mcp.tool(description="Remove a tool registered by add_tool and send notifications/tools/list_changed.")
    async def remove_tool(name: str, ctx: Context) -> str:
        if name not in added:
            raise ValueError(f"{name!r} was not added by add_tool")
        mcp.remove_tool(name)
        added.discard(name)
        await _announce_tools_changed(ctx)
        return f"removed {name}"

    _advertise_list_changed(mcp)
    return mcp


async def _announce_tools_changed(ctx: Context) -> None:
    await ctx.session.send_tool_list_changed()  # handshake-era sessions (2025-xx)
    await ctx.notify_tools_changed()  # subscriptions/listen streams (2026-07-28+)


def _advertise_list_changed(mcp: MCPServer) -> None:
    """Make every transport's initialize result say tools.listChanged=true.

    mcp 2.3 derives listChanged from NotificationOptions, which the HTTP session manager never
    passes; wrapping the lowlevel server's option factory is the one place both transports read.
    """
    low = mcp._lowlevel_server  # no public hook for NotificationOptions in mcp 2.3
    original = low.create_initialization_options

    def with_list_changed(
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> Any:
        options = notification_options or NotificationOptions(tools_changed=True)
        return original(options, experimental_capabilities, extensions)

    low.create_initialization_options = with_list_changed  # type: ignore[method-assign]


async def serve_stdio(mcp: MCPServer) -> None:
    """Serve on the real stdin/stdout.

    `MCPServer.run("stdio")` would divert fd 1 to stderr while serving (so stray prints miss the
    wire); passing explicit streams skips that diversion, which is what lets `garbage()` put a
    non-JSON line on the actual wire with os.write(1, ...).
    """
    stdin = anyio.wrap_file(TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace"))
    stdout = anyio.wrap_file(TextIOWrapper(sys.stdout.buffer, encoding="utf-8"))
    low = mcp._lowlevel_server  # what MCPServer.run_stdio_async drives, minus the diversion
    async with stdio_server(stdin, stdout) as (read_stream, write_stream):
        await low.run(read_stream, write_stream, low.create_initialization_options())


async def serve_http(mcp: MCPServer, host: str, port: int) -> None:
    """Serve Streamable HTTP on host:port (0 = any free port); announce the URL once the socket listens."""
    import socket

    import uvicorn

    app = mcp.streamable_http_app(host=host)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    url_host = f"[{host}]" if ":" in host else host
    print(f"{READY_PREFIX}http://{url_host}:{sock.getsockname()[1]}/mcp", flush=True)
    await uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on")).serve(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    """Parse `stdio` | `http [--host H] [--port N]`, plus `--name`, and serve until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=os.environ.get("ECHO_SERVER_NAME", "echo"))
    sub = parser.add_subparsers(dest="transport", required=True)
    stdio = sub.add_parser("stdio", help="serve on stdin/stdout")
    http = sub.add_parser("http", help="serve Streamable HTTP at /mcp")
    http.add_argument("--host", default="127.0.0.1")
    http.add_argument("--port", type=int, default=0, help="0 picks a free port (see the READY line)")
    for p in (stdio, http):  # accept --name after the transport too
        p.add_argument("--name", dest="name_after", default=None)
    args = parser.parse_args(argv)

    mcp = build_server(args.name_after or args.name)
    if args.transport == "stdio":
        anyio.run(serve_stdio, mcp)
    else:
        asyncio.run(serve_http(mcp, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
