"""Check-digit functions against published examples and single-digit mutations."""

from __future__ import annotations

import pytest

from bastion.masking import checksum


CHECKS = [
    (checksum.luhn_ok, "79927398713", "79927398710"),
    (checksum.iban_ok, "GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 33"),
    (checksum.mod97_ok, "GB82WEST12345698765432", "GB83WEST12345698765432"),
    (checksum.verhoeff_ok, "2363", "2364"),
    (checksum.aadhaar_ok, "234567890124", "134567890124"),
    (checksum.cpf_ok, "529.982.247-25", "111.111.111-11"),
    (checksum.cn_resident_id_ok, "11010519491231002X", "110105194912310021"),
    (checksum.nino_ok, "AB123456C", "GB123456C"),
    (checksum.ssn_ok, "536-22-1234", "666-22-1234"),
]
"""Each check with a published valid example and a single-digit mutation of it."""


@pytest.mark.parametrize(("fn", "good", "bad"), CHECKS)
def test_check_accepts_valid_and_rejects_mutation(fn, good: str, bad: str) -> None:  # type: ignore[no-untyped-def]
    assert fn(good) is True
    assert fn(bad) is False


def test_iban_rejected_when_length_wrong_for_country() -> None:
    assert checksum.iban_ok("DE89370400440532013000") is True
    assert checksum.iban_ok("DE8937040044053201300") is False


def test_entropy_is_zero_for_repeated_character_and_high_for_random() -> None:
    assert checksum.shannon_entropy("aaaaaaaa") == 0.0
    assert checksum.shannon_entropy("") == 0.0
    assert checksum.looks_random("q8Xr2LmZ7pWk4TnB9vYc") is True
    assert checksum.looks_random("abcdefghabcdefgh") is False


FOREIGN_DIGITS = [str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"), str.maketrans("0123456789", "०१२३४५६७८९")]
"""Arabic-Indic and Devanagari: the detectors' ``\\d`` matches them, so the checks must read them."""


@pytest.mark.parametrize("digits", FOREIGN_DIGITS, ids=["arabic-indic", "devanagari"])
@pytest.mark.parametrize(("fn", "good", "bad"), CHECKS)
def test_check_reads_digits_of_other_scripts_like_ascii_ones(fn, good: str, bad: str, digits: dict[int, int]) -> None:  # type: ignore[no-untyped-def]
    # Found by the scanner backends' property test: "٣" passed str.isdigit, then broke the arithmetic (IndexError).
    assert fn(good.translate(digits)) is True
    assert fn(bad.translate(digits)) is False


@pytest.mark.parametrize(
    ("fn", "text"),
    [
        (checksum.luhn_ok, "7992739871³"),  # a superscript is a digit to str.isdigit, but no decimal one
        (checksum.ssn_ok, "536-22-123⁴"),
        (checksum.iban_ok, "GB82 WÉST 1234 5698 7654 32"),  # int("É", 36) raised
        (checksum.mod97_ok, "GB82WÉST12345698765432"),
    ],
)
def test_check_rejects_without_raising_when_a_character_has_no_place_in_it(fn, text: str) -> None:  # type: ignore[no-untyped-def]
    assert fn(text) is False
