"""The Hyperscan candidate stage finds exactly what the pure-Python scanner finds."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.masking import candidates, scanner
from bastion.masking.builtin_pii import PII_DETECTORS
from bastion.masking.builtin_secrets import SECRET_DETECTORS
from bastion.masking.engine import custom_detector
from bastion.masking.model import Detector
from bastion.masking.scanner import Scanner
from bastion.masking.settings import CustomDetectorSettings

pytestmark = pytest.mark.skipif(not candidates.AVAILABLE, reason="hyperscan not importable")

CORPUS = Path(__file__).parents[3] / "bench" / "masking" / "corpus" / "corpus.jsonl"
DETECTORS: tuple[Detector, ...] = (
    *PII_DETECTORS,
    *SECRET_DETECTORS,
    custom_detector("employee_id", CustomDetectorSettings(pattern=r"\bE\d{6}\b", context=["employee"])),
    custom_detector("ticket", CustomDetectorSettings(pattern=r"tkt-[a-z]{4}\d+", ignore_case=True)),
    custom_detector("repeat", CustomDetectorSettings(pattern=r"(?<!\d)(\d)\1{5}(?!\d)")),  # backreference
)
FAST = Scanner(DETECTORS, accelerate=True)
SLOW = Scanner(DETECTORS, accelerate=False)


@pytest.fixture(autouse=True)
def _accelerate_short_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scanner, "_ACCEL_MIN_LEN", 0)  # exercise the native path on every text


def _strings(value: Any, hint: str = "") -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(value, hint)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, k.lower())]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v, hint)]
    return []


def _same(text: str, hint: str = "") -> None:
    for relaxed in (False, True):
        assert FAST.scan(text, hint, relaxed) == SLOW.scan(text, hint, relaxed), (text, hint, relaxed)


def test_backend_choice_is_explicit() -> None:
    assert scanner.BACKEND in ("hyperscan", "python")
    assert FAST._cands is not None and SLOW._cands is None


def test_unsupported_patterns_fall_back_to_always_running() -> None:
    with pytest.raises(candidates.Unsupported):
        candidates.translate(r"(\d)\1")
    repeat = next(i for i, (d, _) in enumerate(FAST._gated) if d.name == "repeat")
    assert repeat in FAST._ungated
    assert [h.detector.name for h in FAST.scan("pin 444444 ok " * 30)][:1] == ["repeat"]


def test_translation_widens_for_non_ascii() -> None:
    # Python's \d and \w are Unicode-aware; (?i) lets 'k' match the Kelvin sign: both must stay candidates.
    _same("id ٤١١١١١١١١١١١١١١١ and ١٢٣-٤٥-٦٧٨٩ end")
    _same("\u017fecret_token = 'abcdefghij0123456789ZZ'   \u212aey")
    _same("\u0130 password=hunter2 ǅ AKIA" + "A" * 16)
    # U+0130 lowers to two characters, so keyword detectors search the whole text with (?i): U+017F ~ 's'.
    for text, hint in (("\u0130 PA\u017f\u017fWORD=hunter22", "pwd"), ("\u0130 to\u212aen=abcdefghij0123456789ZZ", "token")):
        assert SLOW.scan(text, hint)
        _same(text, hint)


def test_clean_api_json_matches_pure_python() -> None:
    rnd = random.Random(3)
    for n in range(20):
        stamp = f"2024-05-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00Z"
        record = {"id": n, "created_at": stamp, "price": f"{rnd.uniform(1, 999):.2f}", "sku": f"SKU-{rnd.randint(0, 999999):06d}",
                  "version": f"1.{rnd.randint(0, 9)}.{rnd.randint(0, 20)}", "uuid": f"{rnd.getrandbits(128):032x}"}
        text = json.dumps(record)
        _same(text)
        _same("\x00".join(map(str, record.values())))  # as the masker's whole-document prefilter joins them


def test_whole_corpus_matches_pure_python() -> None:
    docs = [json.loads(line)["payload"] for line in CORPUS.read_text().splitlines()]
    texts = [s for doc in docs for s in _strings(doc)]
    assert len(texts) > 1000
    for text, hint in texts:
        _same(text, hint)
    for i in range(0, len(texts), 25):  # the masker's whole-document prefilter joins strings with NUL
        _same("\x00".join(t for t, _ in texts[i : i + 25]))


TOKENS = [
    "jane.doe@example.com", "+44 20 7946 0958", "(415) 555-2671", "4111 1111 1111 1111", "4111111111111111",
    "GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "123-45-6789", "078 05 1120", "192.168.10.20",
    "2001:db8::8a2e:370:7334", "fe80::1", "AB123456C", "2345 6789 0123", "123.456.789-09", "11010519491231002X",
    "AKIAIOSFODNN7EXAMPLE", "ghp_" + "a1B2" * 9, "glpat-abcdefghij0123456789", "xoxb-1234567890-abcdef",
    "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc-_def", "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
    "postgres://admin:s3cr3tP4ss@db:5432/x", "password=hunter22", "PWD: 'x9!'", "api_key: 'Zx81kQ0pLm2nB7vC4tR9'",
    "Authorization: Bearer abcDEF1234567890xyzUVW", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "E123456", "employee", "TKT-abcd42", "777777", "[EMAIL]", "****1234", "2024-05-03T10:22:00Z", "v1.2.3", "1.2.3.4.5",
    "٣", "\u212a", "\u017f", "İ", "é", "日本", "\x00", "\n", "\"", "'", ":", "=", "@", "://", ".", "-", "+", "(", ")",
    # clean API JSON, and the boundaries the tightened candidate patterns must not cross
    "2024-05-12T10:37:00Z", "10:37:00", "T10:37:", "507.42", "SKU-039317", "1.3.1", "9f86d081884c7d659a2feaa0c55ad015",
    "411111111111", "4111111111111", "4111111111111111111", "41111111111111111111", "4111-1111-1111-1111",
    "::1", "::", "::ffff:192.0.2.1", "2001:db8::", "a::b:c", "1::2:3", "abcd:ef01:2345:6789:abcd:ef01:2345:6789",
    "+55 11 91460-8235", "+31 6 12048035", "0023 6261 24", "+33 6 12 64 97 58", "+49 1512 4770493", "+91 81262 61387",
    "(201) 775-8905", "+1 201-874-9958", "+81 90-1719-6622", "+61 412 218 056", "007-77-8401", "415.555.2671",
    "0059 5373 5771 5978 30", "\u00a0", "\u2014", "PA\u017f\u017fWORD=x", "to\u212aen=abcdefghij0123456789ZZ",
]
NOISE = st.text(alphabet=st.sampled_from([*"aZ09 _-.:,;/@+()[]{}\"'=\n\t", "é", "٣", "\u212a"]), max_size=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.one_of(st.sampled_from(TOKENS), NOISE), max_size=24), hint=st.sampled_from(["", "token", "note"]))
def test_generated_text_matches_pure_python(parts: list[str], hint: str) -> None:
    _same("".join(parts), hint)
    _same(" ".join(parts), hint)
