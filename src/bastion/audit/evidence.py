"""What the offline evidence files share: the error for a malformed one and a typed field read.

Both the inclusion-proof document (audit/proving.py) and the export (audit/export_verify.py)
are JSON from outside that a holder hands in; each parser turns every malformed input into
``EvidenceFormatError``. Their formats are their own modules'.
"""

from __future__ import annotations

from typing import Any

from bastion.errors import BastionError


class EvidenceFormatError(BastionError):
    """Raised when an export or proof file is not in its documented format (bad input, exit 2)."""


def field_of(doc: dict[str, Any], key: str, kind: type) -> Any:
    """Return ``doc[key]`` when it is a ``kind`` (bools are not ints).

    Raises:
        EvidenceFormatError: the field is missing or of another type.
    """
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise EvidenceFormatError(f"{doc.get('type') or 'document'}: {key} must be a {kind.__name__}")
    return value
