"""Cheap JSON-RPC 2.0 envelope handling: parse once with orjson, classify, build replies.

Messages stay plain dicts so fields from newer MCP revisions pass through untouched; only
the envelope (jsonrpc, id, method, result/error) is checked here (JSON-RPC 2.0 §4, §5).
"""

from __future__ import annotations

import enum
from typing import Any

import orjson

from bastion.errors import ProtocolError
from bastion.jsonrpc import codes

RequestId = str | int
Message = dict[str, Any]


class MessageKind(enum.Enum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESULT = "result"
    ERROR = "error"


def parse_body(body: bytes) -> list[Message] | Message:
    """Parse an HTTP body into one message or a batch (a non-empty list).

    Raises:
        ProtocolError: PARSE_ERROR for invalid JSON, INVALID_REQUEST for a wrong shape.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("Parse error: body is not valid JSON", code=codes.PARSE_ERROR) from exc
    if isinstance(value, list):
        if not value:
            raise ProtocolError("Invalid Request: empty batch")
        for item in value:
            classify(item)
        return value
    classify(value)
    return value  # type: ignore[no-any-return]


def parse_message(line: bytes | str) -> Message:
    """Parse exactly one message (stdio line, SSE data field).

    Raises:
        ProtocolError: the text is not one valid JSON-RPC message.
    """
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("Parse error: not valid JSON", code=codes.PARSE_ERROR) from exc
    classify(value)
    return value  # type: ignore[no-any-return]


def invalid_response_id(text: bytes | str) -> RequestId | None:
    """The id of a line that ``parse_message`` refused but that is a JSON response naming its
    request (say, an error without its message): that request can fail alone, for the framing
    around it is intact. None for anything else."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or "method" in value or not _valid_id(value.get("id")):
        return None
    return value["id"]  # type: ignore[no-any-return]


def classify(message: Any) -> MessageKind:
    """Say what kind of JSON-RPC message this is.

    Raises:
        ProtocolError: INVALID_REQUEST when it is none of the four kinds.
    """
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise ProtocolError('Invalid Request: expected a JSON object with "jsonrpc": "2.0"')
    method = message.get("method")
    if method is not None:
        if not isinstance(method, str):
            raise ProtocolError("Invalid Request: method must be a string")
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            raise ProtocolError("Invalid Request: params must be an object", code=codes.INVALID_PARAMS)
        if "id" not in message:
            return MessageKind.NOTIFICATION
        if not _valid_id(message["id"]):
            raise ProtocolError("Invalid Request: id must be a string or an integer")
        return MessageKind.REQUEST
    if "id" not in message or not (_valid_id(message["id"]) or message["id"] is None):
        raise ProtocolError("Invalid Request: a response needs an id")
    if "result" in message:
        return MessageKind.RESULT
    error = message.get("error")
    if isinstance(error, dict) and type(error.get("code")) is int and isinstance(error.get("message"), str):
        return MessageKind.ERROR  # JSON-RPC 2.0 §5.1: an integer code and a string message, both required
    raise ProtocolError("Invalid Request: neither a request, a notification nor a response")


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def error_body(code: int, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``error`` member of a JSON-RPC error response."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data:
        error["data"] = data
    return error


def render_error(request_id: RequestId | None, code: int, message: str, data: dict[str, Any] | None = None) -> Message:
    """A complete JSON-RPC error response."""
    return {"jsonrpc": "2.0", "id": request_id, "error": error_body(code, message, data)}


def render_reply(request_id: RequestId | None, reply: Message) -> Message:
    """Attach an id to a reply body (``{"result": ...}`` or ``{"error": ...}``)."""
    out: Message = {"jsonrpc": "2.0", "id": request_id}
    out.update(reply)
    return out


def dumps(message: Any) -> bytes:
    """Serialise a message (orjson: compact UTF-8)."""
    return orjson.dumps(message)
