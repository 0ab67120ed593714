"""Every built-in detector: values it must mask, and look-alikes it must leave alone."""

from __future__ import annotations

import pytest

from bastion.masking.catalog import BUILTIN_DETECTORS
from bastion.masking.scanner import Scanner

SCANNER = Scanner(tuple(BUILTIN_DETECTORS.values()))
GHP = "ghp_" + "aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5"

POSITIVES = [
    ("email", "write to jane.doe+tag@mail.example.co.uk today", "jane.doe+tag@mail.example.co.uk"),
    ("phone", "call +44 20 7946 0958 now", "+44 20 7946 0958"),
    ("phone", "US office (415) 555-2671.", "(415) 555-2671"),
    ("phone", "dial 0049 30 901820 please", "0049 30 901820"),
    ("card", "visa 4111 1111 1111 1111 exp", "4111 1111 1111 1111"),
    ("card", "amex 378282246310005", "378282246310005"),
    ("card", "mc 5555-5555-5555-4444", "5555-5555-5555-4444"),
    ("iban", "pay DE89 3704 0044 0532 0130 00 EUR", "DE89 3704 0044 0532 0130 00"),
    ("iban", "GB82WEST12345698765432", "GB82WEST12345698765432"),
    ("us_ssn", "ssn 536-22-1234.", "536-22-1234"),
    ("ipv4", "from 203.0.113.42:443", "203.0.113.42"),
    ("ipv6", "peer 2001:db8:85a3::8a2e:370:7334 up", "2001:db8:85a3::8a2e:370:7334"),
    ("uk_nino", "NI number AB 12 34 56 C", "AB 12 34 56 C"),
    ("uk_nino", "NI number AB ١٢ ٣٤ ٥٦ C", "AB ١٢ ٣٤ ٥٦ C"),  # Arabic-Indic digits: \d finds them, the check reads them
    ("in_aadhaar", "aadhaar 2345 6789 0124", "2345 6789 0124"),
    ("br_cpf", "CPF 529.982.247-25", "529.982.247-25"),
    ("cn_resident_id", "id 11010519491231002X", "11010519491231002X"),
    ("aws_access_key_id", "AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_secret_access_key", "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("github_token", f"token {GHP} end", GHP),
    ("github_token", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv"),
    ("gitlab_token", "glpat-xY7zA9bC1dE3fG5hI7jK", "glpat-xY7zA9bC1dE3fG5hI7jK"),
    ("slack_token", "xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
    ("stripe_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("google_api_key", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    ("jwt", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig-abc_123 x",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig-abc_123"),
    ("private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
     "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"),
    ("url_password", "postgres://app:s3cr3t!@db.internal:5432/prod", "s3cr3t!"),
    ("password_assignment", "Server=db;User Id=sa;Password=Tr0ub4dor&3x;", "Tr0ub4dor"),
    ("password_assignment", "login failed, password: hunter2", "hunter2"),
    ("secret_assignment", 'api_key = "q8Xr2LmZ7pWk4TnB9vYc"', "q8Xr2LmZ7pWk4TnB9vYc"),
    ("secret_assignment", '"access_token": "ya29.a0AfH6SMBx3k9Q"', "ya29.a0AfH6SMBx3k9Q"),
]

NEGATIVES = [
    ("order number failing Luhn", "order 4111111111111112 shipped"),
    ("uuid", "id 550e8400-e29b-41d4-a716-446655440000"),
    ("git sha", "commit 9fceb02d0ae598e95dc970b74767f19372d61af8"),
    ("version", "release v1.2.3 and 10.4.17"),
    ("timestamp", "at 2024-05-12T10:30:00Z and 2024-05-12 10:30:00"),
    ("unix time", "ts 1715509800123"),
    ("price", "total $1,234.56 or 1234.56 EUR"),
    ("hex colour", "color #ff00aa and #FFF"),
    ("invalid ssn area", "000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000"),
    ("mac address", "mac 00:1a:2b:3c:4d:5e"),
    ("python slice", "x[::2] and a::b"),
    ("iban bad checksum", "DE89 3704 0044 0532 0130 01"),
    ("cpf bad digits", "529.982.247-26"),
    ("aadhaar bad verhoeff", "2345 6789 0125"),
    ("loopback", "127.0.0.1 and ::1 and 0.0.0.0"),
    ("not an email", "@decorator and user@localhost and a@b"),
    ("low entropy assignment", "token: my_token_variable_name and max_tokens=1000"),
    ("placeholder password", "password: null, password=********"),
    ("plain prose", "Please reset your password and rotate the API key tomorrow."),
    ("short phone-like", "room 555-1234"),
    ("oid", "1.3.6.1.4.1.311"),
    ("jwt-like without alg", "eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxIn0.sig"),
]


@pytest.mark.parametrize(("name", "text", "secret"), POSITIVES, ids=[f"{p[0]}-{i}" for i, p in enumerate(POSITIVES)])
def test_detector_finds_value_when_valid(name: str, text: str, secret: str) -> None:
    hits = [(h.detector.name, text[h.start : h.end]) for h in SCANNER.scan(text)]
    assert (name, secret) in hits


@pytest.mark.parametrize(("case", "text"), NEGATIVES, ids=[n[0] for n in NEGATIVES])
def test_detector_ignores_lookalike_when_invalid(case: str, text: str) -> None:
    assert [(h.detector.name, text[h.start : h.end]) for h in SCANNER.scan(text)] == []


def test_every_builtin_detector_has_a_positive_case() -> None:
    assert {p[0] for p in POSITIVES} == set(BUILTIN_DETECTORS)


def test_context_detector_uses_json_key_when_text_has_no_context() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert SCANNER.scan(secret) == []
    assert [h.detector.name for h in SCANNER.scan(secret, hint="aws_secret_access_key")] == ["aws_secret_access_key"]


def test_scanner_finds_later_detector_when_earlier_candidate_fails_validation() -> None:
    # 18 digits: a card candidate (fails Luhn) and a valid Chinese resident ID at the same spot.
    text = "11010519491231002X"
    assert [h.detector.name for h in SCANNER.scan(text)] == ["cn_resident_id"]
