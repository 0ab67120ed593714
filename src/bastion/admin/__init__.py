"""Operator HTTP API (approvals), mounted at /admin; authenticated like the MCP endpoint."""
