"""The tool-pin store as operators see it, and the row shapes its SQLite/PostgreSQL versions share.

Owns ``ToolPinStore`` (the gateway's ``PinStore`` plus listing, pin metadata and an atomic
approve-a-pending-change), ``PinRecord`` and the JSON text a definition is stored as. Hashing,
comparing and diffing definitions stay in ``policy/pins.py``; SQL stays in ``sqlite_pins.py``
and ``postgres_pins.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from bastion.errors import StorageError
from bastion.policy.pins import PendingChange, PinStore, ToolPin

PIN_COLUMNS = "server, name, sha256, definition, pinned_at, approved_by"
PENDING_COLUMNS = "server, name, old_sha256, old_definition, new_sha256, new_definition, diff"


@dataclass(frozen=True, slots=True)
class PinRecord:
    """A stored pin with when it was written and who approved it (None: pinned by the gateway itself)."""

    pin: ToolPin
    pinned_at: float
    approved_by: str | None


class ToolPinStore(PinStore, Protocol):
    """``PinStore`` plus what ``bastion tools`` needs; every method raises ``StorageError`` on failure."""

    async def list_pins(self, server: str | None = None) -> Sequence[PinRecord]:
        """Every pin (of ``server`` if given), ordered by server then tool name."""
        ...

    async def list_pending(self, server: str | None = None) -> Sequence[PendingChange]:
        """Every change waiting for review (of ``server`` if given), ordered by server then tool name."""
        ...

    async def approve_pending(
        self, server: str, name: str, sha256: str, *, approved_by: str, approved_at: float
    ) -> PinRecord | None:
        """Pin the pending definition of ``(server, name)`` and drop the pending change, atomically.

        Only a pending change whose new definition hashes to ``sha256`` is approved, so an operator
        never approves a definition other than the one they reviewed. Returns None if there is none.
        """
        ...


def render_definition(definition: Mapping[str, Any]) -> str:
    """JSON text of a pinned definition, keys in their original order.

    Raises:
        StorageError: the definition holds something JSON cannot carry.
    """
    try:
        return orjson.dumps(dict(definition)).decode("utf-8")
    except orjson.JSONEncodeError as exc:
        raise StorageError(f"tool definition cannot be stored as JSON: {exc}") from exc


def parse_definition(text: str) -> dict[str, Any]:
    """The definition stored by ``render_definition``.

    Raises:
        StorageError: the stored text is not a JSON object.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise StorageError("stored tool definition is not JSON") from exc
    if not isinstance(value, dict):
        raise StorageError("stored tool definition is not a JSON object")
    return value


def pin_row(pin: ToolPin, pinned_at: float, approved_by: str | None) -> tuple[Any, ...]:
    """Parameters for an INSERT of ``PIN_COLUMNS``."""
    return (pin.server, pin.name, pin.sha256, render_definition(pin.definition), pinned_at, approved_by)


def pin_record_from_row(row: Any) -> PinRecord:
    """Build a PinRecord from a row selected with ``PIN_COLUMNS``."""
    return PinRecord(ToolPin(row[0], row[1], row[2], parse_definition(row[3])), row[4], row[5])


def pending_row(change: PendingChange) -> tuple[Any, ...]:
    """Parameters for an INSERT of ``PENDING_COLUMNS``; keyed by ``change.new``'s server and name."""
    old, new = change.old, change.new
    return (
        new.server, new.name, old.sha256, render_definition(old.definition),
        new.sha256, render_definition(new.definition), change.diff,
    )


def pending_from_row(row: Any) -> PendingChange:
    """Build a PendingChange from a row selected with ``PENDING_COLUMNS``."""
    server, name = row[0], row[1]
    old = ToolPin(server, name, row[2], parse_definition(row[3]))
    new = ToolPin(server, name, row[4], parse_definition(row[5]))
    return PendingChange(old, new, row[6])
