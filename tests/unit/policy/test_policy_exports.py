"""The public surface of ``bastion.policy`` is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import bastion.policy


def test_all_is_sorted_and_complete() -> None:
    assert bastion.policy.__all__ == sorted(bastion.policy.__all__)
    assert all(hasattr(bastion.policy, name) for name in bastion.policy.__all__)
    assert len(bastion.policy.__all__) == 38
