"""What the benchmark measures: Bastion's production configuration and the stage toggles.

``production_config`` builds the gateway configuration "as production runs it", using only the
sections that the installed ``bastion config schema`` has at run time (the schema is growing).
``STAGE_TOGGLES`` maps a stage name to the configuration fragment that switches that stage off,
deep-merged over the production config (``None`` deletes a key; lists are replaced). Adding a
stage is one line. A toggle whose merged config fails ``bastion config check`` (its keys do not
exist yet) is reported as skipped, with the checker's message, not silently dropped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

UPSTREAM_HTTP = "fast"  # the bench upstream over Streamable HTTP
UPSTREAM_STDIO = "fastio"  # the same server as a stdio child (one per session, as Bastion runs stdio)

JWT_ISSUER_PATH = "/jwks"  # the bench upstream also serves the JWKS of the bench's JWT issuer
JWT_AUDIENCE = "bastion-bench"
JWT_SUBJECT = "bench-agent"

ALLOW_RULE = {"id": "bench-allow", "match": {"tool": "*"}, "action": "allow"}
MASK_RULE = {"id": "bench-mask", "match": {"tool": "*"}, "mask": ["pii", "secrets"]}


@dataclass(frozen=True)
class Toggle:
    """How to switch one stage off: a config fragment, and whether clients still send a token."""

    fragment: dict[str, Any]
    client_token: bool = True
    note: str = ""


# name -> fragment that switches the stage off (merged over production_config). One line each.
STAGE_TOGGLES: dict[str, Toggle] = {
    "identity": Toggle({"identity": {"allow_anonymous": True, "jwt": {"issuers": []}}}, client_token=False),
    "policy": Toggle({"policy": {"default": "allow", "rules": [MASK_RULE]}}, note="no rules to evaluate; masking kept"),
    "masking": Toggle({"policy": {"rules": [ALLOW_RULE]}}, note="masking runs only where a rule asks for it"),
}
"""There is no audit toggle: Bastion cannot run without its audit log (fail closed, by design). What
the audit stage costs is measured on its own by bench/audit_store.py (records/s and append latency)."""


@dataclass
class Context:
    """Everything a configuration needs from the running harness."""

    workdir: str
    listen_port: int
    upstream_url: str  # http://127.0.0.1:P/mcp
    issuer_url: str  # http://127.0.0.1:P (JWKS at issuer_url + /jwks)
    stdio_command: list[str]
    audit_key_file: str
    schema_sections: set[str] = field(default_factory=set)


def production_config(ctx: Context, name: str) -> dict[str, Any]:
    """Bastion as production runs it: JWT identity, default-deny policy, masking, durable audit."""
    cfg: dict[str, Any] = {
        "listen": f"127.0.0.1:{ctx.listen_port}",
        "store": f"sqlite:///{ctx.workdir}/{name}.db",
        "log_level": "warning",
        "upstreams": {
            UPSTREAM_HTTP: {"url": ctx.upstream_url},
            UPSTREAM_STDIO: {"command": ctx.stdio_command},
        },
    }
    s = ctx.schema_sections
    if "identity" in s:
        cfg["identity"] = {
            "resource_url": f"http://127.0.0.1:{ctx.listen_port}",
            "allow_anonymous": False,
            "jwt": {
                "issuers": [
                    {
                        "issuer": ctx.issuer_url,
                        "jwks_url": ctx.issuer_url + JWT_ISSUER_PATH,
                        "audiences": [JWT_AUDIENCE],
                        "algorithms": ["ES256"],
                    }
                ]
            },
        }
    if "audit" in s:
        cfg["audit"] = {"mode": "durable", "origin": f"bench.local/{name}", "signing_key_file": ctx.audit_key_file}
    if "policy" in s:
        rules = [ALLOW_RULE] + ([MASK_RULE] if "masking" in s else [])
        cfg["policy"] = {"default": "deny", "rules": rules}
    if "masking" in s:
        cfg["masking"] = {"default_profiles": ["all"], "on_failure": "block"}
    return cfg


def merge(base: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: dicts merge, ``None`` deletes, anything else (lists too) replaces."""
    out = copy.deepcopy(base)
    for key, value in fragment.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def toggle_applies(toggle: Toggle, sections: set[str]) -> bool:
    """A toggle is tried only when every top-level section it touches is in the schema."""
    return all(k in sections for k in toggle.fragment)
