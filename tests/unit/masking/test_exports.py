"""The public surface of ``bastion.masking`` is pinned: changing it is a deliberate act."""

from __future__ import annotations

import bastion.masking


def test_public_names_pinned_and_sorted() -> None:
    assert bastion.masking.__all__ == sorted(bastion.masking.__all__)
    assert bastion.masking.__all__ == [
        "Detector", "Finding", "MaskOutcome", "Masker", "MaskingEngine", "MaskingError", "MaskingSettings",
        "Strategy", "mask_arguments", "mask_message_params", "mask_message_result", "mask_prompt_result",
        "mask_resource_contents", "mask_tool_result",
    ]
    assert all(hasattr(bastion.masking, name) for name in bastion.masking.__all__)
