"""Pure check-digit and plausibility functions used by the built-in detectors.

Every function takes the candidate text exactly as matched (separators included) and answers
``True`` when it is a well-formed value of its kind. No I/O, no regexes over large inputs.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from typing import Final

_SEPARATORS: Final = str.maketrans("", "", " -./")


def compact(text: str) -> str:
    """Remove the separators people put inside numbers (space, dash, dot, slash); digits of other
    scripts become 0-9, since the detectors' ``\\d`` finds them and their value is the same."""
    return fold_digits(text.translate(_SEPARATORS))


def fold_digits(text: str) -> str:
    """Write every Unicode decimal digit (Arabic-Indic, Devanagari, fullwidth...) as 0-9."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in text)


def ascii_digits(text: str) -> bool:
    """Whether ``text`` is non-empty and all 0-9 (``str.isdigit`` alone also takes superscripts
    and, before ``fold_digits``, other scripts' digits, which the arithmetic here cannot use)."""
    return text.isascii() and text.isdigit()


def luhn_ok(digits: str) -> bool:
    """ISO/IEC 7812-1 Luhn check over a string of digits (separators allowed)."""
    digits = compact(digits)
    if not ascii_digits(digits):
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Lengths per ISO 13616 registry (SWIFT IBAN registry, 2024 edition), country → IBAN length.
IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_ok(text: str) -> bool:
    """ISO 13616 / ISO 7064 MOD 97-10: known country, registered length, remainder 1."""
    iban = compact(text).upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not (iban.isascii() and iban.isalnum()) or not "02" <= iban[2:4] <= "98":
        return False  # check digits 00, 01 and 99 are never issued (ISO 13616-1 §6.1)
    return mod97(iban[4:] + iban[:4]) == 1


def mod97(text: str) -> int:
    """ISO 7064 MOD 97-10 remainder of an alphanumeric string (letters count as 10..35)."""
    return int("".join(str(int(ch, 36)) for ch in text)) % 97


_VERHOEFF_D: Final = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P: Final = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def verhoeff_ok(text: str) -> bool:
    """Verhoeff dihedral-group check (used by Aadhaar); the last digit is the check digit."""
    digits = compact(text)
    if not ascii_digits(digits):
        return False
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][ord(ch) - 48]]
    return c == 0


def aadhaar_ok(text: str) -> bool:
    """Indian Aadhaar: 12 digits, first digit 2–9, Verhoeff check digit."""
    digits = compact(text)
    return len(digits) == 12 and digits[0] not in "01" and verhoeff_ok(digits)


def cpf_ok(text: str) -> bool:
    """Brazilian CPF: 11 digits, not all equal, two mod-11 check digits."""
    d = [ord(ch) - 48 for ch in compact(text)]
    if len(d) != 11 or any(x < 0 or x > 9 for x in d) or len(set(d)) == 1:
        return False
    for n in (9, 10):
        s = sum(d[i] * (n + 1 - i) for i in range(n))
        if (s * 10 % 11) % 10 != d[n]:
            return False
    return True


_CN_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_resident_id_ok(text: str) -> bool:
    """Chinese resident identity card (GB 11643-1999): 18 chars, ISO 7064 MOD 11-2 check."""
    text = fold_digits(text)
    if len(text) != 18 or not ascii_digits(text[:17]):
        return False
    s = sum(int(text[i]) * _CN_WEIGHTS[i] for i in range(17))
    return "10X98765432"[s % 11] == text[17].upper()


_NINO_BAD_PREFIXES: Final = frozenset({"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"})


def nino_ok(text: str) -> bool:
    """UK National Insurance number (HMRC NIM39110): letter rules, 6 digits, suffix A–D."""
    nino = fold_digits(text.replace(" ", "").upper())
    if len(nino) != 9 or not ascii_digits(nino[2:8]) or nino[8] not in "ABCD":
        return False
    a, b = nino[0], nino[1]
    return a not in "DFIQUV" and b not in "DFIQUVO" and nino[:2] not in _NINO_BAD_PREFIXES


def ssn_ok(text: str) -> bool:
    """US SSN: area not 000, 666 or 9xx; group not 00; serial not 0000 (SSA rules)."""
    digits = compact(text)
    if len(digits) != 9 or not ascii_digits(digits):
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def shannon_entropy(text: str) -> float:
    """Shannon entropy in bits per character of ``text`` (0.0 for the empty string)."""
    n = len(text)
    if n == 0:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def looks_random(text: str, min_bits: float = 3.0) -> bool:
    """True when ``text`` mixes letters and digits and its entropy reaches ``min_bits`` per char."""
    has_digit = any(ch.isdigit() for ch in text)
    has_alpha = any(ch.isalpha() for ch in text)
    return has_digit and has_alpha and shannon_entropy(text) >= min_bits


def mod97_ok(text: str) -> bool:
    """ISO 7064 MOD 97-10 with the IBAN convention: first four characters moved to the end."""
    value = compact(text).upper()
    return len(value) > 4 and value.isascii() and value.isalnum() and mod97(value[4:] + value[:4]) == 1
