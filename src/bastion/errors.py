"""Bastion's exception tree and what each error may show on the wire.

    BastionError
    ├── ConfigError              configuration file or settings are invalid
    ├── ProtocolError            a peer sent something that is not valid JSON-RPC / MCP
    ├── DenialError              the gateway refused a call (policy, approval, rate limit)
    ├── UpstreamError            an upstream is unreachable, crashed, hung or misbehaved
    ├── StorageError             the store cannot read or write (the call fails closed)
    ├── AuthenticationError      the caller could not be identified (HTTP 401)
    └── VerificationError        the audit log or a proof does not verify
        ├── RootMismatchError
        ├── BadSignatureError
        └── InconsistentCheckpointError

Every class that can reach a client carries a JSON-RPC ``code`` and a ``public_message``;
only ``data`` built by Bastion (rule id, audit sequence, correlation id) goes with it, never
``str(exc)`` of a library error.
"""

from __future__ import annotations

from typing import Any

from bastion.jsonrpc import codes


class BastionError(Exception):
    """Root of every error Bastion raises on purpose."""

    code: int = codes.INTERNAL_ERROR
    public_message: str = "Internal error"

    def __init__(self, message: str | None = None, *, data: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.public_message)
        self.data = data or {}

    def diagnostics(self) -> str:
        """Readable text for a human at a terminal."""
        return str(self)


class ConfigError(BastionError):
    """Raised when configuration cannot be loaded or does not validate."""


class ProtocolError(BastionError):
    """Raised when a message is not valid JSON-RPC 2.0 or breaks an MCP rule."""

    code = codes.INVALID_REQUEST
    public_message = "Invalid Request"

    def __init__(self, message: str | None = None, *, code: int | None = None, data: dict[str, Any] | None = None) -> None:
        super().__init__(message, data=data)
        if code is not None:
            self.code = code
        # A protocol error's message describes the caller's own input, so it is safe to echo.
        self.public_message = str(self)


class DenialError(BastionError):
    """Raised when the gateway refuses a call: policy, approval or rate limit."""

    code = codes.POLICY_DENIED
    public_message = "Denied by policy"

    def __init__(self, message: str | None = None, *, code: int | None = None, data: dict[str, Any] | None = None) -> None:
        super().__init__(message, data=data)
        if code is not None:
            self.code = code
        self.public_message = str(self)


class UpstreamError(BastionError):
    """Raised when an upstream cannot be reached, crashes, hangs or speaks garbage."""

    code = codes.UPSTREAM_UNAVAILABLE
    public_message = "Upstream unavailable"

    def __init__(self, message: str | None = None, *, code: int | None = None, data: dict[str, Any] | None = None) -> None:
        super().__init__(message, data=data)
        if code is not None:
            self.code = code
        self.public_message = "Upstream timed out" if self.code == codes.UPSTREAM_TIMEOUT else "Upstream unavailable"


class StorageError(BastionError):
    """Raised when the store cannot read or write; calls that need it fail closed."""

    code = codes.AUDIT_UNAVAILABLE
    public_message = "Audit store unavailable; the call was not performed"


class HeadConflictError(StorageError):
    """Raised when an origin's stored tree size is not the one a batch expects; nothing was written."""


class AuthenticationError(BastionError):
    """Raised when a credential is missing, malformed, expired or not trusted."""

    code = codes.INVALID_REQUEST
    public_message = "Unauthorized"


class VerificationError(BastionError):
    """Root of every audit-log or proof verification failure."""


class RootMismatchError(VerificationError):
    """Raised when a recomputed Merkle root differs from the expected one."""

    def __init__(self, expected: bytes, computed: bytes) -> None:
        super().__init__(f"root mismatch: expected {expected.hex()}, computed {computed.hex()}")
        self.expected = expected
        self.computed = computed


class BadSignatureError(VerificationError):
    """Raised when a checkpoint signature does not verify or names an unknown key."""


class InconsistentCheckpointError(VerificationError):
    """Raised when two checkpoints cannot both be views of one append-only log."""
