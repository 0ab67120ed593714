"""The JSON-RPC 2.0 envelope: what is each of the four kinds, and what is none of them."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.errors import ProtocolError
from bastion.jsonrpc import codes
from bastion.jsonrpc.envelope import MessageKind, classify, invalid_response_id, parse_body


@pytest.mark.parametrize(("message", "kind"), [
    ({"jsonrpc": "2.0", "id": 1, "method": "ping"}, MessageKind.REQUEST),
    ({"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {}}, MessageKind.REQUEST),
    ({"jsonrpc": "2.0", "method": "notifications/initialized"}, MessageKind.NOTIFICATION),
    ({"jsonrpc": "2.0", "id": 1, "result": {}}, MessageKind.RESULT),
    ({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "Method not found"}}, MessageKind.ERROR),
    ({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error", "data": {}}}, MessageKind.ERROR),
])
def test_each_kind_is_told_apart(message: dict[str, Any], kind: MessageKind) -> None:
    assert classify(message) is kind


@pytest.mark.parametrize("message", [
    {"id": 1, "method": "ping"},  # no "jsonrpc": "2.0"
    {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
    {"jsonrpc": "2.0", "id": True, "method": "ping"},
    {"jsonrpc": "2.0", "method": 7},
    {"jsonrpc": "2.0", "result": {}},  # a response needs an id
    {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000}},  # an error needs its message
    {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": 5}},
    {"jsonrpc": "2.0", "id": 1, "error": {"code": "-32000", "message": "x"}},
    {"jsonrpc": "2.0", "id": 1, "error": {"code": True, "message": "x"}},
    {"jsonrpc": "2.0", "id": 1},
    [1],
])
def test_what_is_none_of_the_kinds_is_an_invalid_request(message: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        classify(message)
    assert info.value.code == codes.INVALID_REQUEST


def test_params_that_are_not_an_object_are_invalid_params() -> None:
    with pytest.raises(ProtocolError) as info:
        classify({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": [1]})
    assert info.value.code == codes.INVALID_PARAMS


@pytest.mark.parametrize(("body", "code"), [(b"{", codes.PARSE_ERROR), (b"[]", codes.INVALID_REQUEST)])
def test_bodies_that_hold_no_message_are_refused_precisely(body: bytes, code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_body(body)
    assert info.value.code == code


@pytest.mark.parametrize(("line", "request_id"), [
    (b'{"jsonrpc": "2.0", "id": 7, "error": {"code": -32000}}', 7),  # a response naming its request
    (b'{"jsonrpc": "2.0", "id": "a", "result": 1, "extra": true}', "a"),
    (b'{"jsonrpc": "2.0", "id": 7, "method": "x", "params": 1}', None),  # a request, not a response
    (b'{"jsonrpc": "2.0", "id": 1.5, "error": {}}', None),
    (b"not json", None),
    (b"[1]", None),
])
def test_a_refused_line_names_its_request_only_when_it_is_a_response(line: bytes, request_id: object) -> None:
    assert invalid_response_id(line) == request_id
