"""Built-in personal-data detectors: e-mail, phone, card, IBAN, SSN, IP addresses, national IDs.

Each pattern only proposes candidates; the validator (checksum, registry rule or parser) decides.
Patterns are written to be cheap at the scanner's anchor positions: boundaries come first.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Final

import phonenumbers

from bastion.masking import checksum
from bastion.masking.model import Detector

_LOCAL: Final = re.compile(r"(?<![\w.+%'-])[A-Za-z0-9][\w.+%'-]{0,63}\Z")
_DOMAIN: Final = re.compile(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])")


def find_emails(text: str) -> Iterator[tuple[int, int]]:
    """Yield e-mail spans by locating each ``@`` and growing the local part and domain around it."""
    at = text.find("@")
    while at != -1:
        local = _LOCAL.search(text, max(0, at - 64), at)
        domain = _DOMAIN.match(text, at) if local else None
        if local and domain and ".." not in text[local.start() : at] and text[at - 1] != ".":
            yield local.start(), domain.end()
            at = text.find("@", domain.end())
        else:
            at = text.find("@", at + 1)


def phone_ok(text: str, regions: tuple[str, ...] = ("US",)) -> bool:
    """Valid per libphonenumber: international form with ``+``/``00``, else one of ``regions``."""
    number = text.strip()
    if number.startswith("00"):
        number = "+" + number[2:]
    for region in (None,) if number.startswith("+") else regions:
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return True
    return False


# IIN ranges (ISO/IEC 7812 issuer prefixes) and the lengths each scheme issues.
_CARD_SCHEMES: Final = (
    (re.compile(r"4"), (13, 16, 19)),
    (re.compile(r"5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)"), (16,)),
    (re.compile(r"3[47]"), (15,)),
    (re.compile(r"6(?:011|5|4[4-9]|2)"), (16, 17, 18, 19)),
    (re.compile(r"35(?:2[89]|[3-8])"), (16, 17, 18, 19)),
    (re.compile(r"3(?:0[0-5]|[68])"), (14, 16)),
)


def card_ok(text: str) -> bool:
    """Payment card: a known issuer prefix, a length that issuer uses, and a valid Luhn digit."""
    digits = checksum.compact(text)
    if not checksum.ascii_digits(digits):
        return False
    return any(rx.match(digits) and len(digits) in lengths for rx, lengths in _CARD_SCHEMES) and checksum.luhn_ok(digits)


def ipv4_ok(text: str) -> bool:
    """A dotted-quad IPv4 address other than 0.0.0.0 and loopback (no leading zeros)."""
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified)


def ipv6_ok(text: str) -> bool:
    """An IPv6 address with at least three non-empty groups, other than ``::`` and ``::1``."""
    if sum(1 for g in text.split(":") if g) < 3:
        return False
    try:
        ip = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified)


_DIGIT: Final = "0-9"
_D: Final = r"(?<![\w+.,/-])"  # a number starts at a boundary, not inside another token
_E: Final = r"(?![\w]|[.,/-]\d)"  # ... and ends at one

PII_DETECTORS: Final = (
    Detector("email", "EMAIL", "pii", finder=find_emails, literals=("@",), min_len=6),
    Detector(
        "iban", "IBAN", "pii", anchor="A-Z", min_len=15, validator=checksum.iban_ok,
        pattern=r"(?<![\w])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?(?![A-Za-z0-9])",
    ),
    Detector(
        "uk_nino", "UK_NINO", "pii", anchor="A-Z", min_len=9, validator=checksum.nino_ok,
        pattern=r"(?<![\w])[A-Z]{2}(?: ?\d{2}){3} ?[A-D](?![\w])",
    ),
    Detector(
        "cn_resident_id", "CN_ID", "pii", anchor=_DIGIT, min_len=18, validator=checksum.cn_resident_id_ok,
        pattern=_D + r"[1-9]\d{5}(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]" + _E,
    ),
    Detector(
        "br_cpf", "CPF", "pii", anchor=_DIGIT, min_len=14, validator=checksum.cpf_ok,
        pattern=_D + r"\d{3}\.\d{3}\.\d{3}-\d{2}" + _E,
    ),
    Detector(
        "us_ssn", "SSN", "pii", anchor=_DIGIT, min_len=11, validator=checksum.ssn_ok,
        pattern=_D + r"(?:\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4})(?![ -]\d)" + _E,
    ),
    Detector(
        "in_aadhaar", "AADHAAR", "pii", anchor=_DIGIT, min_len=14, validator=checksum.aadhaar_ok,
        pattern=_D + r"[2-9]\d{3}(?: \d{4} \d{4}|-\d{4}-\d{4})(?![ -]\d)" + _E,
    ),
    Detector(
        "card", "CARD", "pii", anchor=_DIGIT, min_len=13, validator=card_ok,
        pattern=_D + r"\d{4}(?:[ -]?\d){9,15}" + _E,
    ),
    Detector(
        "ipv4", "IP", "pii", anchor=_DIGIT, min_len=7, validator=ipv4_ok,
        pattern=r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\w)",
    ),
    Detector(
        "ipv6", "IP", "pii", literals=(":",), min_len=6, validator=ipv6_ok,
        pattern=r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{2,39}+(?!\w|\.\d)",
    ),
    Detector(
        "phone", "PHONE", "pii", anchor=r"0-9+(", min_len=10, validator=phone_ok,
        pattern=r"(?<![\w+.,/-])(?:(?:\+|00)[1-9]\d{0,2}(?:[ .-]?\(?\d{1,5}\)?){2,6}"
        r"|\(?[2-9]\d{2}\)?[ .-]?[2-9]\d{2}[ .-]\d{4})(?![\w]|[.,/-]\d)",
    ),
)
"""Order matters: the first alternative matching at a position is tried first."""
