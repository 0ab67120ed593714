"""MCP-aware masking of the messages that carry data: tool, resource and prompt results, tool
arguments, and server-to-client requests (sampling, elicitation) with their results.

Shapes follow the MCP 2025-06-18 schema (content blocks: text, image, audio, resource_link,
resource). Known fields get special handling (JSON-in-text, base64 blobs); every other field is
masked generically, so fields added by newer revisions are never released unmasked.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Final

from bastion.masking.errors import MaskingError
from bastion.masking.masker import Masker
from bastion.masking.model import Finding, MaskOutcome

_TEXT_MIME_SUFFIXES: Final = ("+json", "+xml", "/json", "/xml", "/yaml", "/x-yaml", "/javascript", "/csv", "/x-ndjson")
Handler = Callable[[Any, str], Any]


def is_textual(mime_type: str | None) -> bool:
    """True for ``text/*`` and the JSON/XML/YAML/CSV application types: blobs we decode and mask."""
    mime = (mime_type or "").split(";", 1)[0].strip().lower()
    return mime.startswith("text/") or mime.endswith(_TEXT_MIME_SUFFIXES)


class _Walk:
    """One MCP message being masked: collects findings from every sub-call."""

    def __init__(self, masker: Masker) -> None:
        self.masker = masker
        self.findings: list[Finding] = []

    def take(self, outcome: MaskOutcome) -> Any:
        self.findings.extend(outcome.findings)
        return outcome.value

    def generic(self, value: Any, path: str) -> Any:
        return self.take(self.masker.mask_json(value, path=path))

    def text(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return self.generic(value, path)
        return self.take(self.masker.mask_text(value, path=path))

    def obj(self, value: Any, path: str, handlers: dict[str, Handler]) -> Any:
        """Mask a dict field by field: a handler for known fields, generic masking for the rest."""
        if not isinstance(value, dict):
            return self.generic(value, path)
        return {k: handlers.get(k, self.generic)(v, f"{path}.{k}") for k, v in value.items()}

    def items(self, value: Any, path: str, each: Handler) -> Any:
        if not isinstance(value, list):
            return each(value, path)
        return [each(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def content(self, block: Any, path: str) -> Any:
        """One content block (MCP ContentBlock)."""
        return self.obj(block, path, {"text": self.text, "data": self.opaque_blob, "resource": self.resource})

    def contents(self, value: Any, path: str) -> Any:
        """A content list, or a single block (sampling messages allow either)."""
        return self.items(value, path, self.content) if isinstance(value, list) else self.content(value, path)

    def resource(self, value: Any, path: str) -> Any:
        """Text or blob resource contents: blobs of a textual mimeType are decoded and masked."""
        mime = value.get("mimeType") if isinstance(value, dict) else None
        blob = self.text_blob if is_textual(mime) else self.opaque_blob
        return self.obj(value, path, {"text": self.text, "blob": blob})

    def text_blob(self, value: Any, path: str) -> Any:
        try:
            text = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, TypeError, ValueError) as exc:
            if self.masker.options.on_failure_block:
                raise MaskingError(data={"reason": "undecodable_blob", "path": path}) from exc
            self.findings.append(Finding("masking_failed", path, 1))
            return base64.b64encode(b"[UNMASKABLE]").decode()
        outcome = self.masker.mask_text(text, path=path)
        if not outcome.changed:
            return value
        return base64.b64encode(self.take(outcome).encode("utf-8")).decode()

    def opaque_blob(self, value: Any, path: str) -> Any:
        if self.masker.options.blobs_block:
            raise MaskingError("binary content is blocked by masking.blobs", data={"reason": "blob", "path": path})
        return value

    def message(self, value: Any, path: str) -> Any:
        """A prompt or sampling message: role plus content."""
        return self.obj(value, path, {"content": self.contents})

    def done(self, original: Any, masked: Any) -> MaskOutcome:
        return MaskOutcome(masked, tuple(self.findings)) if self.findings else MaskOutcome(original)


def mask_tool_result(masker: Masker, result: dict[str, Any]) -> MaskOutcome:
    """``tools/call`` result: content[] (text, embedded resources, blobs) and structuredContent.

    Raises:
        MaskingError: a block strategy fired, a blob is refused, or masking failed (on_failure: block).
    """
    w = _Walk(masker)
    masked = w.obj(result, "$", {"content": lambda v, p: w.items(v, p, w.content)})
    return w.done(result, masked)


def mask_resource_contents(masker: Masker, result: dict[str, Any]) -> MaskOutcome:
    """``resources/read`` result: contents[] of text or base64 blob.

    Raises:
        MaskingError: as for ``mask_tool_result``.
    """
    w = _Walk(masker)
    masked = w.obj(result, "$", {"contents": lambda v, p: w.items(v, p, w.resource)})
    return w.done(result, masked)


def mask_prompt_result(masker: Masker, result: dict[str, Any]) -> MaskOutcome:
    """``prompts/get`` result: messages[].content.

    Raises:
        MaskingError: as for ``mask_tool_result``.
    """
    w = _Walk(masker)
    masked = w.obj(result, "$", {"messages": lambda v, p: w.items(v, p, w.message)})
    return w.done(result, masked)


def mask_arguments(masker: Masker, arguments: dict[str, Any]) -> MaskOutcome:
    """``tools/call`` arguments (for the audit log, or before forwarding): plain JSON masking.

    Raises:
        MaskingError: as for ``mask_tool_result``.
    """
    return masker.mask_json(arguments, path="$")


def mask_message_params(masker: Masker, method: str, params: dict[str, Any]) -> MaskOutcome:
    """Params of a server-to-client request: ``sampling/createMessage`` messages and system prompt,
    ``elicitation/create`` message; any other method is masked generically.

    Raises:
        MaskingError: as for ``mask_tool_result``.
    """
    w = _Walk(masker)
    if method == "sampling/createMessage":
        masked = w.obj(params, "$", {"messages": lambda v, p: w.items(v, p, w.message), "systemPrompt": w.text})
    elif method == "elicitation/create":
        masked = w.obj(params, "$", {"message": w.text})
    else:
        masked = w.generic(params, "$")
    return w.done(params, masked)


def mask_message_result(masker: Masker, method: str, result: dict[str, Any]) -> MaskOutcome:
    """Result of a server-to-client request: the sampled message's content, or the elicited content.

    Raises:
        MaskingError: as for ``mask_tool_result``.
    """
    w = _Walk(masker)
    if method == "sampling/createMessage":
        masked = w.obj(result, "$", {"content": w.contents})
    else:
        masked = w.generic(result, "$")
    return w.done(result, masked)
