"""MCP result shapes: tool results, resources (text and blobs), prompts, sampling, elicitation."""

from __future__ import annotations

import base64

import pytest
from tests.unit.masking.conftest import make_masker

from bastion.masking import (
    Masker,
    MaskingError,
    mask_arguments,
    mask_message_params,
    mask_message_result,
    mask_prompt_result,
    mask_resource_contents,
    mask_tool_result,
)

EMAIL = "jane.doe@example.com"


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def test_tool_result_masks_text_json_text_resources_and_structured_content(masker: Masker) -> None:
    result = {
        "content": [
            {"type": "text", "text": f"contact {EMAIL}"},
            {"type": "text", "text": '{"rows": [{"ssn": "536-22-1234", "id": 7}]}'},
            {"type": "resource", "resource": {"uri": "file:///a.txt", "mimeType": "text/plain", "text": EMAIL}},
            {"type": "resource", "resource": {"uri": "file:///b.json", "mimeType": "application/json",
                                              "blob": b64('{"password": "pw"}')}},
            {"type": "image", "data": b64(b"\x89PNG"), "mimeType": "image/png"},
            {"type": "resource_link", "uri": "postgres://u:secretpw@db/x", "name": "db"},
        ],
        "structuredContent": {"user": {"email": EMAIL}},
        "isError": False,
    }
    out = mask_tool_result(masker, result)
    content = out.value["content"]
    assert content[0]["text"] == "contact [EMAIL]"
    assert content[1]["text"] == '{"rows":[{"ssn":"[PII]","id":7}]}'
    assert content[2]["resource"]["text"] == "[EMAIL]"
    assert base64.b64decode(content[3]["resource"]["blob"]).decode() == '{"password":"[PASSWORD]"}'
    assert content[4] == result["content"][4]  # type: ignore[index]
    assert content[5]["uri"] == "postgres://u:[PASSWORD]@db/x"
    assert out.value["structuredContent"] == {"user": {"email": "[EMAIL]"}}
    assert {f.path for f in out.findings} == {
        "$.content[0].text", "$.content[1].text#$.rows[0].ssn", "$.content[2].resource.text",
        "$.content[3].resource.blob#$.password", "$.content[5].uri", "$.structuredContent.user.email"}


def test_tool_result_returned_unchanged_when_clean(masker: Masker) -> None:
    result = {"content": [{"type": "text", "text": "all good"}], "isError": False}
    out = mask_tool_result(masker, result)
    assert out.value is result and out.findings == ()


def test_opaque_blob_blocks_when_blob_policy_block() -> None:
    m = make_masker(blobs="block")
    result = {"contents": [{"uri": "file:///x.bin", "mimeType": "application/octet-stream", "blob": b64(b"\0\1")}]}
    with pytest.raises(MaskingError) as info:
        mask_resource_contents(m, result)
    assert info.value.data == {"reason": "blob", "path": "$.contents[0].blob"}
    image = {"content": [{"type": "image", "data": b64(b"\x89PNG"), "mimeType": "image/png"}]}
    with pytest.raises(MaskingError):
        mask_tool_result(m, image)


def test_resource_text_blob_masked_and_reencoded(masker: Masker) -> None:
    result = {"contents": [{"uri": "file:///x.csv", "mimeType": "text/csv; charset=utf-8", "blob": b64(f"a,{EMAIL}\n")},
                           {"uri": "file:///y", "mimeType": "text/plain", "text": "no secrets"}]}
    out = mask_resource_contents(masker, result)
    assert base64.b64decode(out.value["contents"][0]["blob"]).decode() == "a,[EMAIL]\n"
    assert out.value["contents"][1] == result["contents"][1]


def test_undecodable_text_blob_fails_closed_or_is_withheld() -> None:
    bad = {"contents": [{"uri": "file:///x", "mimeType": "text/plain", "blob": "@@not-base64@@"}]}
    with pytest.raises(MaskingError):
        mask_resource_contents(make_masker(), bad)
    out = mask_resource_contents(make_masker(on_failure="best_effort"), bad)
    assert base64.b64decode(out.value["contents"][0]["blob"]) == b"[UNMASKABLE]"


def test_prompt_messages_masked(masker: Masker) -> None:
    result = {"description": "d", "messages": [{"role": "user", "content": {"type": "text", "text": EMAIL}}]}
    out = mask_prompt_result(masker, result)
    assert out.value["messages"][0]["content"]["text"] == "[EMAIL]"


def test_arguments_masked_structurally(masker: Masker) -> None:
    out = mask_arguments(masker, {"query": f"find {EMAIL}", "api_key": "whatever"})
    assert out.value == {"query": "find [EMAIL]", "api_key": "[SECRET]"}


def test_sampling_request_and_result_masked(masker: Masker) -> None:
    params = {"messages": [{"role": "user", "content": [{"type": "text", "text": EMAIL}]}],
              "systemPrompt": "password: hunter2", "maxTokens": 100}
    out = mask_message_params(masker, "sampling/createMessage", params)
    assert out.value["messages"][0]["content"][0]["text"] == "[EMAIL]"
    assert out.value["systemPrompt"] == "password: [PASSWORD]"
    assert out.value["maxTokens"] == 100
    result = {"role": "assistant", "content": {"type": "text", "text": f"it is {EMAIL}"}, "model": "m"}
    assert mask_message_result(masker, "sampling/createMessage", result).value["content"]["text"] == "it is [EMAIL]"


def test_elicitation_request_and_result_masked(masker: Masker) -> None:
    params = {"message": f"confirm {EMAIL}?", "requestedSchema": {"type": "object", "properties": {}}}
    assert mask_message_params(masker, "elicitation/create", params).value["message"] == "confirm [EMAIL]?"
    result = {"action": "accept", "content": {"email": EMAIL, "ssn": "536-22-1234"}}
    assert mask_message_result(masker, "elicitation/create", result).value["content"] == {
        "email": "[EMAIL]", "ssn": "[PII]"}


def test_unknown_method_and_unknown_fields_masked_generically(masker: Masker) -> None:
    out = mask_message_params(masker, "x/new", {"anything": [EMAIL]})
    assert out.value == {"anything": ["[EMAIL]"]}
    out = mask_tool_result(masker, {"content": [], "_meta": {"owner": EMAIL}})
    assert out.value["_meta"] == {"owner": "[EMAIL]"}
