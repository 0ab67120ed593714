"""The one error the masking package raises on purpose.

``MaskingError`` blocks the release of a reply: a ``block`` strategy fired, a blob was refused,
or masking could not complete and ``on_failure`` is ``block``. Its ``data`` names the detector and
JSON path only, never the matched value.
"""

from __future__ import annotations

from bastion.errors import BastionError
from bastion.jsonrpc import codes


class MaskingError(BastionError):
    """Raised when a reply must not be released because it cannot be (or must not be) masked."""

    code = codes.MASKING_FAILED
    public_message = "The reply could not be masked, so it was not released"
