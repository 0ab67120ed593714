"""``Masker.mask_json`` / ``mask_text``: strategies, field rules, paths, nesting, failure modes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.unit.masking.conftest import make_masker

from bastion.jsonrpc import codes
from bastion.masking import Finding, Masker, MaskingError

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"


def test_nested_strings_masked_and_paths_reported_when_deep(masker: Masker) -> None:
    value = {"users": [{"name": "Jane", "contact": {"emails": ["x", f"mail {EMAIL}"]}}], "n": 3}
    out = masker.mask_json(value)
    assert out.value == {"users": [{"name": "Jane", "contact": {"emails": ["x", "mail [EMAIL]"]}}], "n": 3}
    assert out.findings == (Finding("email", "$.users[0].contact.emails[1]", 1),)


def test_input_not_mutated_and_returned_as_is_when_clean(masker: Masker) -> None:
    value: dict[str, Any] = {"a": [f"{EMAIL}"], "b": {"c": "ok"}}
    before = copy.deepcopy(value)
    masker.mask_json(value)
    assert value == before
    clean = {"a": ["nothing here at all"], "b": 1}
    out = masker.mask_json(clean)
    assert out.value is clean and out.findings == () and not out.changed


def test_field_names_masked_whatever_the_value_when_name_rule_matches(masker: Masker) -> None:
    value = {"Password": "hunter2", "API-Key": 12345, "client_secret": {"nested": True}, "max_tokens": 1000,
             "token_type": "Bearer", "password_hint": None}
    out = masker.mask_json(value).value
    assert out == {"Password": "[PASSWORD]", "API-Key": "[SECRET]", "client_secret": "[SECRET]", "max_tokens": 1000,
                   "token_type": "Bearer", "password_hint": None}


def test_long_integers_scanned_when_they_look_like_cards(masker: Masker) -> None:
    assert masker.mask_json({"pan": 4111111111111111, "qty": 4111111111111112}).value == {
        "pan": "[CARD]", "qty": 4111111111111112}


def test_keys_holding_pii_are_renamed_without_collisions(masker: Masker) -> None:
    out = masker.mask_json({"a@example.com": 1, "b@example.com": 2})
    assert out.value == {"[EMAIL]": 1, "[EMAIL]~2": 2}


def test_partial_keeps_last_four_when_strategy_partial() -> None:
    m = make_masker(profiles={"p": {"extends": ["pii"], "strategies": {"card": "partial"}}}, use=["p"])
    assert m.mask_text(f"card {CARD} ok").value == "card ****1111 ok"


def test_hash_tokens_stable_and_distinct_when_strategy_hash() -> None:
    m = make_masker(profiles={"h": {"extends": ["pii"], "strategies": {"email": "hash"}}}, use=["h"])
    first = m.mask_text(f"{EMAIL} and {EMAIL} and other@example.com").value
    a, b, c = first.split(" and ")
    assert a == b != c and a.startswith("[EMAIL:") and len(a) == len("[EMAIL:") + 6 + 1
    again = make_masker(profiles={"h": {"extends": ["pii"], "strategies": {"email": "hash"}}}, use=["h"])
    assert again.mask_text(EMAIL).value == a


def test_hash_differs_when_key_differs() -> None:
    profiles = {"h": {"extends": ["pii"], "strategies": {"email": "hash"}}}
    one = make_masker(profiles=profiles, use=["h"]).mask_text(EMAIL).value
    other = make_masker(profiles=profiles, use=["h"], hmac_key="z" * 32).mask_text(EMAIL).value
    assert one != other


def test_drop_removes_field_in_structure_and_redacts_in_text() -> None:
    m = make_masker(profiles={"d": {"extends": ["pii"], "strategies": {"email": "drop"}}}, use=["d"])
    assert m.mask_json({"keep": 1, "email": EMAIL, "list": [EMAIL, "x"]}).value == {"keep": 1, "list": ["x"]}
    assert m.mask_text(f"hi {EMAIL}").value == "hi [EMAIL]"


def test_block_raises_masking_error_with_path_and_no_value_when_strategy_block() -> None:
    m = make_masker(profiles={"b": {"extends": ["secrets"], "strategies": {"private_key": "block"}}}, use=["b"])
    pem = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----"
    with pytest.raises(MaskingError) as info:
        m.mask_json({"files": [{"body": pem}]})
    assert info.value.code == codes.MASKING_FAILED
    assert info.value.data == {"detector": "private_key", "path": "$.files[0].body"}
    assert "abc" not in str(info.value)


def test_json_path_rules_mask_selected_fields_when_configured() -> None:
    m = make_masker(
        fields={"names": {"paths": ["$.users[*].name", "$..nickname"], "label": "NAME"}},
        profiles={"n": {"field_rules": ["names"]}}, use=["n"],
    )
    value = {"users": [{"name": "Jane", "nickname": "JJ"}], "name": "root", "deep": {"a": [{"nickname": "K"}]}}
    assert m.mask_json(value).value == {
        "users": [{"name": "[NAME]", "nickname": "[NAME]"}], "name": "root", "deep": {"a": [{"nickname": "[NAME]"}]}}


def test_custom_detector_needs_context_and_validator_when_configured() -> None:
    m = make_masker(
        detectors={"employee": {"pattern": r"\bE\d{6}\b", "context": ["employee"], "label": "EMPLOYEE_ID"},
                   "acct": {"pattern": r"\b\d{12,19}\b", "validator": "luhn"}},
        profiles={"c": {"detectors": ["employee", "acct"]}}, use=["c"],
    )
    assert m.mask_text("employee E123456 and E654321").value == "employee [EMPLOYEE_ID] and [EMPLOYEE_ID]"
    assert m.mask_text("ticket E123456").value == "ticket E123456"
    assert m.mask_json({"employee_id": "E123456"}).value == {"employee_id": "[EMPLOYEE_ID]"}
    assert m.mask_text("79927398713 79927398710").value == "79927398713 79927398710"
    assert m.mask_text("acct 4111111111111111").value == "acct [ACCT]"


def test_json_text_masked_structurally_and_reserialised(masker: Masker) -> None:
    out = masker.mask_text('{"password": "x", "note": "mail jane.doe@example.com"}', path="$.t")
    assert out.value == '{"password":"[PASSWORD]","note":"mail [EMAIL]"}'
    assert {f.path for f in out.findings} == {"$.t#$.password", "$.t#$.note"}
    assert masker.mask_text('{"ok": true}').value == '{"ok": true}'


def test_too_deep_value_blocks_or_is_withheld_per_on_failure() -> None:
    deep: Any = "x"
    for _ in range(10):
        deep = [deep]
    with pytest.raises(MaskingError):
        make_masker(max_depth=5).mask_json(deep)
    out = make_masker(max_depth=5, on_failure="best_effort").mask_json({"a": deep})
    assert "[UNMASKABLE]" in str(out.value) and out.findings[0].detector == "masking_failed"


def test_unexpected_failure_blocks_when_on_failure_block(monkeypatch: pytest.MonkeyPatch) -> None:
    m = make_masker()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(m, "_collect", boom)
    with pytest.raises(MaskingError) as info:
        m.mask_json({"a": "b"})
    assert info.value.data["reason"] == "RuntimeError"


def test_unexpected_failure_withholds_value_when_best_effort(monkeypatch: pytest.MonkeyPatch) -> None:
    m = make_masker(on_failure="best_effort")

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(m, "_collect", boom)
    assert m.mask_json({"a": EMAIL}).value == "[UNMASKABLE]"


def test_many_strings_prefilter_agrees_with_direct_scan(masker: Masker) -> None:
    rows = [{"id": i, "note": "nothing", "ts": "2024-05-12T10:30:00Z"} for i in range(50)]
    rows[17]["note"] = f"reach {EMAIL} or +44 20 7946 0958"
    out = masker.mask_json(rows)
    assert out.value[17]["note"] == "reach [EMAIL] or [PHONE]"
    assert sorted(f.detector for f in out.findings) == ["email", "phone"]
