"""Write docs/configuration.md from the settings models (`make docs`)."""

from pathlib import Path

from bastion.config_reference import render_reference

target = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
target.write_text(render_reference())
print(f"wrote {target}")
