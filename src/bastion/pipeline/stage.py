"""The Stage protocol: one async call that receives an exchange and the rest of the pipeline.

The ASGI middleware idea applied to MCP: a stage may return early, call ``call_next`` at most
once, or raise a BastionError; per-request state lives on the Exchange, never on the stage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar, Protocol

from bastion.exchange import Exchange, Reply

Next = Callable[[Exchange], Awaitable[Reply | None]]


class Stage(Protocol):
    """One step of the pipeline."""

    name: ClassVar[str]

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply | None: ...
