"""Masking: find sensitive values in MCP messages and mask them before the model or the log sees them.

Build a ``MaskingEngine`` once from ``MaskingSettings``; ask it for the ``Masker`` of the profiles a
policy decision names; call the MCP helpers (or ``Masker.mask_json``) on each message. Every call
returns a ``MaskOutcome`` (value + findings) or raises ``MaskingError`` (fail closed).
"""

from bastion.masking.engine import MaskingEngine
from bastion.masking.errors import MaskingError
from bastion.masking.masker import Masker
from bastion.masking.mcp import (
    mask_arguments,
    mask_message_params,
    mask_message_result,
    mask_prompt_result,
    mask_resource_contents,
    mask_tool_result,
)
from bastion.masking.model import Detector, Finding, MaskOutcome, Strategy
from bastion.masking.settings import MaskingSettings

__all__ = [
    "Detector",
    "Finding",
    "MaskOutcome",
    "Masker",
    "MaskingEngine",
    "MaskingError",
    "MaskingSettings",
    "Strategy",
    "mask_arguments",
    "mask_message_params",
    "mask_message_result",
    "mask_prompt_result",
    "mask_resource_contents",
    "mask_tool_result",
]
