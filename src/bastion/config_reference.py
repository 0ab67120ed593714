"""Renders the configuration reference (docs/configuration.md) from the settings' JSON Schema, so
the page cannot drift from what ``bastion config check`` accepts (a test compares them)."""

from __future__ import annotations

import json
from typing import Any

from bastion.config import Settings

_HEADER = """# Configuration reference

Generated from the settings models by `python scripts/gen_config_reference.py` (`make docs`); do
not edit by hand. One YAML file configures a gateway. Unknown keys are errors. Any string may use
`${VAR}` or `${VAR:-default}` to take its value from the environment (secrets stay out of the
file). Validate a file with `bastion config check FILE`.
"""


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _describe_type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return f"[{_ref_name(schema)}](#{_ref_name(schema).lower()})"  # type: ignore[union-attr]
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " \\| ".join(_describe_type(s) for s in schema[key])
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_describe_type(schema.get('items', {}))}"
    if kind == "object":
        values = schema.get("additionalProperties")
        return f"map of {_describe_type(values)}" if isinstance(values, dict) else "object"
    if isinstance(kind, list):
        return " \\| ".join(kind)
    return str(kind or "any")


def _default(prop: dict[str, Any], required: bool) -> str:
    if required:
        return "**required**"
    if "default" in prop:
        return "`" + json.dumps(prop["default"]) + "`"
    return "—"


def _section(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"\n## {name}\n"]
    if schema.get("description"):
        lines.append(" ".join(schema["description"].split()) + "\n")
    properties = schema.get("properties", {})
    if not properties:
        return lines
    required = set(schema.get("required", ()))
    lines.append("| key | type | default | meaning |\n|---|---|---|---|")
    for key, prop in properties.items():
        description = " ".join((prop.get("description") or "").split()).replace("|", "\\|")
        lines.append(f"| `{key}` | {_describe_type(prop)} | {_default(prop, key in required)} | {description} |")
    return lines


def render_reference() -> str:
    """The whole reference page as Markdown: the top level, then every section type."""
    schema = Settings.model_json_schema()
    lines = [_HEADER]
    lines.extend(_section("Settings", schema))
    for name in sorted(schema.get("$defs", {})):
        lines.extend(_section(name, schema["$defs"][name]))
    return "\n".join(lines) + "\n"
