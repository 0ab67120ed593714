"""The upstream transport protocol: deliver messages to a server and report what it sends.

A transport moves whole JSON-RPC messages; it reports each incoming message together with the
id of the request it belongs to when the wire says so (the POST stream it arrived on).
"""

from __future__ import annotations

from typing import Protocol

from bastion.jsonrpc.envelope import Message, RequestId


class TransportListener(Protocol):
    """What a transport tells the link above it."""

    async def on_message(self, message: Message, related_id: RequestId | None) -> None:
        """A valid JSON-RPC message arrived (``related_id``: the request whose stream carried it)."""

    def on_invalid(self, description: str, related_id: RequestId | None) -> None:
        """The server sent something that is not JSON-RPC."""

    def on_request_failed(self, request_id: RequestId, reason: str) -> None:
        """The request's reply can no longer arrive (its HTTP exchange failed)."""

    def on_closed(self, reason: str) -> None:
        """The transport is gone for good."""


class UpstreamTransport(Protocol):
    """One connection to one upstream server."""

    async def open(self, listener: TransportListener) -> None:
        """Start the transport; raises UpstreamError if the server cannot be reached."""

    async def send(self, message: Message) -> None:
        """Deliver one message; raises UpstreamError if it cannot be delivered."""

    async def close(self) -> None:
        """Release everything; idempotent."""
