"""Upstream side: transports to MCP servers (stdio, Streamable HTTP, legacy SSE) and the
link that runs one MCP session over one of them (id correlation, timeouts, restarts)."""
