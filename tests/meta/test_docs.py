"""The documentation says what the code does: the configuration reference is current."""

from pathlib import Path

from bastion.config_reference import render_reference

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_current_when_settings_change() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == render_reference(), "docs/configuration.md is stale: run `make docs`"
