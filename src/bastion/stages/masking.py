"""MaskingStage: masks what the model would see — results, resource contents, prompt messages,
server-to-client requests and their answers, notifications — with the profiles policy chose.

A masking failure blocks the release (MaskingError, fail closed); the findings (detector, path,
count — never the value) go to the audit record. Arguments are masked toward the upstream only
when configured, since a tool usually needs the real value.
"""

from __future__ import annotations

from typing import Any, ClassVar

from bastion.exchange import Direction, Exchange, Kind, Reply
from bastion.masking import MaskingEngine
from bastion.masking.masker import Masker
from bastion.masking.mcp import (
    mask_arguments,
    mask_message_params,
    mask_message_result,
    mask_prompt_result,
    mask_resource_contents,
    mask_tool_result,
)
from bastion.masking.model import MaskOutcome
from bastion.pipeline.stage import Next
from bastion.stages.audit import raw_sha256

_RESULT_MASKERS = {
    "tools/call": mask_tool_result,
    "resources/read": mask_resource_contents,
    "prompts/get": mask_prompt_result,
}


class MaskingStage:
    """Masks replies on their way to the client and server requests on their way to it."""

    name: ClassVar[str] = "masking"

    def __init__(self, engine: MaskingEngine, mask_arguments_upstream: bool, keep_raw_result: bool = False) -> None:
        self._engine = engine
        self._default = tuple(engine.settings.default_profiles)
        self._mask_arguments = mask_arguments_upstream
        self._keep_raw = keep_raw_result  # leave the unmasked result for the audit stage to seal

    def _masker(self, ex: Exchange) -> Masker | None:
        profiles = (*self._default, *ex.notes.mask_profiles)
        if not profiles:
            return None
        ex.notes.mask_profiles = profiles
        return self._engine.masker(profiles)

    @staticmethod
    def _note(ex: Exchange, outcome: MaskOutcome, where: str) -> None:
        for finding in outcome.findings:
            ex.notes.masking.append({"where": where, "detector": finding.detector, "path": finding.path, "count": finding.count})

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply | None:
        masker = self._masker(ex)
        if masker is None:
            return await call_next(ex)
        if ex.direction is Direction.TO_CLIENT:
            return await self._to_client(ex, masker, call_next)
        if self._mask_arguments and ex.method == "tools/call" and ex.arguments:
            outcome = mask_arguments(masker, ex.arguments)
            self._note(ex, outcome, "arguments")
            ex.params = {**(ex.params or {}), "arguments": outcome.value}
        reply = await call_next(ex)
        mask_result = _RESULT_MASKERS.get(ex.method)
        if reply is None or mask_result is None or not isinstance(reply.get("result"), dict):
            return reply
        outcome = mask_result(masker, reply["result"])  # first: it refuses what is too deep to encode
        ex.notes.raw_result_sha256 = raw_sha256(reply["result"])
        if self._keep_raw:
            ex.notes.raw_result = reply["result"]
        self._note(ex, outcome, "result")
        ex.notes.result_masked = True  # the masker's profiles always include the defaults the log uses
        return {**reply, "result": outcome.value} if outcome.changed else reply

    async def _to_client(self, ex: Exchange, masker: Masker, call_next: Next) -> Reply | None:
        if ex.params is not None:
            outcome = mask_message_params(masker, ex.method, ex.params)
            self._note(ex, outcome, "params")
            ex.params = outcome.value
        reply = await call_next(ex)
        if ex.kind is Kind.NOTIFICATION or reply is None or not isinstance(reply.get("result"), dict):
            return reply
        result: dict[str, Any] = reply["result"]
        outcome = mask_message_result(masker, ex.method, result)  # first: it refuses what is too deep to encode
        ex.notes.raw_result_sha256 = raw_sha256(result)
        if self._keep_raw:
            ex.notes.raw_result = result
        self._note(ex, outcome, "result")
        ex.notes.result_masked = True
        return {**reply, "result": outcome.value} if outcome.changed else reply
